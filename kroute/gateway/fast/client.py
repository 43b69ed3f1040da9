"""FastGateway's client connections: one asyncio Protocol each, llhttp parsing requests.

A `Client` parses requests in strict mode with the limits of `ServerLimits`, answers them one
at a time and in order (an `exchange.Exchange` each), keeps its timeouts on one timer, pipes
bytes after an upgrade, and gives an exchange what it asks of the client side
(`ports.ClientSide`): flow control, this hop's forwarding header fields, the request as a
route's steps see it. It reads the gateway's settings through `ports.Gateway`.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress

import httptools

from kroute.gateway.fast.exchange import Exchange
from kroute.gateway.fast.ports import BUFFER_LIMIT, EndpointSide, Gateway, Headers, Message
from kroute.gateway.fast.traced import exchange_for
from kroute.gateway.handler import origin_form
from kroute.gateway.tracing import TRACE_FIELDS
from kroute.pipeline.steps import Chain, UpstreamRequest, plan_request
from kroute.rules.request import normalize_path
from kroute.transport.http1 import error_page, host_problem
from kroute.transport.proxy import (
    FORWARDING,
    HOP_BY_HOP,
    HOP_FIELDS,
    HeaderSplit,
    Hop,
    forwarding_headers,
    render_headers,
    strip_hop_by_hop,
)

#: Request headers not passed on as they came (hop-by-hop, framing, forwarding: set anew), and
#: those the gateway reads (RFC 9110 section 7.6.1; RFC 9112 section 6).
#: The Trace Context fields are read so that tracing knows which requests carry them
#: (`Message.trace_fields`) without going through every request's fields.
REQUEST_HEADERS = HeaderSplit(
    drop=HOP_BY_HOP | FORWARDING | {b"content-length"},
    read=FORWARDING | TRACE_FIELDS | {b"host", b"content-length", b"transfer-encoding",
                                      b"upgrade", b"connection"},
)  # fmt: skip


#: How many (chain, path) results `Client.planned` keeps (then it starts again, empty).
PLANS_KEPT = 4096
#: The routed path of a target, for the steps that rewrite it (`kroute.pipeline.paths`):
#: remembered, as the same few targets come again and again.
_routed = functools.lru_cache(maxsize=4096)(normalize_path)


class Client(asyncio.Protocol):
    """One client connection: requests parsed, one exchange at a time, in order."""

    __slots__ = (
        "closing", "deadline", "exchange", "facts", "forwarding_for", "gateway", "ip", "limits",
        "loop", "messages", "parser", "parsing", "paused", "peer", "port", "timer", "transport",
        "trusted", "upgrading", "upstream",
    )  # fmt: skip

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.limits = gateway.limits
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport
        self.parser = httptools.HttpRequestParser(self)
        #: Requests parsed and not yet answered, in order (a list: almost always 0 or 1 long,
        #: and a deque costs about 600 bytes per connection before it holds anything).
        self.messages: list[Message] = []
        self.parsing: Message | None = None
        self.exchange: Exchange | None = None
        self.peer = ""
        self.ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
        #: What every request's event says of the connection (`record.exchange_facts`), read
        #: when first asked (`connection_facts`): nothing is read for it when nobody logs.
        self.facts: tuple[str, int, str, str, str] | None = None
        self.port = 0
        self.deadline = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.closing = False
        self.paused = False  # reading paused (flow control)
        self.upstream: EndpointSide | None = None  # after an upgrade
        self.upgrading: Message | None = None  # an upgrade request, until its answer
        self.trusted = False  # the peer is a trusted proxy: its X-Forwarded-* are believed
        #: (Host, fields, lines): this hop's forwarding header fields, for the last Host seen.
        self.forwarding_for: tuple[str, Headers, bytes] = ("", [], b"")

    # -- connection ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        sock = transport.get_extra_info("sockname")
        if peer:
            self.peer = str(peer[0])
            try:
                self.ip = ipaddress.ip_address(self.peer)
            except ValueError:
                self.ip = None
            self.trusted = self.gateway.trusted.trusts(self.peer)
        self.port = int(sock[1]) if sock else 0
        self.gateway.clients.add(self)
        self.wait(self.limits.idle_timeout)

    def connection_facts(self) -> tuple[str, int, str, str, str]:
        """The client's address as text and port, the entry point, TLS's version and cipher:
        read once per connection, by its first request some observer wants an event of."""
        peer = self.transport.get_extra_info("peername")
        ssl = self.transport.get_extra_info("ssl_object")
        self.facts = (
            "" if self.ip is None else str(self.ip), int(peer[1]) if peer else 0,
            self.gateway.entry_point, "" if ssl is None else ssl.version() or "",
            "" if ssl is None else (ssl.cipher() or ("",))[0],
        )  # fmt: skip
        return self.facts

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.gateway.clients.discard(self)
        if self.timer is not None:
            self.timer.cancel()
        if self.exchange is not None:
            self.exchange.abandon()
            self.exchange = None
        if self.upstream is not None:
            self.gateway.outbox.close(self.upstream.transport)

    def data_received(self, data: bytes) -> None:
        if self.upstream is not None:  # piping after an upgrade
            self.gateway.outbox.write(self.upstream.transport, data)
            return
        if self.upgrading is not None:  # waiting for the 101: held for the pipe
            self.upgrading.chunks.append(data)
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            message = self.messages[-1] if self.messages else None
            if message is None or message.method == b"CONNECT":
                self.reject(405, "CONNECT is not supported")
                return
            self.upgrading = message
            message.chunks.append(data[upgrade.args[0] :])
        except httptools.HttpParserError as exc:
            limit = exc.__context__  # a limit hit in a callback (httptools wraps it)
            if isinstance(limit, _Reject):
                self.reject(limit.status, str(limit))
            else:
                self.reject(400, f"malformed request: {exc}")
            return
        self.next()

    def idle(self) -> bool:
        """Nothing in flight: no request being read or answered, no upgraded pipe."""
        return self.exchange is None and self.parsing is None and self.upstream is None

    def pause_writing(self) -> None:
        feeding = self.feeding()
        if feeding is not None:
            feeding.pause_reading()

    def resume_writing(self) -> None:
        feeding = self.feeding()
        if feeding is not None:
            feeding.resume_reading()

    def feeding(self) -> asyncio.Transport | None:
        """The endpoint connection whose bytes this client is sent (flow control stops it
        when the client reads too slowly), if any."""
        exchange = self.exchange
        if exchange is not None and exchange.conn is not None:
            return exchange.conn.transport
        return self.upstream.transport if self.upstream is not None else None

    def pause(self) -> None:
        self.paused = True
        self.transport.pause_reading()

    def resume(self) -> None:
        if self.paused and not self.closing:
            self.paused = False
            self.transport.resume_reading()

    # -- timeouts: one timer, moved by a deadline ------------------------------------------

    def wait(self, seconds: float) -> None:
        self.deadline = self.loop.time() + seconds
        if self.timer is None:
            self.timer = self.loop.call_at(self.deadline, self.timed_out)

    def timed_out(self) -> None:
        self.timer = None
        if self.closing or self.deadline == 0.0:
            return
        if self.loop.time() < self.deadline:
            self.timer = self.loop.call_at(self.deadline, self.timed_out)
            return
        if self.parsing is not None and self.exchange is None:
            self.reject(408, "request head not received in time")
        elif self.exchange is None:
            self.gateway.outbox.close(self.transport)  # idle keep-alive connection

    # -- llhttp callbacks --------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.parsing = Message()
        if self.exchange is None:
            self.wait(self.limits.header_timeout)

    def on_url(self, url: bytes) -> None:
        message = self.parsing
        assert message is not None
        message.url += url
        if len(message.url) > self.limits.max_request_line:
            self.over_limit(message)

    def on_header(self, name: bytes, value: bytes) -> None:
        message = self.parsing
        assert message is not None
        message.names.append(name)
        message.values.append(value)
        message.header_bytes += len(name) + len(value) + 4
        limits = self.limits
        if (
            message.header_bytes > limits.max_header_bytes
            or len(message.names) > limits.max_headers
        ):
            self.over_limit(message)

    def over_limit(self, message: Message) -> None:
        """A limit's quick test failed (checked inline: this runs per header): refuse as
        `ServerLimits.head_problem` says."""
        problem = self.limits.head_problem(len(message.url), message.header_bytes,
                                           len(message.names))  # fmt: skip
        assert problem is not None
        raise _Reject(*problem)

    def on_headers_complete(self) -> None:
        message = self.parsing
        assert message is not None
        parser = self.parser
        message.method = parser.get_method()
        message.method_text = message.method.decode("latin-1")
        message.url_text = message.url.decode("latin-1")
        message.keep_alive = bool(parser.should_keep_alive())
        message.lines, values = self.gateway.request_headers.lines(message.names, message.values)
        hosts = values.get(b"host")
        if hosts is None or len(hosts) > 1:
            problem = host_problem(hosts, parser.get_http_version())
            if problem is not None:
                raise _Reject(400, problem)
        if hosts:
            message.host = hosts[0].decode("latin-1")
        if message.url[:1] != b"/":
            self.origin_form(message)
        if hosts is None or len(values) > 1:  # more than Host: framing, upgrade, forwarding...
            if b"content-length" in values:
                message.content_length = int(values[b"content-length"][0])
            message.chunked = b"transfer-encoding" in values
            if b"upgrade" in values and parser.should_upgrade():
                message.upgrade = values[b"upgrade"][0]
            if not FORWARDING.isdisjoint(values):
                message.forwarded = [(name, v) for name in FORWARDING for v in values.get(name, ())]
            message.has_body = message.chunked or bool(message.content_length)
            message.trace_fields = b"traceparent" in values or b"tracestate" in values
        self.messages.append(message)
        if self.exchange is None:
            self.deadline = 0.0  # the head is in: no head timeout while it is served

    def origin_form(self, message: Message) -> None:
        """An absolute-form target: routed and passed on as `handler.origin_form` says."""
        fields = list(zip(message.names, message.values, strict=True))
        absolute = origin_form(message.url_text, fields)
        if absolute is None:
            return
        message.host, message.url_text, fields = absolute
        message.url = message.url_text.encode("latin-1")
        message.names = [name for name, _ in fields]
        message.values = [value for _, value in fields]
        message.lines, _ = self.gateway.request_headers.lines(message.names, message.values)

    def on_body(self, body: bytes) -> None:
        message = self.parsing
        assert message is not None
        if message.exchange is not None:
            message.exchange.request_body(body)
        else:
            message.chunks.append(body)
            if sum(map(len, message.chunks)) > BUFFER_LIMIT:
                self.pause()

    def on_message_complete(self) -> None:
        message = self.parsing
        assert message is not None
        message.complete = True
        self.parsing = None
        if message.exchange is not None:
            message.exchange.request_done()

    # -- exchanges, in order -----------------------------------------------------------------

    def next(self) -> None:
        if self.exchange is not None or not self.messages or self.closing:
            return
        message = self.messages[0]
        tracing = self.gateway.router.tracing  # (the one test tracing costs when off)
        if tracing is None:
            exchange = Exchange(self, message)
        else:
            exchange = exchange_for(self, message, tracing)
        message.exchange = exchange
        self.exchange = exchange
        exchange.start()

    def exchange_done(self, exchange: object, keep: bool) -> None:
        if self.exchange is not exchange:
            return
        self.exchange = None
        message = self.messages.pop(0)
        message.exchange = None  # no cycle left for the garbage collector to find
        if not keep or not message.complete or message.upgrade is not None:
            self.closing = True
            self.gateway.outbox.close(self.transport)
            return
        if self.parsing is None and not self.messages:
            self.wait(self.limits.idle_timeout)
        if self.paused:
            self.resume()
        if self.messages:  # (pipelined requests wait their turn)
            self.next()

    def forwarding(self, message: Message) -> bytes:
        """X-Forwarded-* and Forwarded lines for this hop (`forwarding_headers`), computed
        once per connection and Host unless a trusted proxy sent some to extend."""
        if message.forwarded and self.trusted:
            return render_headers(self.forwarding_fields(message))
        if self.forwarding_for[0] != message.host or not self.forwarding_for[2]:
            self.forwarding_fields(message)
        return self.forwarding_for[2]

    def forwarding_fields(self, message: Message) -> Headers:
        """The same as fields (not to be changed: the list is kept for the next request)."""
        if message.forwarded and self.trusted:
            return forwarding_headers(message.forwarded, self.hop(message), self.gateway.trusted)
        host, fields, _ = self.forwarding_for
        if host != message.host or not fields:
            fields = forwarding_headers((), self.hop(message))
            self.forwarding_for = (message.host, fields, render_headers(fields))
        return fields

    def hop(self, message: Message) -> Hop:
        return Hop(client=self.peer, scheme=self.gateway.scheme, host=message.host,
                   port=self.port)  # fmt: skip

    def planned(self, message: Message, chain: Chain) -> tuple[bytes, bytes] | None:
        """(target, header lines) to send for a declarative chain (`Chain.declarative`: the
        steps' result depends only on the path, the fields they name and the client's
        address) when the message carries none of those fields, from what the steps but the
        gates made of the same path before (`FastGateway.plans`; the first time they run,
        through `plan_request`, on the path alone); None otherwise, and the steps run on the
        request. The caller asks the gates (`run_gates`); the response steps are a patch
        (`Relay.response_head`)."""
        touched = chain.touches
        # (This hop's forwarding lines hold the fields of HOP_FIELDS, and of the others only
        # those the message carries: a chain naming none of those, X-Forwarded-Prefix set by
        # stripPrefix for one, is planned when the message does not carry the fields it names.)
        if (not chain.declarative or touched is None or not HOP_FIELDS.isdisjoint(touched)
                or any(n.lower() in touched for n in message.names)):  # fmt: skip
            return None
        path, mark, query = message.url_text.partition("?")
        plans = self.gateway.plans
        found = plans.get((id(chain), path))
        if found is None or found[0] is not chain:
            request = UpstreamRequest(message.method_text, path, None, [], _routed(path))
            if plan_request(chain, request) is not None:
                return None  # (a declarative step never answers; the generic path says why)
            if len(plans) >= PLANS_KEPT:
                plans.clear()
            found = plans[(id(chain), path)] = (
                chain,
                request.path.encode("latin-1"),
                render_headers(request.headers),
            )
        url = found[1] + b"?" + query.encode("latin-1") if mark else found[1]
        return url, message.lines + self.forwarding(message) + found[2]

    def upstream_request(
        self, message: Message, chain: Chain
    ) -> tuple[UpstreamRequest, bytes | None]:
        """The request as a route's steps see it (`kroute.pipeline.UpstreamRequest`), in one of
        two forms:
        - the steps may read any field, or a forwarding one (`Chain.touches`): every field
          passed on, with this hop's forwarding fields, as the other fronts give them
          (`handler.proxied`); the second value is None;
        - the steps name the fields they read or change: they see only those, and the second
          value is the lines of every other field (the message's own, rendered once by its
          header plan when the steps touch none of them, and this hop's forwarding lines),
          which go out unchanged before the steps' fields. What carrying every field through
          the steps and rendering it again cost was most of a step's price; the order of
          fields of different names carries no meaning (RFC 9110 section 5.3)."""
        touched = chain.touches
        rest: bytes | None = None
        if touched is not None and FORWARDING.isdisjoint(touched):
            if not any(n.lower() in touched for n in message.names):
                fields: Headers = []
                rest = message.lines + self.forwarding(message)
            else:
                kept = strip_hop_by_hop(message.fields(), also=REQUEST_HEADERS.drop)
                fields = [f for f in kept if f[0].lower() in touched]
                others = [f for f in kept if f[0].lower() not in touched]
                rest = render_headers(others) + self.forwarding(message)
        else:
            fields = strip_hop_by_hop(message.fields(), also=REQUEST_HEADERS.drop)
            fields += self.forwarding_fields(message)
        request = UpstreamRequest.from_target(
            message.method_text, message.url_text, fields, routed=_routed(message.url_text),
            scheme=self.gateway.scheme, client=self.peer, clock=self.gateway.router.clock,
            offload=self.gateway.router.workers.run,
        )  # fmt: skip
        return request, rest

    def start_pipe(self, upstream: EndpointSide) -> None:
        self.upstream = upstream
        self.exchange = None
        message = self.messages.pop(0) if self.messages else None
        if message is not None:
            for chunk in message.chunks:
                self.gateway.outbox.write(upstream.transport, chunk)
        self.deadline = 0.0

    def reject(self, status: int, reason: str) -> None:
        outbox = self.gateway.outbox
        if self.exchange is None or not self.exchange.head_sent:
            outbox.write(self.transport, error_page(status, reason))
        if self.exchange is not None:
            self.exchange.abandon()
            self.exchange = None
        self.closing = True
        outbox.close(self.transport)


class _Reject(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status

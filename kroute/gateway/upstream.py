"""The forwarding half of FastGateway: connections to endpoints and one request's exchange.

An `Exchange` routes a request (Router.route), sends it to the chosen endpoint over a pooled
`Upstream` connection (asyncio Protocol, llhttp parsing the response), retries elsewhere when
that is safe, reports every attempt to the pool's passive health, and relays the response to
the client connection (`kroute.gateway.fast.Client`) with flow control both ways. See
`kroute.gateway.fast` for the whole and for why it exists.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import httptools

from kroute.errors import (
    Answered,
    KrouteError,
    UpstreamClosed,
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from kroute.gateway.router import Decision, outcome_of, status_error
from kroute.pipeline.steps import (
    Answer,
    Chain,
    UpstreamRequest,
    run_request,
    run_request_async,
    run_response,
)
from kroute.pool.health import Outcome
from kroute.pool.pool import Pool
from kroute.rules.policy import RoutePolicy
from kroute.rules.request import RequestHead
from kroute.transport.http1 import REASON_BYTES, bodiless, interim
from kroute.transport.idle import IdleConnections
from kroute.transport.proxy import (
    HOP_BY_HOP,
    HeaderSplit,
    error_response,
    framing_conflict,
    render_headers,
    replay_safe,
    strip_hop_by_hop,
)
from kroute.transport.retry_policy import RetryPolicy

if TYPE_CHECKING:
    from kroute.gateway.fast import Client, Message

Key = tuple[str, int]
Headers = list[tuple[bytes, bytes]]
#: Response headers not passed on as they came (the front frames the body itself), and those
#: the gateway reads (RFC 9110 section 7.6.1; RFC 9112 section 6.3).
RESPONSE_HEADERS = HeaderSplit(
    drop=HOP_BY_HOP | {b"content-length"},
    read=frozenset({b"content-length", b"transfer-encoding", b"connection"}),
)
#: Buffered request body (before an endpoint is connected) above which the client is paused.
BUFFER_LIMIT = 256 * 1024


class Upstream(asyncio.Protocol):
    """One connection to an endpoint; its responses go to the exchange that uses it.

    Its read timer outlives exchanges: armed when the connection is first used, it re-arms
    itself while an exchange is waiting, so keep-alive requests set no timer of their own.
    """

    __slots__ = ("closed", "endpoints", "exchange", "idle_since", "key", "names", "parser",
                 "reason", "received", "reused", "timer", "transport", "values")  # fmt: skip

    def __init__(self, endpoints: IdleConnections[Key, Upstream], key: Key) -> None:
        self.endpoints = endpoints
        self.key = key
        self.transport: asyncio.Transport
        self.parser = httptools.HttpResponseParser(self)
        self.exchange: Exchange | None = None
        self.idle_since = 0.0
        self.closed = False
        self.received = False  # any byte of the current response
        self.reused = False
        self.timer: asyncio.TimerHandle | None = None
        #: The head of the response being read: reason phrase, header names and values.
        self.reason = b""
        self.names: list[bytes] = []
        self.values: list[bytes] = []

    def new_head(self) -> None:
        """Forget the head read last: the next response's is read from here."""
        self.reason, self.names, self.values = b"", [], []

    def fields(self) -> Headers:
        """The head's header fields, (name, value) each."""
        return list(zip(self.names, self.values, strict=True))

    def arm(self, loop: asyncio.AbstractEventLoop, seconds: float) -> None:
        """Start the read timer (the connection has none yet)."""
        self.timer = loop.call_at(loop.time() + seconds, self.check_timeout, loop, seconds)

    def check_timeout(self, loop: asyncio.AbstractEventLoop, limit: float) -> None:
        self.timer = None
        exchange = self.exchange
        if exchange is None or exchange.finished or exchange.piping or self.closed:
            return  # idle (the next use arms the timer again), or piping: no read timeout
        if loop.time() - exchange.upstream_activity >= limit:
            exchange.failed(UpstreamTimeout("read", endpoint=endpoint_text(self.key),
                                            request_sent=True))  # fmt: skip
        else:
            self.timer = loop.call_at(exchange.upstream_activity + limit, self.check_timeout,
                                      loop, limit)  # fmt: skip

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def close(self) -> None:
        self.transport.close()

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:  # nothing is asked of an idle connection: drop it
            self.transport.close()  # (nothing is queued in the outbox for an idle one)
            return
        self.received = True
        exchange.upstream_activity = exchange.loop.time()
        if exchange.piping:
            exchange.outbox.write(exchange.client.transport, data)
            return
        try:
            self.parser.feed_data(data)
            if exchange.pending:  # (a response that ended in this read is out already)
                exchange.flush()
        except httptools.HttpParserUpgrade as upgrade:
            exchange.upgraded(data[upgrade.args[0] :])
        except httptools.HttpParserError as exc:
            exchange.failed(UpstreamProtocolError(f"invalid response: {exc}",
                                                  endpoint=endpoint_text(self.key)))  # fmt: skip

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.endpoints.forget(self.key, self)
        if self.exchange is not None:
            self.exchange.upstream_lost()

    def pause_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.client.pause()

    def resume_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.client.resume()

    # llhttp callbacks, passed on to the exchange
    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.names.append(name)
        self.values.append(value)

    def on_headers_complete(self) -> None:
        if self.exchange is not None:
            self.exchange.response_head()

    def on_body(self, body: bytes) -> None:
        """A piece of the response body, for the client (framed anew when chunked out)."""
        exchange = self.exchange
        if exchange is None or exchange.no_body or not body:
            return
        if exchange.chunked_out:
            exchange.pending.append(b"%x\r\n%b\r\n" % (len(body), body))
        else:
            exchange.pending.append(body)

    def on_message_complete(self) -> None:
        if self.exchange is not None:
            self.exchange.response_done()


class Exchange:
    """One request from a client: routing, attempts at endpoints, the response relayed."""

    __slots__ = (
        "chain", "chunked_out", "client", "conn", "decision", "ended", "finished",
        "forwarding_apart", "gateway", "head", "head_sent", "keep_client", "key", "loop",
        "message", "no_body", "outbox", "pending", "piping", "policy", "pool", "retry", "router",
        "sent_body", "started", "status", "timers", "tried", "until_close", "upstream",
        "upstream_activity",
    )  # fmt: skip

    def __init__(self, client: Client, message: Message) -> None:
        gateway = client.gateway
        self.gateway = gateway
        self.outbox = gateway.outbox
        self.client = client
        self.message = message
        self.loop = client.loop
        self.router = gateway.router
        self.started = time.perf_counter()
        self.decision: Decision | None = None
        self.chain: Chain | None = None  # the route's steps, when it has any
        self.forwarding_apart = False  # forwarding lines added after the steps
        self.upstream: UpstreamRequest | None = None  # what they ran on (response steps read it)
        self.pool: Pool | None = None
        #: The route's timeouts and retries, and its RetryPolicy (`Router.retry_for`): set
        #: when the request is sent.
        self.policy: RoutePolicy | None
        self.retry: RetryPolicy
        #: The route's timeouts, cancelled at the end (a timer keeps its exchange alive).
        self.timers: list[asyncio.TimerHandle] | None = None
        self.tried: list[Key] = []
        self.conn: Upstream | None = None
        self.key: Key | None = None
        self.head = b""
        self.sent_body = False  # a request body byte went out: no retry from then on
        self.head_sent = False
        #: The client connection stays open after the response (`client_stays`, decided when
        #: the response head is made, so the end of the response agrees with its head).
        self.keep_client = False
        self.chunked_out = False
        self.no_body = False
        self.piping = False
        self.until_close = False  # a response body that ends when the endpoint closes
        self.status = 0
        self.ended = False  # the attempt's outcome is reported to the pool
        self.finished = False
        self.upstream_activity = 0.0
        #: Response bytes for the client, written once per read from the endpoint.
        self.pending: list[bytes] = []

    def flush(self) -> None:
        if self.pending:
            self.outbox.write(self.client.transport, b"".join(self.pending))
            self.pending.clear()

    # -- routing and attempts --------------------------------------------------------------

    def start(self) -> None:
        message, client = self.message, self.client
        try:
            decision = self.router.route_target(message.method_text, message.host,
                                                message.url_text, self.request_head,
                                                self.gateway.entry_point)  # fmt: skip
        except KrouteError as exc:
            self.answer_error(exc)
            return
        self.decision = decision
        chain = decision.chain
        if chain is None:
            self.send(message.url, message.lines + client.forwarding(message))
            return
        self.chain = chain
        request, self.forwarding_apart = client.upstream_request(message, chain)
        self.upstream = request
        if chain.waits:
            self.loop.create_task(self.wait_steps(chain, request))
        else:
            self.stepped(run_request(chain, request), request)

    async def wait_steps(self, chain: Chain, request: UpstreamRequest) -> None:
        """A chain with a step that waits (a user's async check), run off the callbacks."""
        answer = await run_request_async(chain, request)
        if not self.finished:
            self.stepped(answer, request)

    def stepped(self, answer: Answer | None, request: UpstreamRequest) -> None:
        """The request steps have run: answer as they say, or send what they made."""
        if answer is not None:
            self.answer_error(Answered(answer.status, answer.reason, answer.headers, answer.body))
        else:
            if request.mirrors:  # (tested here too: the hot path skips the call)
                message = self.message
                self.router.mirror(request, body=message.has_body or message.upgrade is not None)
            lines = render_headers(request.headers)
            if self.forwarding_apart:  # (the steps do not name them: `upstream_request`)
                lines += self.client.forwarding(self.message)
            self.send(request.target.encode("latin-1"), lines)

    def send(self, url: bytes, lines: bytes) -> None:
        """Send the request (target `url`, end-to-end header `lines`) where it was routed."""
        decision, message = self.decision, self.message
        assert decision is not None
        if decision.status != 200 or decision.pick is None or decision.pool is None:
            self.answer_error(status_error(decision))
            return
        self.pool = decision.pool
        framing = b""
        if message.upgrade is not None:
            framing = b"Connection: Upgrade\r\nUpgrade: %b\r\n" % message.upgrade
        if message.chunked:
            framing += b"Transfer-Encoding: chunked\r\n"
        elif message.content_length is not None:
            framing += b"Content-Length: %d\r\n" % message.content_length
        self.head = b"".join([
            message.method, b" ", url, b" HTTP/1.1\r\n", lines, framing, b"\r\n",
        ])  # fmt: skip
        route = decision.route
        policy = self.policy = None if route is None else route.policy
        if policy is None:
            self.retry = self.router.retry
        else:
            self.retry = self.router.retry_for(route)
            if policy.request is not None:  # HTTPRoute `timeouts.request`: until the head
                self.timer(policy.request, None)
        self.retry.budget.request(self.router.clock())
        self.attempt(decision.pick.endpoint.key)

    def request_head(self) -> RequestHead:
        """The request as routing sees it (built only when the Router has no answer yet)."""
        message = self.message
        return RequestHead.build(
            message.method_text, message.host, message.url_text,
            headers=message.str_headers(), client_ip=self.client.ip, scheme=self.gateway.scheme,
        )  # fmt: skip

    def attempt(self, key: Key, backoff: float = 0.0, waited: bool = False) -> None:
        """Try `key`; a retry first waits `backoff` seconds, the endpoint counted in meanwhile
        (called again then, `waited`)."""
        assert self.pool is not None
        if waited:
            if self.finished:
                return  # (answered, or the client went away, during the backoff)
        else:
            self.key = key
            self.tried.append(key)
            self.pool.begin(key)
            if backoff:
                self.loop.call_later(backoff, self.attempt, key, 0.0, True)
                return
        policy = self.policy
        if policy is not None and policy.backend_request is not None:
            # HTTPRoute `timeouts.backendRequest`: this try, until its response head.
            self.timer(policy.backend_request, len(self.tried))
        conn = self.gateway.endpoints.checkout(key, self.loop.time())
        if conn is not None:
            conn.reused = True
            self.use(conn)
        else:
            self.loop.create_task(self.connect(key))

    async def connect(self, key: Key) -> None:
        endpoints = self.gateway.endpoints
        try:
            _, conn = await asyncio.wait_for(
                self.loop.create_connection(lambda: Upstream(endpoints, key), key[0], key[1]),
                self.gateway.timeouts.connect,
            )
        except TimeoutError:
            if self.key == key:  # (not a try given up meanwhile: see `expired`)
                self.failed(UpstreamTimeout("connect", endpoint=endpoint_text(key),
                                            request_sent=False))  # fmt: skip
            return
        except OSError as exc:
            if self.key == key:
                reason = exc.strerror or str(exc) or type(exc).__name__
                self.failed(UpstreamConnectError(reason, endpoint=endpoint_text(key)))
            return
        if self.finished or self.key != key:  # the client went away, or the try timed out
            endpoints.give_back(key, conn, self.loop.time())
            return
        self.use(conn)

    def use(self, conn: Upstream) -> None:
        self.conn = conn
        conn.exchange = self
        conn.received = False
        conn.new_head()
        self.outbox.write(conn.transport, self.head)
        self.upstream_activity = self.loop.time()
        if conn.timer is None:
            conn.arm(self.loop, self.gateway.timeouts.read)
        message = self.message
        if message.upgrade is not None:
            return  # bytes after an upgrade request go through the pipe, after the 101
        if message.chunks:
            self.sent_body = True
            for chunk in message.chunks:
                self.write_body(chunk)
            message.chunks.clear()
            self.client.resume()
        if message.complete and message.chunked:
            self.outbox.write(conn.transport, b"0\r\n\r\n")

    # -- the request body, as it arrives ---------------------------------------------------

    def request_body(self, chunk: bytes) -> None:
        if self.finished:
            return  # answered already (the connection closes after the answer)
        if self.conn is None:
            self.message.chunks.append(chunk)
            if sum(map(len, self.message.chunks)) > BUFFER_LIMIT:
                self.client.pause()
            return
        self.sent_body = True
        self.write_body(chunk)

    def write_body(self, chunk: bytes) -> None:
        assert self.conn is not None
        if self.message.chunked:
            self.outbox.write(self.conn.transport, b"%x\r\n%b\r\n" % (len(chunk), chunk))
        else:
            self.outbox.write(self.conn.transport, chunk)

    def request_done(self) -> None:
        if self.conn is not None and not self.finished and self.message.chunked:
            self.outbox.write(self.conn.transport, b"0\r\n\r\n")

    # -- failures before (or after) the response head --------------------------------------

    def failed(self, error: UpstreamError) -> None:
        """An attempt failed: retry elsewhere when safe, else answer (or cut) the client."""
        if self.finished or self.key is None or self.pool is None:
            return
        conn, key = self.conn, self.key
        self.conn = None
        if conn is not None:
            conn.exchange = None
            self.outbox.close(conn.transport)
        stale = (conn is not None and conn.reused and not conn.received
                 and not isinstance(error, UpstreamTimeout))  # fmt: skip
        replayable = not self.message.has_body  # (a body is not kept to be sent again)
        method = self.message.method_text
        if stale and replay_safe(method, replayable=replayable):
            # The endpoint closed the idle connection as it was reused: a fresh one, same
            # endpoint (no verdict on it, not an attempt; PooledTransport does the same).
            self.loop.create_task(self.connect(key))
            return
        if not self.ended:
            self.pool.end(key, outcome_of(error), now=self.router.clock())
        if self.head_sent:
            self.flush()
            self.finish(error.status_hint, keep=False)
            self.outbox.close(self.client.transport)
            return
        # Bytes may have reached the endpoint: the error says so, or a body went out, or they
        # went on a stale connection (as after_stale says for PooledTransport).
        sent = error.request_sent or self.sent_body or stale
        if self.retry.again(method, replayable=replayable, sent=sent, tried=len(self.tried),
                            now=self.router.clock()):  # fmt: skip
            pick = self.pool.pick(now=self.router.clock(), rng=self.router.rng,
                                  exclude=self.tried)  # fmt: skip
            if pick is not None:
                self.attempt(pick.endpoint.key, self.retry.backoff)
                return
        self.answer_error(error)

    def timer(self, seconds: float, attempt: int | None) -> None:
        """Call `expired(attempt)` in `seconds` unless the exchange ends first."""
        if self.timers is None:
            self.timers = []
        self.timers.append(self.loop.call_later(seconds, self.expired, attempt))

    def cancel_timers(self) -> None:
        for timer in self.timers or ():
            timer.cancel()

    def expired(self, attempt: int | None) -> None:
        """A route's timeout ran out: the request's (`attempt` None: 504 unless the response
        head went out already) or one try's (retried as any failed try may be)."""
        if self.finished or self.head_sent or attempt not in (None, len(self.tried)):
            return
        key = self.key
        if attempt is not None:
            self.failed(UpstreamTimeout("attempt", endpoint=endpoint_text(key)))
            return
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.exchange = None
            self.outbox.close(conn.transport)
        if self.pool is not None and key is not None:
            self.pool.abandon(key)  # no verdict on the endpoint, as on the other fronts
        self.key = None  # (a connection made for it now is given back)
        self.answer_error(UpstreamTimeout("request"))

    def upstream_lost(self) -> None:
        if self.finished:
            return
        if self.piping:
            self.finish(101, keep=False)
            self.outbox.close(self.client.transport)
            return
        conn = self.conn
        if self.head_sent and self.until_close:
            self.response_done()  # a close-delimited body ends with the connection
            return
        sent = conn is not None and (conn.received or not conn.reused)
        error = UpstreamClosed("closed before the response ended",
                               endpoint=endpoint_text(self.key), request_sent=sent)  # fmt: skip
        self.failed(error)

    # -- the response ----------------------------------------------------------------------

    def response_head(self) -> None:
        conn = self.conn
        assert conn is not None
        status = conn.parser.get_status_code()
        if interim(status):
            self.pending.append(b"HTTP/1.1 %d %b\r\n\r\n" % (status, conn.reason))
            conn.new_head()
            return
        if self.retry.codes and self.again_on_status(conn, status):
            return
        lines, values = self.gateway.response_headers.lines(conn.names, conn.values)
        upstream = self.upstream
        if self.chain is not None and self.chain.response and upstream and status != 101:
            drop = RESPONSE_HEADERS.drop
            fields = [(n, v) for n, v in conn.fields() if n.lower() not in drop]
            run_response(self.chain, status, fields, upstream)
            lines = render_headers(fields)
        lengths = values.get(b"content-length")
        chunked = b"transfer-encoding" in values
        if lengths is not None and (chunked or len(lengths) > 1):
            conflict = framing_conflict(conn.fields())
            if conflict is not None:
                self.failed(UpstreamProtocolError(conflict, endpoint=endpoint_text(conn.key)))
                return
        if status == 101:
            return  # the head goes out with the upgrade (see `upgraded`)
        self.no_body = bodiless(self.message.method, status)
        framing = b""  # this hop's own framing and connection lines
        if lengths is not None:
            framing = b"Content-Length: %b\r\n" % lengths[0]
        elif not self.no_body:
            framing = b"Transfer-Encoding: chunked\r\n"
            self.chunked_out = True
            self.until_close = not chunked
        self.keep_client = self.client_stays()
        if not self.keep_client:
            framing += b"Connection: close\r\n"
        if self.router.sticky_cookie is not None and self.decision is not None:
            cookie = self.router.sticky_header(self.decision, self.key)
            if cookie is not None:
                framing += b"%b: %b\r\n" % cookie
        self.head_sent = True
        self.pending.append(b"HTTP/1.1 %d %b\r\n%b%b%b\r\n" % (
            status, conn.reason or b"OK", lines, framing, self.gateway.hsts_line))  # fmt: skip
        self.status = status
        assert self.pool is not None
        assert self.key is not None
        self.pool.end(self.key, Outcome.HTTP_5XX if status >= 500 else Outcome.SUCCESS,
                      now=self.router.clock())  # fmt: skip
        self.ended = True
        if self.message.method == b"HEAD":
            # The head is the whole response (RFC 9110 section 9.3.2), which llhttp cannot
            # know: it would wait for the body the head announces. A fresh parser for the
            # connection's next response.
            keep_alive = bool(conn.parser.should_keep_alive())
            conn.parser = httptools.HttpResponseParser(conn)
            self.response_done(keep_alive)

    def again_on_status(self, conn: Upstream, status: int) -> bool:
        """Whether the route's retry policy tries again elsewhere after this response head,
        which is then discarded unread with its connection (nothing of it went out: informational
        responses before it did, and HTTP allows several before the final one)."""
        assert self.pool is not None
        assert self.key is not None
        clock = self.router.clock
        if not self.retry.again_on_status(status, self.message.method_text,
                                          replayable=not self.message.has_body,
                                          tried=len(self.tried), now=clock()):  # fmt: skip
            return False
        pick = self.pool.pick(now=clock(), rng=self.router.rng, exclude=self.tried)
        if pick is None:
            return False  # (this response is the answer)
        conn.exchange = None
        self.conn = None
        self.outbox.close(conn.transport)
        self.pool.end(self.key, outcome_of(status), now=clock())
        self.attempt(pick.endpoint.key, self.retry.backoff)
        return True

    def response_done(self, keep_alive: bool | None = None) -> None:
        """The response ended (`keep_alive`: as its head said, when the parser no longer
        knows)."""
        if not self.head_sent or self.finished:
            return  # (an informational response ended: the final one follows)
        if self.chunked_out:
            self.pending.append(b"0\r\n\r\n")
        self.flush()
        conn = self.conn
        self.conn = None
        if conn is not None:
            conn.exchange = None
            if keep_alive is None:
                keep_alive = bool(conn.parser.should_keep_alive())
            reusable = keep_alive and not self.until_close
            if reusable and not conn.closed:
                self.gateway.endpoints.give_back(conn.key, conn, self.loop.time())
            else:
                self.outbox.close(conn.transport)
        self.finish(self.status, keep=self.message.complete and self.keep_client)

    def upgraded(self, rest: bytes) -> None:
        conn = self.conn
        assert conn is not None
        assert self.pool is not None
        assert self.key is not None
        fields = conn.fields()
        headers = [*strip_hop_by_hop(fields), (b"Connection", b"Upgrade")]
        protocol = next((v for n, v in fields if n.lower() == b"upgrade"), None)
        if protocol is not None:
            headers.append((b"Upgrade", protocol))
        self.outbox.write(
            self.client.transport,
            b"HTTP/1.1 101 Switching Protocols\r\n" + render_headers(headers) + b"\r\n" + rest,
        )
        self.head_sent = self.piping = True
        self.pool.end(self.key, Outcome.SUCCESS, now=self.router.clock())
        self.ended = True
        self.status = 101
        self.client.start_pipe(conn)

    # -- the end ---------------------------------------------------------------------------

    def client_stays(self) -> bool:
        """Whether the client connection stays open after this answer, as its head says: the
        client did not ask to close it and the gateway is not draining."""
        return self.message.keep_alive and not self.gateway.draining

    def answer_error(self, error: KrouteError) -> None:
        status, headers, body = error_response(error)
        keep = self.client_stays() and self.message.complete
        if not keep:
            headers = [*headers, (b"Connection", b"close")]
        head = b"HTTP/1.1 %d %b\r\n" % (status, REASON_BYTES.get(status, b"Error"))
        head += render_headers(headers) + self.gateway.hsts_line
        self.pending.append(head + b"\r\n" + body)  # (error_response sets Content-Length)
        self.flush()
        self.head_sent = True
        self.finish(status, keep=keep)

    def finish(self, status: int, *, keep: bool) -> None:
        if self.finished:
            return
        self.finished = True
        if self.timers is not None:
            self.cancel_timers()
        decision = self.decision or Decision(status)
        self.router.observe(decision, status, self.started)
        self.client.exchange_done(self, keep)

    def abandon(self) -> None:
        """The client went away."""
        if self.finished:
            return
        if self.conn is not None:
            self.conn.exchange = None
            self.outbox.close(self.conn.transport)
            self.conn = None
        if self.pool is not None and self.key is not None and not self.ended:
            self.pool.abandon(self.key)
        self.finished = True
        if self.timers is not None:
            self.cancel_timers()


def endpoint_text(key: Key | None) -> str:
    return "" if key is None else f"{key[0]}:{key[1]}"

"""The way back of FastGateway's exchanges: the response relayed from endpoint to client.

`Relay` holds one exchange's state and does what the endpoint connection asks of it
(`ports.ExchangeSide`): the response head made anew for the client (framing, Connection,
the route's response steps, the sticky cookie), the body relayed with its framing, the pipe
after a 101, error answers, and the end reported to the Router and the client connection.
`exchange.Exchange` adds the way there (routing, steps, attempts, failures); the two are one
object, split in two modules by what they do.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import httptools

from kroute.errors import Answered, KrouteError, UpstreamError, UpstreamProtocolError
from kroute.gateway.fast.endpoint import endpoint_text
from kroute.gateway.fast.ports import ClientSide, EndpointSide, Headers, Key, Message
from kroute.gateway.fast.record import EXCHANGE_EVENTS, exchange_facts
from kroute.gateway.mirror import Tee
from kroute.gateway.router import Decision
from kroute.pipeline.body import BodyFilter, BodyTooLarge, Replace, run_body
from kroute.pipeline.patch import ResponsePatch
from kroute.pipeline.steps import (
    Answer,
    Chain,
    UpstreamRequest,
    run_end,
    run_outcome,
    run_response,
)
from kroute.pool.health import Outcome
from kroute.pool.pool import Pool
from kroute.rules.policy import RoutePolicy
from kroute.transport.header_plans import HeaderPlans
from kroute.transport.http1 import bodiless, interim, status_line
from kroute.transport.proxy import (
    HOP_BY_HOP,
    HeaderSplit,
    error_response,
    framing_conflict,
    render_headers,
    strip_hop_by_hop,
)
from kroute.transport.retry_policy import RetryPolicy

#: Response headers not passed on as they came (the front frames the body itself), and those
#: the gateway reads (RFC 9110 section 7.6.1; RFC 9112 section 6.3).
RESPONSE_HEADERS = HeaderSplit(
    drop=HOP_BY_HOP | {b"content-length"},
    read=frozenset({b"content-length", b"transfer-encoding", b"connection"}),
)

#: How many response patches' header plans FastGateway keeps (`Relay.patched`; then it starts
#: again, empty).
PATCHES_KEPT = 256


class Relay:
    """One request's exchange: its state, and the response relayed (module docstring)."""

    __slots__ = (
        "body", "body_bytes", "chain", "chunked_out", "client", "conn", "decision", "ended",
        "error", "finished", "gateway", "head", "head_sent", "held", "keep_client", "key",
        "loop", "message", "no_body", "outbox", "pending", "piping", "policy", "pool",
        "rest_lines", "retry", "router", "sent_at", "sent_body", "started", "status", "tee",
        "timers", "tried", "until_close", "upstream", "upstream_activity",
    )  # fmt: skip

    def __init__(self, client: ClientSide, message: Message) -> None:
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
        #: Lines of the fields a chain's steps do not name, sent before theirs (`Client.
        #: upstream_request`); None when the steps saw every field.
        self.rest_lines: bytes | None = None
        self.upstream: UpstreamRequest | None = None  # what they ran on (response steps read it)
        self.pool: Pool | None = None
        #: The route's timeouts and retries, and its RetryPolicy (`Router.retry_for`): set
        #: when the request is sent.
        self.policy: RoutePolicy | None
        self.retry: RetryPolicy
        #: The route's timeouts, cancelled at the end (a timer keeps its exchange alive).
        self.timers: list[asyncio.TimerHandle] | None = None
        self.tried: list[Key] = []
        self.conn: EndpointSide | None = None
        self.key: Key | None = None
        self.head = b""
        self.sent_body = False  # a request body byte went out: no retry from then on
        self.body_bytes = 0  # request body bytes received (counted for a route with a limit)
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
        #: For the RequestEvent (`record`): the request was last sent (loop time), the
        #: response body bytes relayed, the error that answered.
        self.sent_at = 0.0
        self.body_bytes = 0
        self.error: KrouteError | None = None
        #: Response bytes for the client, written once per read from the endpoint.
        self.pending: list[bytes] = []
        #: The route's body filter for this response (`kroute.pipeline.body`), and the head it
        #: holds while it decides (status, fields, framing lines).
        self.body: BodyFilter | None = None
        self.held: tuple[int, Headers, bytes] | None = None
        #: The request body kept for mirror copies that carry it (`kroute.gateway.mirror`).
        self.tee: Tee | None = None

    def flush(self) -> None:
        """Write the response bytes gathered for the client (one write per read)."""
        if self.pending:
            self.outbox.write(self.client.transport, b"".join(self.pending))
            self.pending.clear()

    if TYPE_CHECKING:  # (the way there, `Exchange`'s: a response head may end the try)

        def failed(self, error: UpstreamError) -> None: ...

        def again_on_status(self, conn: EndpointSide, status: int) -> bool: ...

    # -- the response, as the endpoint sends it --------------------------------------------

    def response_head(self) -> None:
        conn = self.conn
        assert conn is not None
        status = conn.parser.get_status_code()
        if status < 200 and interim(status):  # (the test first: most heads are final)
            self.pending.append(status_line(status) + b"\r\n")
            conn.new_head()
            return
        if self.retry.codes and self.again_on_status(conn, status):
            return
        chain, patch = self.chain, None
        if chain is not None and chain.patches is not None and not chain.body:
            patch = chain.patches.get(self.gateway.scheme)
        if patch is not None:
            # The response steps are one patch (`kroute.pipeline.patch`): the fields it drops
            # are left out as hop-by-hop ones are, by a header plan of its own; its lines added.
            found = self.gateway.patched.get(id(patch))
            plans = found[1] if found is not None and found[0] is patch else self.patched(patch)
            lines, values = plans.lines(conn.names, conn.values)
            lines += patch.lines
        else:
            lines, values = self.gateway.response_headers.lines(conn.names, conn.values)
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
        upstream, fields = self.upstream, None
        if chain is not None and upstream and patch is None and (chain.response or chain.body):
            drop = RESPONSE_HEADERS.drop
            fields = [(n, v) for n, v in conn.fields() if n.lower() not in drop]
            failed = run_response(chain, status, fields, upstream)
            if failed is not None:  # (fails closed: the response is not sent unedited)
                self.response_failed(failed, status)
                return
            if chain.body and not self.no_body and self.body_steps(conn, status, fields):
                return  # (replaced: see `replaced`)
            lines = render_headers(fields)
        framing = b""  # this hop's own framing and connection lines
        if lengths is not None and self.body is None:
            framing = b"Content-Length: %b\r\n" % lengths[0]
        elif not self.no_body:
            framing = b"Transfer-Encoding: chunked\r\n"
            self.chunked_out = True
            self.until_close = not chunked and lengths is None
        self.keep_client = self.client_stays()
        if not self.keep_client:
            framing += b"Connection: close\r\n"
        if self.router.sets_cookies and self.decision is not None:
            for cookie in self.router.sticky_headers(self.decision, self.key):
                framing += b"%b: %b\r\n" % cookie
        self.head_sent = True
        if self.chain is not None and self.chain.outcome:
            self.outcome(status)
        if self.body is not None and not self.body.ready:
            self.held = (status, fields or [], framing)  # (the filter is deciding: `filtered`)
        else:
            self.pending.append(b"%b%b%b%b\r\n" % (
                status_line(status), lines, framing, self.gateway.hsts_line))  # fmt: skip
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

    def patched(self, patch: ResponsePatch) -> HeaderPlans:
        """The header plans of responses that `patch` edits (`FastGateway.patched`): the
        names it drops or sets are dropped with the hop-by-hop ones."""
        patched = self.gateway.patched
        if len(patched) >= PATCHES_KEPT:
            patched.clear()
        split = HeaderSplit(drop=RESPONSE_HEADERS.drop | patch.drop, read=RESPONSE_HEADERS.read)
        plans = HeaderPlans(split)
        patched[id(patch)] = (patch, plans)
        return plans

    def response_failed(self, answer: Answer, status: int) -> None:
        """A response step raised (`run_response`): the endpoint's response (`status`) is
        dropped with its connection (its body unread) and `answer` (500) goes out instead."""
        conn = self.conn
        assert conn is not None
        assert self.pool is not None
        assert self.key is not None
        conn.exchange = None
        self.outbox.close(conn.transport)
        self.conn = None
        self.pool.end(self.key, Outcome.HTTP_5XX if status >= 500 else Outcome.SUCCESS,
                      now=self.router.clock())  # fmt: skip
        self.ended = True
        self.answer_error(Answered(answer.status, answer.reason, answer.headers, answer.body))

    def response_done(self, keep_alive: bool | None = None) -> None:
        """The response ended (`keep_alive`: as its head said, when the parser no longer
        knows)."""
        if not self.head_sent or self.finished:
            return  # (an informational response ended: the final one follows)
        if self.body is not None and not self.filtered(None):
            return
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

    # -- the route's body steps (`kroute.pipeline.body`) -----------------------------------

    def body_steps(self, conn: EndpointSide, status: int, fields: Headers) -> bool:
        """Run the body steps on the head (`fields`, Content-Length included while they
        decide); True when the response is replaced (`replaced`), else `self.body` is the
        filter the body goes through, if any."""
        assert self.chain is not None
        assert self.upstream is not None
        lengths = [v for n, v in conn.fields() if n.lower() == b"content-length"]
        fields += [(b"Content-Length", v) for v in lengths[:1]]
        made = run_body(self.chain, status, fields, self.upstream)
        if isinstance(made, BodyFilter):
            self.body = made  # (run_body took Content-Length out: chunked from here)
            return False
        fields[:] = [(n, v) for n, v in fields if n.lower() != b"content-length"]
        if made is None:
            return False
        self.replaced(conn, status, made)
        return True

    def replaced(self, conn: EndpointSide, status: int, made: Answer | Replace) -> None:
        """The response is replaced: the endpoint's connection closed with its body unread,
        the attempt reported by its status; then the step's answer, or the error page
        (`Router.error_page`, awaited in a task)."""
        assert self.pool is not None
        assert self.key is not None
        conn.exchange = None
        self.conn = None
        self.outbox.close(conn.transport)
        self.pool.end(self.key, Outcome.HTTP_5XX if status >= 500 else Outcome.SUCCESS,
                      now=self.router.clock())  # fmt: skip
        self.ended = True
        if isinstance(made, Answer):
            self.answer_error(Answered(made.status, made.reason, made.headers, made.body))
        else:
            self.loop.create_task(self.error_page(made))

    async def error_page(self, page: Replace) -> None:
        headers, body = await self.router.error_page(page)
        if not self.finished:
            self.answer_error(Answered(page.status, page.step, tuple(headers), body))

    def filtered(self, chunk: bytes | None) -> bool:
        """A piece of the body through the filter (None: the end), chunked for the client,
        with the head when the filter has just settled it. False when the filter stopped the
        response (BodyTooLarge): answered 500 if the head was held, else cut."""
        made = self.body
        assert made is not None
        try:
            out = made.end() if chunk is None else made.feed(chunk)
        except BodyTooLarge as exc:
            self.body = None
            conn, self.conn = self.conn, None
            if conn is not None:
                conn.exchange = None
                self.outbox.close(conn.transport)
            if self.held is not None:
                self.held = None
                self.head_sent = False
                self.answer_error(exc)
            else:
                self.flush()  # (what went before; never the last chunk: the client sees a cut)
                self.finish(500, keep=False)
                self.outbox.close(self.client.transport)
            return False
        held = self.held
        if held is not None and (made.ready or chunk is None):
            self.held = None
            self.pending.append(b"%b%b%b%b\r\n" % (
                status_line(held[0]), render_headers(held[1]), held[2],
                self.gateway.hsts_line))  # fmt: skip
        if out:
            self.pending.append(b"%x\r\n%b\r\n" % (len(out), out))
        return True

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

    def outcome(self, status: int) -> None:
        """Tell the route's steps how the request ended (`run_outcome`)."""
        if self.chain is not None and self.upstream is not None:
            run_outcome(self.chain, self.upstream, status, time.perf_counter() - self.started)

    def answer_error(self, error: KrouteError) -> None:
        self.error = error
        status, headers, body = error_response(error)
        if self.chain is not None and self.chain.outcome:
            self.outcome(status)
        keep = self.client_stays() and self.message.complete
        if not keep:
            headers = [*headers, (b"Connection", b"close")]
        if bodiless(self.message.method, status):
            body = b""  # (Content-Length stays: what a GET would get, RFC 9110 section 9.3.2)
        head = status_line(status) + render_headers(headers) + self.gateway.hsts_line
        self.pending.append(head + b"\r\n" + body)  # (error_response sets Content-Length)
        self.body_bytes = len(body)
        self.flush()
        self.head_sent = True
        self.finish(status, keep=keep)

    def finish(self, status: int, *, keep: bool) -> None:
        if self.finished:
            return
        self.finished = True
        if self.timers is not None:
            self.cancel_timers()
        if self.chain is not None:  # (the test first: a route without steps pays no call)
            self.ended_steps()
        decision = self.decision or Decision(status)
        router = self.router
        router.observe(decision, status, self.started)
        if router.observers.listening:
            facts = exchange_facts(self, status, router.observers.headers)
            router.emit_later(facts, EXCHANGE_EVENTS)
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
        if self.chain is not None:
            self.ended_steps()
        if self.router.observers.listening:
            router = self.router
            facts = exchange_facts(self, 0, router.observers.headers, aborted=True)
            router.emit_later(facts, EXCHANGE_EVENTS)

    def ended_steps(self) -> None:
        """Tell the steps that count requests that this one is over (`run_end`); a chain
        still waiting on a step is told when that step is done (`Exchange.wait_steps`)."""
        chain, upstream = self.chain, self.upstream
        if chain is not None and chain.ends and upstream is not None:
            run_end(chain, upstream)

    def cancel_timers(self) -> None:
        for timer in self.timers or ():
            timer.cancel()

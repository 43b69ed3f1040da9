"""The way there of FastGateway's exchanges: routing, the route's steps, attempts at endpoints.

An `Exchange` routes a request (Router.route_target), runs the route's request steps, sends
the request to the chosen endpoint over a pooled `endpoint.Upstream` connection, retries
elsewhere when the Router's `RetryPolicy` allows, reports every attempt to the pool's passive
health, and enforces the route's timeouts. The response's way back is its base class,
`relay.Relay`; the client connection is reached through `ports.ClientSide`. See
`kroute.gateway.fast` for the whole and for why it exists.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from kroute.errors import (
    Answered,
    KrouteError,
    UpstreamClosed,
    UpstreamConnectError,
    UpstreamError,
    UpstreamTimeout,
)
from kroute.gateway.fast.endpoint import Upstream, endpoint_text
from kroute.gateway.fast.ports import BUFFER_LIMIT, EndpointSide, Key
from kroute.gateway.fast.relay import Relay
from kroute.gateway.router import outcome_of, status_error
from kroute.gateway.tracing import without_fields
from kroute.pipeline.body import RequestTooLarge
from kroute.pipeline.fetch import Fetch
from kroute.pipeline.steps import (
    Answer,
    Chain,
    UpstreamRequest,
    Waiting,
    run_gates,
    run_request,
    run_request_async,
)
from kroute.rules.request import RequestHead
from kroute.transport.proxy import host_line, render_headers, replay_safe

if TYPE_CHECKING:
    from kroute.gateway.tracing import Propagation


class Exchange(Relay):
    """One request from a client: routing, attempts at endpoints, the response relayed."""

    __slots__ = ()
    #: The Trace Context lines the request carries when the Router traces (`traced`), sent
    #: after its own (`send`); the client's, or a step's, are replaced.
    trace_lines = b""

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
        planned = client.planned(message, chain)
        if planned is not None:
            if chain.gates:  # (asked per request: they decide by the client, `run_gates`)
                answer = run_gates(chain, client.peer)
                if answer is not None:
                    self.stepped(answer, None)
                    return
            self.send(*planned)
            return
        request, self.rest_lines = client.upstream_request(message, chain)
        self.upstream = request
        if chain.waits:
            self.loop.create_task(self.wait_steps(chain, request))
            return
        answer = run_request(chain, request)
        if type(answer) is Waiting:  # (a step waits for this request: basicAuth's bcrypt)
            self.loop.create_task(self.wait_steps(chain, request, answer.at))
        else:
            self.stepped(answer, request)

    async def wait_steps(
        self, chain: Chain, request: UpstreamRequest, waiting: int | None = None
    ) -> None:
        """A chain with a step that waits (a user's async check; `waiting`: the `Deferring`
        step `run_request` stopped at), run off the callbacks."""
        answer = await run_request_async(chain, request, self.fetcher(), waiting=waiting)
        if not self.finished:
            self.stepped(answer, request)
        else:
            self.ended_steps()  # (the client went away meanwhile: `abandon` was too early)

    def fetcher(self) -> Fetch:
        """How the steps call out (forwardAuth): the Router's fetch (traced: `traced`)."""
        return self.router.fetch

    def propagation(self) -> Propagation | None:
        """The request's trace, when the Router traces (`traced`): mirrors go in it."""
        return None

    def stepped(self, answer: Answer | None, request: UpstreamRequest | None) -> None:
        """The request steps have run: answer as they say, or send what they made (`request`:
        None when a planned chain's gate answered)."""
        if answer is not None:
            self.answer_error(Answered(answer.status, answer.reason, answer.headers, answer.body))
        elif request is not None:
            if request.mirrors:  # (tested here too: the hot path skips the call)
                message = self.message
                trace = self.propagation()
                waiting = self.router.mirror(request, body=message.has_body,
                                             upgrade=message.upgrade is not None,
                                             trace=trace)  # fmt: skip
                if waiting:  # (copies of the body: each piece given to the tee as it goes)
                    self.tee = self.router.mirrors.tee(waiting, trace)
            lines = render_headers(request.headers)
            if self.rest_lines is not None:  # the fields the steps do not name (`upstream_request`)
                lines = self.rest_lines + lines
            self.send(request.target.encode("latin-1"), lines)

    def send(self, url: bytes, lines: bytes) -> None:
        """Send the request (target `url`, end-to-end header `lines`) where it was routed."""
        decision, message = self.decision, self.message
        assert decision is not None
        if decision.status != 200 or decision.pick is None or decision.pool is None:
            self.answer_error(status_error(decision))
            return
        self.pool = decision.pool
        chain = self.chain
        if chain is not None and chain.request_limit is not None:
            length = message.content_length or sum(map(len, message.chunks))
            if length > chain.request_limit:
                self.answer_error(RequestTooLarge(chain.request_limit))  # (before sending)
                return
        if decision.endpoint_host:  # (Traefik's passHostHeader: false)
            lines = host_line(lines, *decision.pick.endpoint.key)
        framing = b""
        if message.upgrade is not None:
            framing = b"Connection: Upgrade\r\nUpgrade: %b\r\n" % message.upgrade
        if message.chunked:
            framing += b"Transfer-Encoding: chunked\r\n"
        elif message.content_length is not None:
            framing += b"Content-Length: %d\r\n" % message.content_length
        trace_lines = self.trace_lines
        if trace_lines and (self.chain is not None or message.trace_fields):
            lines = without_fields(lines)  # (the client's, or a step's: replaced)
        self.head = b"".join([
            message.method, b" ", url, b" HTTP/1.1\r\n", lines, trace_lines, framing, b"\r\n",
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

    def again_at(self, key: Key) -> None:
        """Try again at `key`, after the retry policy's backoff; the request head names the
        endpoint as Host when the backend asks for that (passHostHeader: false)."""
        decision = self.decision
        if decision is not None and decision.endpoint_host:
            line, _, rest = self.head.partition(b"\r\n")
            self.head = b"%b\r\n%b\r\n" % (line, host_line(rest[:-2], *key))
        self.attempt(key, self.retry.wait(len(self.tried)))

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

    def use(self, conn: EndpointSide) -> None:
        self.conn = conn
        conn.exchange = self
        conn.received = False
        conn.new_head()
        self.outbox.write(conn.transport, self.head)
        self.sent_at = self.upstream_activity = self.loop.time()
        if conn.timer is None:
            conn.arm(self.loop, self.gateway.timeouts.read)
        message = self.message
        if message.upgrade is not None:
            return  # bytes after an upgrade request go through the pipe, after the 101
        if message.chunks:
            self.sent_body = True
            limited = self.chain is not None and self.chain.request_limit is not None
            for chunk in message.chunks:
                if limited and self.over(chunk):
                    return
                self.write_body(chunk)
            message.chunks.clear()
            self.client.resume()
        if message.complete and message.chunked:
            self.outbox.write(conn.transport, b"0\r\n\r\n")
        if message.complete and self.tee is not None:
            self.teed()

    # -- the request body, as it arrives ---------------------------------------------------

    def request_body(self, chunk: bytes) -> None:
        if self.finished:
            return  # answered already (the connection closes after the answer)
        if self.conn is None:
            self.message.chunks.append(chunk)
            if sum(map(len, self.message.chunks)) > BUFFER_LIMIT:
                self.client.pause()
            return
        if self.chain is not None and self.chain.request_limit is not None and self.over(chunk):
            return
        self.sent_body = True
        self.write_body(chunk)

    def over(self, chunk: bytes) -> bool:
        """Count a request body piece going out against the route's limit (`too_large`)."""
        assert self.chain is not None
        limit = self.chain.request_limit
        assert limit is not None
        self.body_bytes += len(chunk)
        if self.body_bytes > limit:
            self.too_large(limit)
            return True
        return False

    def too_large(self, limit: int) -> None:
        """The request body passed the route's limit (buffering's maxRequestBodyBytes): the
        request is cut at the endpoint, and answered 413 unless its response has started (then
        cut too); the client connection closes either way (the rest of its body is unread)."""
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.exchange = None
            self.outbox.close(conn.transport)
        if self.pool is not None and self.key is not None and not self.ended:
            self.pool.abandon(self.key)
            self.ended = True
        if not self.head_sent:
            self.answer_error(RequestTooLarge(limit))
            return
        self.flush()
        self.finish(413, keep=False)
        self.outbox.close(self.client.transport)

    def write_body(self, chunk: bytes) -> None:
        assert self.conn is not None
        if self.tee is not None:
            self.tee.add(chunk)
        if self.message.chunked:
            self.outbox.write(self.conn.transport, b"%x\r\n%b\r\n" % (len(chunk), chunk))
        else:
            self.outbox.write(self.conn.transport, chunk)

    def request_done(self) -> None:
        if self.conn is not None and not self.finished and self.message.chunked:
            self.outbox.write(self.conn.transport, b"0\r\n\r\n")
        if self.conn is not None and self.tee is not None:
            self.teed()

    def teed(self) -> None:
        """The whole request body went out: the mirror copies waiting for it get it."""
        tee, self.tee = self.tee, None
        if tee is not None and not self.finished:
            tee.done()

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
            self.error = error
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
                self.again_at(pick.endpoint.key)
                return
        self.answer_error(error)

    def timer(self, seconds: float, attempt: int | None) -> None:
        """Call `expired(attempt)` in `seconds` unless the exchange ends first."""
        if self.timers is None:
            self.timers = []
        self.timers.append(self.loop.call_later(seconds, self.expired, attempt))

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

    def again_on_status(self, conn: EndpointSide, status: int) -> bool:
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
        self.again_at(pick.endpoint.key)
        return True

"""PooledTransport's asyncio engine: connections to endpoints as asyncio Protocols.

Why it exists: on asyncio, anyio's streams cost a cancel scope, a task switch and a future per
read and per write, and forwarding one request through them took 96 to 141 µs of CPU here
against nginx's 20 to 26 µs for the whole proxying (docs/benchmarks.md). With Protocol
callbacks a request costs one write, the parser's callbacks and one future (the response
head); timeouts are one self-re-arming timer per connection rather than one per wait. Trio has
no Protocols: there `PooledTransport` runs its anyio stream engine, with the same semantics
(the conformance suite runs against both).

Semantics are PooledTransport's (see `kroute.transport.pooled`): a bounded number of requests
in flight per endpoint (waiters queue first come, first served, each a future: no work per
waiter), idle connections reused most-recent-first (`kroute.transport.idle`), timeouts per
phase, bodies streamed both ways with flow control (reading pauses while the caller has not
taken `PAUSE_ABOVE` bytes; streamed request bodies wait for the socket to drain), a reused
connection found closed retried once on a fresh one when that is safe, malformed responses as
`UpstreamProtocolError`, and the connection handed over after a 101.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterable

import anyio
import anyio.abc
import httptools

from kroute.errors import (
    UpstreamClosed,
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from kroute.transport.base import (
    ForwardRequest,
    ForwardResponse,
    Headers,
    Target,
    Timeouts,
    request_head,
)
from kroute.transport.idle import IdleConnections
from kroute.transport.proxy import IDEMPOTENT

#: Response bytes read but not yet taken by the caller above which reading pauses.
PAUSE_ABOVE = 256 * 1024


class _Stale(Exception):
    """A reused connection closed before any response byte: the endpoint closed it idle."""


class _Slot:
    """Requests in flight to one endpoint, at most `limit`; the rest wait in line."""

    __slots__ = ("busy", "limit", "waiters")

    def __init__(self, limit: int) -> None:
        self.busy = 0
        self.limit = limit
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def acquire(self, loop: asyncio.AbstractEventLoop, timeout: float, name: str) -> None:
        if self.busy < self.limit:
            self.busy += 1
            return
        waiter: asyncio.Future[None] = loop.create_future()
        self.waiters.append(waiter)
        expiry = loop.call_later(timeout, _expire, waiter, name)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.release()  # handed a slot, then cancelled: pass it on
            waiter.cancel()
            raise
        finally:
            expiry.cancel()

    def release(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes straight to the next in line
                return
        self.busy -= 1


def _expire(waiter: asyncio.Future[None], name: str) -> None:
    if not waiter.done():
        waiter.set_exception(UpstreamTimeout("pool", endpoint=name, request_sent=False))


class _Connection(asyncio.Protocol):
    """One connection to an endpoint and the state of the response being read on it."""

    __slots__ = (
        "buffered", "chunks", "closed", "done", "drain", "error", "head_done", "headers",
        "idle_since", "interim", "keep_alive", "loop", "name", "no_body", "parser", "read_limit",
        "reading_paused", "reason", "received", "requests", "rest", "reused", "since", "target",
        "timer", "transport", "waiter", "write_paused",
    )  # fmt: skip

    def __init__(self, loop: asyncio.AbstractEventLoop, target: Target, read_limit: float) -> None:
        self.loop = loop
        self.target = target
        self.name = str(target)
        self.read_limit = read_limit
        self.since = 0.0
        self.transport: asyncio.Transport
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.requests = 0
        self.idle_since = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.drain: asyncio.Future[None] | None = None
        self.write_paused = False
        self.reading_paused = False
        self.chunks: collections.deque[bytes] = collections.deque()
        self.begin(reused=False, no_body=False)

    def begin(self, *, reused: bool, no_body: bool) -> None:
        """Forget the last response: a new request goes out on this connection."""
        self.reused = reused
        self.no_body = no_body  # a HEAD request: the head is the whole response
        self.received = False
        self.reason = b""
        self.headers: Headers = []
        self.interim = False
        self.head_done = False
        self.done = False
        self.keep_alive = False
        self.chunks.clear()
        self.buffered = 0
        self.error: UpstreamError | None = None
        self.rest: bytes | None = None  # after a 101: the connection is a byte pipe

    # -- waiting, woken by the callbacks ----------------------------------------------------

    async def wait(self, *, timed: bool = True) -> None:
        """Until the next event on the connection. `timed`: the read timeout (the longest
        silence while someone waits) runs from now."""
        loop = self.loop
        waiter = self.waiter = loop.create_future()
        if timed:
            self.since = loop.time()
            if self.timer is None:
                self.timer = loop.call_at(self.since + self.read_limit, self.check_timeout)
        try:
            await waiter
        except BaseException:
            self.waiter = None
            if timed:  # cancelled mid-exchange: what is on the wire is unknown, so it goes
                self.abort()
            raise

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def check_timeout(self) -> None:
        """The read timer: armed by a wait, re-armed while someone waits, so that a stream of
        requests on a keep-alive connection sets no timer of its own."""
        self.timer = None
        if self.waiter is None or self.closed or self.rest is not None:
            return  # nobody waits: the next wait arms it again
        due = self.since + self.read_limit
        if self.loop.time() >= due:
            self.fail(UpstreamTimeout("read", endpoint=self.name))
        else:
            self.timer = self.loop.call_at(due, self.check_timeout)

    async def drained(self, limit: float | None) -> None:
        """Until the socket takes more bytes (`pause_writing` was called)."""
        loop = self.loop
        while self.write_paused and not self.closed:
            drain = self.drain = loop.create_future()
            expiry = None
            if limit is not None:
                expiry = loop.call_later(limit, self.write_timeout, drain)
            try:
                await drain
            except BaseException:
                self.abort()
                raise
            finally:
                if expiry is not None:
                    expiry.cancel()
        if self.error is not None:
            raise self.error
        if self.closed:
            raise UpstreamClosed("closed while the request was sent", endpoint=self.name)

    def write_timeout(self, drain: asyncio.Future[None]) -> None:
        if not drain.done():
            self.fail(UpstreamTimeout("write", endpoint=self.name))
            drain.set_result(None)

    def fail(self, error: UpstreamError) -> None:
        if self.error is None:
            self.error = error
        self.abort()
        self.wake()

    def abort(self) -> None:
        self.closed = True
        self.transport.abort()

    def close(self) -> None:
        self.closed = True
        self.transport.close()

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.rest is not None:  # upgraded: raw bytes for the stream
            self.chunks.append(data)
            self.wake()
            return
        if self.done:  # bytes after the response, asked for by nobody: out of step, so it goes
            self.close()
            return
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self.rest = data[upgrade.args[0] :]
        except httptools.HttpParserError as exc:
            self.fail(UpstreamProtocolError(f"invalid response: {exc}", endpoint=self.name))
            return
        if self.buffered > PAUSE_ABOVE and not self.reading_paused:
            self.reading_paused = True
            self.transport.pause_reading()
        self.wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if not (self.done or self.error is not None or self.rest is not None):
            if self.head_done and self.until_close():
                self.done = True  # a body delimited by the end of the connection (RFC 9112 6.3)
            elif self.reused and not self.received:
                self.error = UpstreamClosed("closed while idle", endpoint=self.name)
            elif self.head_done:
                self.error = UpstreamClosed("closed in the middle of the response body",
                                            endpoint=self.name)  # fmt: skip
            else:
                self.error = UpstreamClosed("closed before the response head", endpoint=self.name)
        self.wake()
        drain = self.drain
        if drain is not None and not drain.done():
            drain.set_result(None)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        drain = self.drain
        if drain is not None and not drain.done():
            drain.set_result(None)

    def until_close(self) -> bool:
        """The body has neither Content-Length nor chunked framing: it ends with the
        connection (RFC 9112 section 6.3, rule 8)."""
        names = {name.lower() for name, _ in self.headers}
        return b"content-length" not in names and b"transfer-encoding" not in names

    # -- llhttp callbacks --------------------------------------------------------------------

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self.interim = True  # 100 Continue and the like: the real response follows
            return
        self.head_done = True
        self.keep_alive = bool(self.parser.should_keep_alive())
        if self.no_body or status in (204, 304):
            self.done = True

    def on_body(self, body: bytes) -> None:
        if not self.done:
            self.chunks.append(body)
            self.buffered += len(body)

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            self.reason, self.headers = b"", []
            return
        self.done = True


class ProtocolEngine:
    """Requests over `_Connection`s: what `PooledTransport.send` does on asyncio."""

    def __init__(
        self,
        *,
        max_connections: int,
        max_idle: int,
        keepalive_expiry: float,
        max_requests: int,
        timeouts: Timeouts,
    ) -> None:
        self.max_connections = max_connections
        self.max_requests = max_requests
        self.timeouts = timeouts
        self.idle: IdleConnections[Target, _Connection] = IdleConnections(
            max_idle, keepalive_expiry
        )
        self.slots: dict[Target, _Slot] = {}

    def close(self) -> None:
        self.idle.close()

    async def send(
        self, loop: asyncio.AbstractEventLoop, target: Target, request: ForwardRequest
    ) -> ForwardResponse:
        slot = self.slots.get(target)
        if slot is None:
            slot = self.slots[target] = _Slot(self.max_connections)
        if slot.busy < slot.limit:  # (a free slot is taken without a call)
            slot.busy += 1
        else:
            await slot.acquire(loop, self.timeouts.pool, str(target))
        try:
            return await self._exchange(loop, slot, target, request)
        except BaseException:
            slot.release()
            raise

    async def _exchange(
        self, loop: asyncio.AbstractEventLoop, slot: _Slot, target: Target,
        request: ForwardRequest,
    ) -> ForwardResponse:  # fmt: skip
        """One request on a pooled connection (the request is written, then the head is
        awaited, in this one coroutine: it is most of the CPU of a request)."""
        fresh_only = False
        while True:
            conn = None if fresh_only else self.idle.checkout(target, loop.time())
            reused = conn is not None
            if conn is None:
                conn = await self._connect(loop, target)
            conn.begin(reused=reused, no_body=request.method == "HEAD")
            try:
                body = request.body
                if isinstance(body, bytes):
                    conn.transport.write(request_head(request) + body)
                else:
                    conn.transport.write(request_head(request))
                    await self._stream_body(conn, body, chunked=request.content_length is None)
                while not conn.head_done:
                    error = conn.error
                    if error is not None:
                        if (
                            conn.reused
                            and not conn.received
                            and not isinstance(error, UpstreamTimeout)
                        ):
                            raise _Stale
                        raise error
                    await conn.wait()
                if conn.error is not None and conn.rest is None and not conn.done:
                    raise conn.error  # the same read that completed the head broke the body
            except _Stale:
                conn.abort()
                if request.replayable and request.method in IDEMPOTENT:
                    fresh_only = True
                    continue
                raise UpstreamClosed(
                    "connection closed by the endpoint while the request was sent",
                    endpoint=str(target),
                ) from None
            except BaseException:
                conn.abort()
                raise
            return self._response(slot, conn)

    async def _connect(self, loop: asyncio.AbstractEventLoop, target: Target) -> _Connection:
        name = str(target)

        def made() -> _Connection:
            return _Connection(loop, target, self.timeouts.read)

        if target.tls is None:
            connecting = loop.create_connection(made, target.host, target.port)
        else:
            connecting = loop.create_connection(
                made, target.host, target.port, ssl=target.tls,
                server_hostname=target.server_name or target.host,
            )  # fmt: skip
        try:
            _, conn = await asyncio.wait_for(connecting, self.timeouts.connect)
        except TimeoutError:
            raise UpstreamTimeout("connect", endpoint=name, request_sent=False) from None
        except OSError as exc:  # (ssl.SSLError included: a failed verification)
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise UpstreamConnectError(reason, endpoint=name) from None
        return conn

    async def _stream_body(
        self, conn: _Connection, body: AsyncIterable[bytes], *, chunked: bool
    ) -> None:
        write = conn.transport.write
        async for chunk in body:
            if conn.closed:
                break
            if chunk:
                write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
                if conn.write_paused:
                    await conn.drained(self.timeouts.write)
        if conn.error is not None:
            raise conn.error
        if conn.closed:
            raise UpstreamClosed("closed while the request was sent", endpoint=conn.name)
        if chunked:
            write(b"0\r\n\r\n")

    def _response(self, slot: _Slot, conn: _Connection) -> ForwardResponse:
        status = conn.parser.get_status_code()
        if conn.rest is not None:  # 101: the connection leaves the pool
            slot.release()
            if conn.rest:
                conn.chunks.appendleft(conn.rest)
            return ForwardResponse(status, conn.reason, conn.headers, _Body(self, slot, conn),
                                   upgraded=_Upgraded(conn))  # fmt: skip
        conn.requests += 1
        body = _Body(self, slot, conn)
        return ForwardResponse(status, conn.reason, conn.headers, body, close=body.aclose)

    def give_back(self, slot: _Slot, conn: _Connection, reuse: bool) -> None:
        slot.release()
        if not reuse or conn.closed or conn.requests >= self.max_requests:
            conn.close()
            return
        if conn.no_body:  # llhttp still expects the body a HEAD response announced
            conn.parser = httptools.HttpResponseParser(conn)
        if conn.reading_paused:
            conn.reading_paused = False
            conn.transport.resume_reading()
        self.idle.give_back(conn.target, conn, conn.loop.time())


class _Body:
    """A response body read as the caller consumes it; gives the connection back at the end."""

    __slots__ = ("conn", "engine", "released", "slot")

    def __init__(self, engine: ProtocolEngine, slot: _Slot, conn: _Connection) -> None:
        self.engine = engine
        self.slot = slot
        self.conn = conn
        # An upgraded response has no body (its bytes belong to the stream).
        self.released = conn.rest is not None

    def __aiter__(self) -> _Body:
        return self

    async def __anext__(self) -> bytes:
        conn = self.conn
        while not self.released:
            if conn.chunks:
                chunk = conn.chunks.popleft()
                conn.buffered -= len(chunk)
                if conn.reading_paused and conn.buffered <= PAUSE_ABOVE // 2:
                    conn.reading_paused = False
                    conn.transport.resume_reading()
                return chunk
            if conn.done:
                self.release(reuse=conn.keep_alive)
                break
            if conn.error is not None:
                self.release(reuse=False)
                raise conn.error
            try:
                await conn.wait()
            except BaseException:
                self.release(reuse=False)
                raise
        raise StopAsyncIteration

    async def aclose(self) -> None:
        self.release(reuse=False)

    def release(self, *, reuse: bool) -> None:
        if not self.released:
            self.released = True
            self.engine.give_back(self.slot, self.conn, reuse)


class _Upgraded(anyio.abc.ByteStream):
    """The connection after a 101, as an anyio byte stream (no read timeout: a WebSocket may
    stay quiet for as long as its peers like)."""

    def __init__(self, conn: _Connection) -> None:
        self._conn = conn
        self._closed = False

    async def receive(self, max_bytes: int = 65536) -> bytes:
        conn = self._conn
        while True:
            if self._closed:
                raise anyio.ClosedResourceError
            if conn.chunks:
                data = conn.chunks.popleft()
                if len(data) > max_bytes:
                    conn.chunks.appendleft(data[max_bytes:])
                    data = data[:max_bytes]
                return data
            if conn.closed:
                raise anyio.EndOfStream
            await conn.wait(timed=False)

    async def send(self, item: bytes) -> None:
        conn = self._conn
        if self._closed:
            raise anyio.ClosedResourceError
        if conn.closed:
            raise anyio.BrokenResourceError
        conn.transport.write(item)
        if conn.write_paused:
            try:
                await conn.drained(None)
            except UpstreamError as exc:
                raise anyio.BrokenResourceError from exc

    async def send_eof(self) -> None:
        if not self._conn.closed:
            self._conn.transport.write_eof()

    async def aclose(self) -> None:
        self._closed = True
        self._conn.close()

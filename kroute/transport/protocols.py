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

import httptools

from kroute.errors import (
    UpstreamClosed,
    UpstreamConnectError,
    UpstreamTimeout,
)
from kroute.transport.base import (
    ForwardRequest,
    ForwardResponse,
    Target,
    Timeouts,
    after_stale,
    request_head,
)
from kroute.transport.connection import PAUSE_ABOVE, EndpointConnection, UpgradedStream
from kroute.transport.idle import IdleConnections


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


class ProtocolEngine:
    """Requests over `EndpointConnection`s: what `PooledTransport.send` does on asyncio."""

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
        self.idle: IdleConnections[Target, EndpointConnection] = IdleConnections(
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
            conn.begin(reused=reused, method=request.method)
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
            except BaseException:
                conn.abort()
                raise
            else:
                return self._response(slot, conn)
            after_stale(request, target)  # (raises when it may not go again)
            fresh_only = True

    async def _connect(self, loop: asyncio.AbstractEventLoop, target: Target) -> EndpointConnection:
        name = str(target)

        def made() -> EndpointConnection:
            return EndpointConnection(loop, target, self.timeouts.read)

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
        self, conn: EndpointConnection, body: AsyncIterable[bytes], *, chunked: bool
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

    def _response(self, slot: _Slot, conn: EndpointConnection) -> ForwardResponse:
        status = conn.parser.get_status_code()
        if conn.rest is not None:  # 101: the connection leaves the pool
            slot.release()
            if conn.rest:
                conn.chunks.appendleft(conn.rest)
            return ForwardResponse(status, conn.reason, conn.headers, _Body(self, slot, conn),
                                   upgraded=UpgradedStream(conn))  # fmt: skip
        conn.requests += 1
        body = _Body(self, slot, conn)
        return ForwardResponse(status, conn.reason, conn.headers, body, close=body.aclose)

    def give_back(self, slot: _Slot, conn: EndpointConnection, reuse: bool) -> None:
        slot.release()
        if not reuse or conn.closed or conn.requests >= self.max_requests:
            conn.close()
            return
        if conn.method == "HEAD":  # llhttp still expects the body a HEAD response announced
            conn.parser = httptools.HttpResponseParser(conn)
        if conn.reading_paused:
            conn.reading_paused = False
            conn.transport.resume_reading()
        self.idle.give_back(conn.target, conn, conn.loop.time())


class _Body:
    """A response body read as the caller consumes it; gives the connection back at the end."""

    __slots__ = ("conn", "engine", "released", "slot")

    def __init__(self, engine: ProtocolEngine, slot: _Slot, conn: EndpointConnection) -> None:
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

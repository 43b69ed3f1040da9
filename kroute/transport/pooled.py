"""PooledTransport: the default forwarding transport, built for a proxy.

anyio streams (asyncio or trio), llhttp through httptools to parse responses (about 35x cheaper
than h11 here), and a pool per endpoint designed for forwarding:
- bounded: at most `max_connections` requests in flight per endpoint; a request waits for a slot
  at most `Timeouts.pool` (then 503). Waiting is an anyio semaphore (the stream engine) or a
  line of futures (the Protocol engine): no work per waiter;
- idle connections are reused most-recent-first (a LIFO stack, so the warm ones stay warm and
  the cold ones expire), at most `max_idle` of them (as many as `max_connections` by default:
  fewer makes a steady load above it close and reopen connections all the time), each for
  `keepalive_expiry` seconds and `max_requests` requests;
- a reused connection that the endpoint closed while it was idle (it fails before any response
  byte arrives) is retried once on a fresh connection when the method is idempotent and the
  body can be sent again; other requests fail (502) rather than risk a double effect, so keep
  `keepalive_expiry` below the endpoints' own idle timeout;
- request heads go out with the body in one write when the body is bytes; bodies given as async
  iterables stream out (Content-Length when known, chunked otherwise) and responses stream in,
  both in constant memory;
- timeouts per phase: connect, each write, each read (between bytes), pool;
- a malformed response (bad status line, Content-Length with Transfer-Encoding, bad chunking)
  is an `UpstreamProtocolError` (502), never passed on;
- `ForwardRequest.upgrade` asks for a protocol switch; a 101 hands the raw connection over as
  `ForwardResponse.upgraded` (it leaves the pool, and no longer counts towards `max_connections`);
- TLS to endpoints with the `ssl.SSLContext` of the `Target` (verification settings included).

Two engines move the bytes, with the same semantics: on asyncio (uvloop included) connections
are asyncio Protocols (`kroute.transport.protocols`: measured 3x to 5x less CPU per request,
docs/benchmarks.md); on trio, or with `fast_path=False`, they are anyio streams (this module).
"""

from __future__ import annotations

import asyncio
import collections
import select
from collections.abc import AsyncIterable

import anyio
import anyio.abc
import attrs
import httptools

from kroute.errors import (
    UpstreamClosed,
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from kroute.streams import Prefixed
from kroute.transport.base import (
    ForwardRequest,
    ForwardResponse,
    Headers,
    Target,
    Timeouts,
    after_stale,
    request_head,
)
from kroute.transport.http1 import bodiless, close_delimited, interim
from kroute.transport.protocols import ProtocolEngine


class _Stale(Exception):
    """A reused connection failed before the response began: the endpoint closed it idle."""


@attrs.define(eq=False)
class _Connection:
    stream: anyio.abc.ByteStream
    created: float
    idle_since: float = 0.0
    requests: int = 0


class _Slot:
    """The connections of one endpoint."""

    def __init__(self, limit: int) -> None:
        self.semaphore = anyio.Semaphore(limit)
        self.idle: list[_Connection] = []


class _Head:
    """httptools callbacks: collects the head and the body chunks of the current message."""

    def __init__(self) -> None:
        self.parser: httptools.HttpResponseParser
        self.reset()

    def reset(self) -> None:
        self.keep_alive = False
        self.reason = b""
        self.headers: Headers = []
        self.head_done = False
        self.done = False
        self.chunks: collections.deque[bytes] = collections.deque()

    def on_status(self, status: bytes) -> None:
        self.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.head_done = True
        # llhttp knows keep-alive from the head; after the message completes it resets.
        self.keep_alive = bool(self.parser.should_keep_alive())

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        self.done = True


class PooledTransport:
    """The default transport (see the module docstring)."""

    def __init__(
        self,
        *,
        max_connections: int = 100,
        max_idle: int = 100,
        keepalive_expiry: float = 60.0,
        max_requests: int = 10_000,
        timeouts: Timeouts = Timeouts(),
        read_size: int = 64 * 1024,
        fast_path: bool = True,
    ) -> None:
        self.max_connections = max_connections
        self.max_idle = max_idle
        self.keepalive_expiry = keepalive_expiry
        self.max_requests = max_requests
        self.timeouts = timeouts
        self.read_size = read_size
        self._slots: dict[Target, _Slot] = {}
        #: The asyncio engine (None: anyio streams everywhere).
        self._protocols = (
            ProtocolEngine(
                max_connections=max_connections, max_idle=max_idle,
                keepalive_expiry=keepalive_expiry, max_requests=max_requests, timeouts=timeouts,
            )
            if fast_path
            else None
        )  # fmt: skip

    def idle_connections(self, target: Target) -> list[object]:
        """The idle connections to `target`, least recently used first (for inspection)."""
        if self._protocols is not None and _asyncio_loop() is not None:
            return list(self._protocols.idle.stack(target))
        slot = self._slots.get(target)
        return list(slot.idle) if slot is not None else []

    async def aclose(self) -> None:
        """Close every idle connection (busy ones close when their responses end)."""
        if self._protocols is not None:
            self._protocols.close()
        for slot in self._slots.values():
            while slot.idle:
                await anyio.aclose_forcefully(slot.idle.pop().stream)

    async def send(self, target: Target, request: ForwardRequest) -> ForwardResponse:
        if self._protocols is not None:
            loop = _asyncio_loop()
            if loop is not None:
                return await self._protocols.send(loop, target, request)
        slot = self._slots.get(target)
        if slot is None:
            slot = self._slots[target] = _Slot(self.max_connections)
        try:
            # A free slot is taken without a cancel scope (one fewer per request, measured).
            slot.semaphore.acquire_nowait()
        except anyio.WouldBlock:
            try:
                with anyio.fail_after(self.timeouts.pool):
                    await slot.semaphore.acquire()
            except TimeoutError:
                raise UpstreamTimeout("pool", endpoint=str(target), request_sent=False) from None
        try:
            return await self._exchange(slot, target, request)
        except BaseException:
            slot.semaphore.release()
            raise

    async def _checkout(self, slot: _Slot) -> _Connection | None:
        now = anyio.current_time()
        while slot.idle:
            conn = slot.idle.pop()
            if now - conn.idle_since < self.keepalive_expiry and not _readable(conn.stream):
                return conn
            await anyio.aclose_forcefully(conn.stream)  # expired, closed or out of step
        return None

    async def _connect(self, target: Target) -> _Connection:
        try:
            with anyio.fail_after(self.timeouts.connect):
                stream: anyio.abc.ByteStream
                if target.tls is None:
                    stream = await anyio.connect_tcp(target.host, target.port)
                else:
                    stream = await anyio.connect_tcp(
                        target.host, target.port, tls=True, ssl_context=target.tls,
                        tls_hostname=target.server_name or target.host,
                    )  # fmt: skip
        except TimeoutError:
            raise UpstreamTimeout("connect", endpoint=str(target), request_sent=False) from None
        except OSError as exc:
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise UpstreamConnectError(reason, endpoint=str(target)) from None
        return _Connection(stream, created=anyio.current_time())

    async def _exchange(
        self, slot: _Slot, target: Target, request: ForwardRequest
    ) -> ForwardResponse:
        fresh_only = False
        while True:
            conn = None if fresh_only else await self._checkout(slot)
            reused = conn is not None
            if conn is None:
                conn = await self._connect(target)
            try:
                await self._write(conn, target, request, reused=reused)
                return await self._read_head(slot, conn, target, request, reused=reused)
            except _Stale:
                await anyio.aclose_forcefully(conn.stream)
            except BaseException:
                await anyio.aclose_forcefully(conn.stream)
                raise
            after_stale(request, target)  # (raises when it may not go again)
            fresh_only = True

    async def _write(
        self, conn: _Connection, target: Target, request: ForwardRequest, *, reused: bool
    ) -> None:
        head = request_head(request)
        try:
            if isinstance(request.body, bytes):
                await self._send(conn, head + request.body)
                return
            await self._send(conn, head)
            reused = False  # bytes are out: from here on a failure is not a stale connection
            await self._stream_body(conn, request.body, chunked=request.content_length is None)
        except TimeoutError:  # before OSError, of which it is a subclass
            raise UpstreamTimeout("write", endpoint=str(target)) from None
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            if reused:
                raise _Stale from None
            raise UpstreamClosed(f"write failed: {exc}", endpoint=str(target)) from None

    async def _send(self, conn: _Connection, data: bytes) -> None:
        with anyio.fail_after(self.timeouts.write):
            await conn.stream.send(data)

    async def _stream_body(
        self, conn: _Connection, body: AsyncIterable[bytes], *, chunked: bool
    ) -> None:
        async for chunk in body:
            if not chunk:
                continue
            await self._send(conn, b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
        if chunked:
            await self._send(conn, b"0\r\n\r\n")

    async def _receive(self, conn: _Connection, target: Target) -> bytes:
        try:
            with anyio.fail_after(self.timeouts.read):
                return await conn.stream.receive(self.read_size)
        except TimeoutError:
            raise UpstreamTimeout("read", endpoint=str(target)) from None
        except (anyio.BrokenResourceError, OSError) as exc:
            raise UpstreamClosed(f"read failed: {exc}", endpoint=str(target)) from None

    async def _read_head(
        self,
        slot: _Slot,
        conn: _Connection,
        target: Target,
        request: ForwardRequest,
        *,
        reused: bool,
    ) -> ForwardResponse:
        head = _Head()
        parser = head.parser = httptools.HttpResponseParser(head)
        got_any = False
        while True:
            try:
                data = await self._receive(conn, target)
            except anyio.EndOfStream:
                if reused and not got_any:
                    raise _Stale from None
                raise UpstreamClosed(
                    "closed before the response head", endpoint=str(target)
                ) from None
            except UpstreamClosed:
                if reused and not got_any:
                    raise _Stale from None
                raise
            got_any = True
            try:
                parser.feed_data(data)
            except httptools.HttpParserUpgrade as upgrade:
                return self._upgraded(slot, conn, head, parser, data[upgrade.args[0] :])
            except httptools.HttpParserError as exc:
                raise UpstreamProtocolError(
                    f"invalid response: {exc}", endpoint=str(target)
                ) from None
            if head.head_done:
                status = parser.get_status_code()
                if interim(status) and head.done:
                    head.reset()  # an interim response (100 Continue): the real one follows
                    continue
                break
        status = parser.get_status_code()
        if bodiless(request.method, status):
            head.done = True
            head.chunks.clear()
        body = _Body(
            self, slot, conn, parser, head, target,
            close_delimited=close_delimited({name.lower() for name, _ in head.headers}),
            keep_alive=head.keep_alive,
        )  # fmt: skip
        conn.requests += 1
        return ForwardResponse(status, head.reason, head.headers, body, close=body.aclose)

    def _upgraded(
        self, slot: _Slot, conn: _Connection, head: _Head, parser: httptools.HttpResponseParser,
        rest: bytes,
    ) -> ForwardResponse:  # fmt: skip
        slot.semaphore.release()  # the connection leaves the pool
        stream: anyio.abc.ByteStream = conn.stream
        if rest:
            stream = Prefixed(stream, rest)
        empty = _Empty()
        return ForwardResponse(
            parser.get_status_code(), head.reason, head.headers, empty, upgraded=stream
        )

    async def _give_back(self, slot: _Slot, conn: _Connection, reuse: bool) -> None:
        """Return a connection to the idle stack, or close it."""
        if not reuse or conn.requests >= self.max_requests:
            await anyio.aclose_forcefully(conn.stream)
            return
        conn.idle_since = anyio.current_time()
        slot.idle.append(conn)
        if len(slot.idle) > self.max_idle:
            await anyio.aclose_forcefully(slot.idle.pop(0).stream)  # the least recently used


class _Body:
    """A response body read as it is consumed; gives its connection back when done."""

    def __init__(
        self, transport: PooledTransport, slot: _Slot, conn: _Connection,
        parser: httptools.HttpResponseParser, head: _Head, target: Target, *,
        close_delimited: bool, keep_alive: bool,
    ) -> None:  # fmt: skip
        self._transport = transport
        self._slot = slot
        self._conn = conn
        self._parser = parser
        self._head = head
        self._target = target
        self._close_delimited = close_delimited
        self._keep_alive = keep_alive
        self._released = False

    def __aiter__(self) -> _Body:
        return self

    async def __anext__(self) -> bytes:
        head = self._head
        try:
            while True:
                if head.chunks:
                    return head.chunks.popleft()
                if head.done or self._released:
                    await self._release(reuse=self._keep_alive and head.done)
                    raise StopAsyncIteration
                try:
                    data = await self._transport._receive(self._conn, self._target)
                except anyio.EndOfStream:
                    if self._close_delimited:
                        head.done = True
                        self._keep_alive = False
                        continue
                    raise UpstreamClosed(
                        "closed in the middle of the response body", endpoint=str(self._target)
                    ) from None
                try:
                    self._parser.feed_data(data)
                except httptools.HttpParserError as exc:
                    raise UpstreamProtocolError(
                        f"invalid response body: {exc}", endpoint=str(self._target)
                    ) from None
        except StopAsyncIteration:
            raise
        except BaseException:
            await self._release(reuse=False)
            raise

    async def aclose(self) -> None:
        await self._release(reuse=False)

    async def _release(self, *, reuse: bool) -> None:
        if self._released:
            return
        self._released = True
        try:
            await self._transport._give_back(self._slot, self._conn, reuse)
        finally:
            self._slot.semaphore.release()


class _Empty:
    def __aiter__(self) -> _Empty:
        return self

    async def __anext__(self) -> bytes:
        raise StopAsyncIteration


def _readable(stream: anyio.abc.ByteStream) -> bool:
    """Whether an idle connection has something to read: the endpoint closed it, or sent bytes
    nobody asked for, which must not be taken as the next answer (as httpcore checks too)."""
    sock = stream.extra(anyio.abc.SocketAttribute.raw_socket, None)
    if sock is None:
        return False
    return bool(select.select([sock], [], [], 0)[0])


def _asyncio_loop() -> asyncio.AbstractEventLoop | None:
    """The running asyncio loop; None under trio."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None

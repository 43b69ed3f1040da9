"""One connection to an endpoint as an asyncio Protocol, for PooledTransport's asyncio engine
(`kroute.transport.protocols`): the state of the response being read on it, filled by llhttp's
callbacks, a future to wait on for the next event, one self-re-arming read timer, flow control
both ways; and, after a 101, the connection as an anyio byte stream (`UpgradedStream`).
"""

from __future__ import annotations

import asyncio
import collections

import anyio
import anyio.abc
import httptools

from kroute.errors import UpstreamClosed, UpstreamError, UpstreamProtocolError, UpstreamTimeout
from kroute.transport.base import Headers, Target
from kroute.transport.http1 import bodiless, close_delimited, interim

#: Response bytes read but not yet taken by the caller above which reading pauses.
PAUSE_ABOVE = 256 * 1024


class EndpointConnection(asyncio.Protocol):
    """One connection to an endpoint and the state of the response being read on it."""

    __slots__ = (
        "buffered", "chunks", "closed", "done", "drain", "error", "head_done", "headers",
        "idle_since", "interim", "keep_alive", "loop", "method", "name", "parser", "read_limit",
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
        self.begin(reused=False, method="")

    def begin(self, *, reused: bool, method: str) -> None:
        """Forget the last response: a new request goes out on this connection."""
        self.reused = reused
        self.method = method  # (HEAD: the head is the whole response)
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
        """The body ends with the connection (`http1.close_delimited`)."""
        return close_delimited({name.lower() for name, _ in self.headers})

    # -- llhttp callbacks --------------------------------------------------------------------

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if interim(status):  # 100 Continue and the like: the real response follows
            self.interim = True
            return
        self.head_done = True
        self.keep_alive = bool(self.parser.should_keep_alive())
        if bodiless(self.method, status):
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


class UpgradedStream(anyio.abc.ByteStream):
    """The connection after a 101, as an anyio byte stream (no read timeout: a WebSocket may
    stay quiet for as long as its peers like)."""

    def __init__(self, conn: EndpointConnection) -> None:
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

"""The conformance suite every Transport must pass: ours, or one a user writes.

Use it from a pytest module by importing its tests and providing a `transport` fixture, and a
`slow_transport` one with the timeouts of `SLOW_TIMEOUTS` for the timeout tests:

    from kroute.transport.conformance import *  # noqa: F403

    @pytest.fixture
    async def transport():
        t = MyTransport()
        yield t
        await t.aclose()

Tests run on the anyio plugin (mark the module with `pytestmark = pytest.mark.anyio`) against
`Backend`, a real HTTP/1.1 server on 127.0.0.1 whose paths misbehave on purpose.
"""

from __future__ import annotations

import contextlib
import gc
import json
import socket
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import anyio.abc
import httptools
import pytest

from kroute.errors import (
    UpstreamClosed,
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from kroute.transport.base import ForwardRequest, Target, Timeouts, Transport


class _RequestHead:
    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = 0
        self.digest = 0
        self.head_done = False
        self.done = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.head_done = True

    def on_body(self, body: bytes) -> None:
        self.body += len(body)
        self.digest = (self.digest * 31 + sum(body[::4096])) % 1_000_003

    def on_message_complete(self) -> None:
        self.done = True


class Backend:
    """An HTTP/1.1 server for the suite. Paths:

    /echo            200, JSON: method, target, headers, body length
    /fixed?size=N    N bytes with Content-Length      /chunked?n=K&size=N  K chunks of N bytes
    /slow-head       never answers                    /slow-body  head, then nothing
    /close-mid       Content-Length 100, 10 bytes, close
    /bad-status      garbage status line              /cl-te      Content-Length and chunked
    /bad-chunk       invalid chunk size               /close      answers with Connection: close
    /then-drop       answers (keep-alive), then closes the idle connection
    /then-extra      answers, then sends a second response nobody asked for
    /drop-request    reads the request, then closes without answering
    /no-read...      never reads the request body
    /ws              101 Switching Protocols, then echoes bytes
    Every request is counted per path in `hits`; `connections` counts accepted connections.
    """

    def __init__(self, address: str = "127.0.0.1", port: int = 0) -> None:
        """On `address`, and `port` (0: a free one; another backend's port on another
        loopback address works, as pods of one EndpointSlice share a port)."""
        self.address = address
        self.port = port
        self.hits: dict[str, int] = {}
        self.connections = 0

    @property
    def target(self) -> Target:
        return Target(self.address, self.port)

    async def serve(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        listening = anyio.create_tcp_listener(local_host=self.address, local_port=self.port)
        async with await listening as lst:
            self.port = lst.extra(anyio.abc.SocketAttribute.local_port)
            task_status.started()
            await lst.serve(self._connection)

    async def _connection(self, stream: anyio.abc.SocketStream) -> None:
        self.connections += 1
        async with stream:
            try:
                while await self._one(stream):
                    pass
            except (anyio.EndOfStream, anyio.BrokenResourceError, httptools.HttpParserError):
                pass

    async def _one(self, stream: anyio.abc.SocketStream) -> bool:
        head = _RequestHead()
        parser = httptools.HttpRequestParser(head)
        while not head.done:
            if head.head_done and head.url.startswith(b"/no-read"):
                await anyio.sleep_forever()  # never reads the request body
            data = await stream.receive()
            try:
                parser.feed_data(data)
            except httptools.HttpParserUpgrade:
                break
        url = urlsplit(head.url.decode())
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        self.hits[url.path] = self.hits.get(url.path, 0) + 1
        return await self._answer(stream, url.path, query, head, parser)

    async def _answer(self, stream: anyio.abc.SocketStream, path: str, query: dict[str, str],
                      head: _RequestHead, parser: httptools.HttpRequestParser) -> bool:  # fmt: skip
        if path == "/echo":
            body = json.dumps({
                "method": parser.get_method().decode(), "target": head.url.decode(),
                "headers": [[n.decode(), v.decode()] for n, v in head.headers],
                "length": head.body, "digest": head.digest,
            }).encode()  # fmt: skip
            await stream.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                              b"Content-Length: %d\r\n\r\n%b" % (len(body), body))  # fmt: skip
        elif path == "/fixed":
            size = int(query.get("size", "10"))
            await stream.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
            if parser.get_method() == b"HEAD":
                return True  # the head announces the body it does not carry (RFC 9110 9.3.2)
            while size:
                step = min(size, 256 * 1024)
                await stream.send(b"x" * step)
                size -= step
        elif path == "/status":  # `code`, with a body of `size` bytes (for error pages)
            body = b"o" * int(query.get("size", "8"))
            await stream.send(b"HTTP/1.1 %b X\r\nContent-Type: text/plain\r\n"
                              b"Content-Length: %d\r\n\r\n%b" % (
                                  query.get("code", "500").encode(), len(body), body))  # fmt: skip
        elif path.endswith(".html"):  # a page naming what was asked (an error page service)
            body = b"<p>page %b for %b</p>" % (head.url, _host(head.headers))
            await stream.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n"
                              b"Content-Length: %d\r\n\r\n%b" % (len(body), body))  # fmt: skip
        elif path == "/chunked":
            await stream.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for _ in range(int(query.get("n", "3"))):
                size = int(query.get("size", "5"))
                await stream.send(b"%x\r\n%b\r\n" % (size, b"y" * size))
            await stream.send(b"0\r\n\r\n")
        elif path in ("/slow-head", "/slow-body"):
            if path == "/slow-body":
                await stream.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12")
            await anyio.sleep_forever()
        elif path == "/close-mid":
            await stream.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
            return False
        elif path == "/bad-status":
            await stream.send(b"HTTX/1.1 2OO OK\r\n\r\n")
            return False
        elif path == "/cl-te":
            await stream.send(
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n0\r\n\r\n"
            )
            return False
        elif path == "/bad-chunk":
            await stream.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
            return False
        elif path == "/close":
            await stream.send(
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
            )
            return False
        elif path == "/drop-request":
            return False  # reads the request, closes without a word
        elif path == "/then-extra":
            # Answers, then sends a response nobody asked for: a desync a proxy must not pass
            # on as the answer to the next request on this connection.
            await stream.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await anyio.sleep(0.05)
            await stream.send(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nex")  # (and no more)
        elif path == "/then-drop":
            # Answers as keep-alive, then closes the idle connection without a word.
            await stream.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            return False
        elif path == "/ws":
            await stream.send(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                              b"Connection: Upgrade\r\n\r\n")  # fmt: skip
            while True:
                await stream.send(await stream.receive())
        else:
            await stream.send(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        return True


def _host(headers: list[tuple[bytes, bytes]]) -> bytes:
    return next((v for n, v in headers if n.lower() == b"host"), b"")


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    server = Backend()
    async with anyio.create_task_group() as group:
        await group.start(server.serve)
        yield server
        group.cancel_scope.cancel()


def get(path: str, **kw: Any) -> ForwardRequest:
    return ForwardRequest("GET", path, [(b"Host", b"backend.test")], **kw)


async def test_headers_and_fixed_body_go_through(transport: Transport, backend: Backend) -> None:
    request = ForwardRequest("POST", "/echo?x=1", [(b"Host", b"shop.example.com"), (b"X-A", b"1")],
                      body=b"hello")  # fmt: skip
    response = await transport.send(backend.target, request)
    echo = json.loads(await response.read())
    assert response.status == 200
    assert echo["method"] == "POST"
    assert echo["target"] == "/echo?x=1"
    assert ["Host", "shop.example.com"] in echo["headers"]
    assert ["X-A", "1"] in echo["headers"]
    assert echo["length"] == 5


async def test_streamed_request_body_chunked_and_with_length(
    transport: Transport, backend: Backend
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"z" * 1000

    for length in (None, 10_000):
        request = ForwardRequest(
            "PUT", "/echo", [(b"Host", b"h")], body=chunks(), content_length=length
        )
        echo = json.loads(await (await transport.send(backend.target, request)).read())
        assert echo["length"] == 10_000
        framing = {n.lower() for n, _ in echo["headers"]}
        assert ("transfer-encoding" in framing) is (length is None)


async def test_response_bodies_fixed_and_chunked(transport: Transport, backend: Backend) -> None:
    fixed = await transport.send(backend.target, get("/fixed?size=100000"))
    assert len(await fixed.read()) == 100_000
    chunked = await transport.send(backend.target, get("/chunked?n=4&size=7"))
    assert await chunked.read() == b"y" * 28


async def test_large_bodies_stream_in_constant_memory(
    transport: Transport, backend: Backend
) -> None:
    size = 64 * 1024 * 1024

    async def upload() -> AsyncIterator[bytes]:
        block = b"u" * 65536
        for _ in range(size // len(block)):
            yield block

    gc.collect()
    tracemalloc.start()
    try:
        response = await transport.send(backend.target, get(f"/fixed?size={size}"))
        received = 0
        async for chunk in response.body:
            received += len(chunk)
        request = ForwardRequest(
            "POST", "/echo", [(b"Host", b"h")], body=upload(), content_length=size
        )
        echo = json.loads(await (await transport.send(backend.target, request)).read())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert received == size
    assert echo["length"] == size
    assert peak < 8 * 1024 * 1024  # 64 MiB each way through less than 8 MiB


async def test_a_caller_that_stops_reading_stops_the_transfer(
    transport: Transport, backend: Backend
) -> None:
    gc.collect()
    tracemalloc.start()
    try:
        response = await transport.send(backend.target, get(f"/fixed?size={32 * 1024 * 1024}"))
        received = len(await response.body.__anext__())
        await anyio.sleep(0.3)  # the endpoint keeps sending; the transport must not keep reading
        peak = tracemalloc.get_traced_memory()[1]
        async for chunk in response.body:
            received += len(chunk)
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024
    assert received == 32 * 1024 * 1024


async def test_connection_reuse(transport: Transport, backend: Backend) -> None:
    for _ in range(5):
        assert (
            await (await transport.send(backend.target, get("/fixed?size=10"))).read()
        ) == b"x" * 10
    assert backend.connections == 1
    await (await transport.send(backend.target, get("/close"))).read()
    await (await transport.send(backend.target, get("/fixed?size=1"))).read()
    assert backend.connections == 2  # Connection: close is honoured


async def test_head_responses_leave_the_connection_reusable(
    transport: Transport, backend: Backend
) -> None:
    # A HEAD response announces a body it does not carry (RFC 9110 section 9.3.2): the next
    # response on the same connection must not be read as that body.
    request = ForwardRequest("HEAD", "/fixed?size=5", [(b"Host", b"h")])
    for _ in range(3):
        head = await transport.send(backend.target, request)
        assert head.status == 200
        assert await head.read() == b""
        assert await (await transport.send(backend.target, get("/fixed?size=3"))).read() == b"xxx"
    assert backend.connections == 1


async def test_refused_connection(transport: Transport, backend: Backend) -> None:
    with pytest.raises(UpstreamConnectError) as info:
        await transport.send(Target("127.0.0.1", 1), get("/"))
    assert info.value.request_sent is False


@pytest.mark.parametrize(("path", "error"), [
    ("/bad-status", UpstreamProtocolError), ("/cl-te", UpstreamProtocolError),
    ("/bad-chunk", UpstreamProtocolError), ("/close-mid", UpstreamClosed),
])  # fmt: skip
async def test_broken_responses_are_errors_never_passed_on(
    transport: Transport, backend: Backend, path: str, error: type[UpstreamError]
) -> None:
    async def fetch() -> bytes:
        return await (await transport.send(backend.target, get(path))).read()

    with pytest.raises(error):
        await fetch()
    # The transport is still usable afterwards.
    assert await (await transport.send(backend.target, get("/fixed?size=3"))).read() == b"xxx"


async def test_posts_are_never_sent_twice(transport: Transport, backend: Backend) -> None:
    request = ForwardRequest("POST", "/close-mid", [(b"Host", b"h")], body=b"order=1")
    with pytest.raises(UpstreamClosed):
        await (await transport.send(backend.target, request)).read()
    assert backend.hits["/close-mid"] == 1


async def test_cancellation_under_load_leaves_the_pool_usable(
    transport: Transport, backend: Backend
) -> None:
    # httpcore issue #1093: after cancellations under load, every request failed.
    async def one() -> None:
        await (await transport.send(backend.target, get("/slow-body"))).read()

    with anyio.move_on_after(0.3):
        async with anyio.create_task_group() as group:
            for _ in range(50):
                group.start_soon(one)
    for _ in range(20):
        assert await (await transport.send(backend.target, get("/fixed?size=2"))).read() == b"xx"


async def test_upgrade_passes_the_connection_through(
    transport: Transport, backend: Backend
) -> None:
    response = await transport.send(backend.target, get("/ws", upgrade=b"websocket"))
    assert response.status == 101
    assert response.upgraded is not None
    async with response.upgraded as stream:
        await stream.send(b"ping")
        assert await stream.receive() == b"ping"


#: The timeouts a `slow_transport` fixture's transport should have: read and pool timeouts
#: short enough for the timeout tests to end quickly.
SLOW_TIMEOUTS = Timeouts(connect=1.0, write=1.0, read=0.2, pool=0.2)


@contextlib.contextmanager
def unanswered_port() -> Iterator[Target]:
    """A port on 127.0.0.1 whose accept queue is full: a new connection is never completed
    (the kernel drops its SYN), so connecting hangs until a connect timeout."""
    listener = socket.socket()
    fillers = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        for _ in range(4):  # the queue holds one or two; the rest keep the SYN queue busy
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(listener.getsockname())
            fillers.append(filler)
        yield Target("127.0.0.1", listener.getsockname()[1])
    finally:
        for sock in [*fillers, listener]:
            sock.close()


async def test_connect_timeout(slow_transport: Transport) -> None:
    with unanswered_port() as target, pytest.raises(UpstreamTimeout) as info:
        await slow_transport.send(target, get("/"))
    assert info.value.phase == "connect"
    assert info.value.request_sent is False


async def test_read_timeout(slow_transport: Transport, backend: Backend) -> None:
    with pytest.raises(UpstreamTimeout) as info:
        await slow_transport.send(backend.target, get("/slow-head"))
    assert info.value.phase == "read"
    with pytest.raises(UpstreamTimeout):
        await (await slow_transport.send(backend.target, get("/slow-body"))).read()


async def test_write_timeout(slow_transport: Transport, backend: Backend) -> None:
    async def endless() -> AsyncIterator[bytes]:
        while True:
            yield b"w" * 65536

    request = ForwardRequest("POST", "/no-read", [(b"Host", b"h")], body=endless())
    with pytest.raises(UpstreamTimeout) as info:
        await slow_transport.send(backend.target, request)
    assert info.value.phase == "write"


async def test_unsolicited_bytes_are_never_the_next_answer(
    transport: Transport, backend: Backend
) -> None:
    # Bytes an endpoint sends when no request is waiting (a response too many) must not be
    # read as the answer to the next request on that connection (response desync).
    assert await (await transport.send(backend.target, get("/then-extra"))).read() == b"ok"
    await anyio.sleep(0.15)
    for _ in range(3):
        assert await (await transport.send(backend.target, get("/fixed?size=3"))).read() == b"xxx"


async def test_idle_connection_closed_by_the_endpoint(
    transport: Transport, backend: Backend
) -> None:
    await (await transport.send(backend.target, get("/then-drop"))).read()
    await anyio.sleep(0.05)
    # A GET on the dead pooled connection is retried once on a fresh one, transparently...
    assert await (await transport.send(backend.target, get("/then-drop"))).read() == b"ok"
    await anyio.sleep(0.05)
    # ...a POST is not: it fails rather than risk reaching the endpoint twice.
    post = ForwardRequest("POST", "/echo", [(b"Host", b"h")], body=b"x")
    try:
        response = await transport.send(backend.target, post)
        await response.read()
    except UpstreamClosed:
        pass
    assert backend.hits.get("/echo", 0) <= 1

"""HttpServer: an HTTP/1.1 front on anyio for gateways that own their socket.

llhttp (through httptools, in strict mode) parses requests, which rejects the ambiguous ones
outright: Content-Length with Transfer-Encoding, duplicate Content-Length, obs-fold, bare LF,
unknown transfer codings (RFC 9112 sections 5.2, 6.1, 6.3; request smuggling). On top of it:
- limits: the request line (414), header bytes and count (431); a head that does not arrive
  within `header_timeout` of its first byte is dropped (slowloris); an idle keep-alive
  connection is closed after `idle_timeout`;
- keep-alive, with requests answered in order;
- responses framed by the server: Content-Length when known, chunked otherwise; no body for
  HEAD, 204 and 304;
- `Upgrade` (WebSocket): a 101 from the handler hands the client connection over, and bytes are
  piped both ways until either side closes;
- `shutdown(grace)`: stop accepting, let requests in flight finish (their connections then close),
  close idle connections, and cancel what is left when the grace period ends.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import anyio.abc
import attrs
import httptools
from anyio.streams.tls import TLSAttribute

from kroute.errors import KrouteError
from kroute.gateway.accept import batched
from kroute.transport.http1 import (
    ServerLimits,
    bodiless,
    error_page,
    host_problem,
    status_line,
)
from kroute.transport.proxy import HOP_BY_HOP, connection_tokens

Headers = list[tuple[bytes, bytes]]
_log = logging.getLogger(__name__)


@attrs.define(eq=False)
class IncomingRequest:
    """A request as the front received it; `body` streams from the connection."""

    method: str
    target: str
    headers: Headers
    body: AsyncIterator[bytes]
    client: str
    port: int
    scheme: str
    content_length: int | None
    upgrade: bytes | None = None
    #: For logs (`kroute.gateway.events`): the HTTP version, the client's port, and the TLS
    #: version and cipher when the connection is HTTPS.
    version: str = "1.1"
    client_port: int = 0
    tls: tuple[str, str] | None = None


@attrs.define(eq=False)
class OutgoingResponse:
    """What the handler answers; `upgraded` (with status 101) takes over the connection."""

    status: int
    headers: Headers = attrs.Factory(list)
    body: bytes | AsyncIterator[bytes] = b""
    upgraded: anyio.abc.ByteStream | None = None
    #: Called once the response is sent or abandoned (a proxied body's connection is freed).
    close: Callable[[], Awaitable[None]] | None = None


Handler = Callable[[IncomingRequest], Awaitable[OutgoingResponse]]


class _Reject(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class _Message:
    def __init__(self) -> None:
        self.url = b""
        self.headers: Headers = []
        self.header_bytes = 0
        self.head_done = False
        self.done = False
        self.chunks: collections.deque[bytes] = collections.deque()
        self.method = b""
        self.keep_alive = False
        self.upgrade = False
        self.version = "1.1"


class _Callbacks:
    """httptools callbacks; pipelined messages queue up in order."""

    def __init__(self) -> None:
        self.parser: httptools.HttpRequestParser
        self.messages: collections.deque[_Message] = collections.deque()

    @property
    def current(self) -> _Message:
        if not self.messages or self.messages[-1].done:
            self.messages.append(_Message())
        return self.messages[-1]

    def on_message_begin(self) -> None:
        self.messages.append(_Message())

    def on_url(self, url: bytes) -> None:
        self.current.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        message = self.current
        message.headers.append((name, value))
        message.header_bytes += len(name) + len(value) + 4

    def on_headers_complete(self) -> None:
        message = self.current
        message.head_done = True
        message.method = self.parser.get_method()
        message.keep_alive = bool(self.parser.should_keep_alive())
        message.upgrade = bool(self.parser.should_upgrade())
        message.version = self.parser.get_http_version()

    def on_body(self, body: bytes) -> None:
        self.current.chunks.append(body)

    def on_message_complete(self) -> None:
        self.messages[-1].done = True


class _Connection:
    def __init__(self, server: HttpServer, stream: anyio.abc.ByteStream) -> None:
        self.server = server
        self.stream = stream
        self.limits = server.limits
        self.callbacks = _Callbacks()
        self.parser = self.callbacks.parser = httptools.HttpRequestParser(self.callbacks)
        self.busy = False
        self.upgrade_rest = b""
        try:
            remote = stream.extra(anyio.abc.SocketAttribute.remote_address)
            self.client, self.client_port = str(remote[0]), int(remote[1])
            self.port = int(stream.extra(anyio.abc.SocketAttribute.local_port))
        except (anyio.TypedAttributeLookupError, TypeError, IndexError):
            self.client, self.client_port, self.port = "", 0, 0
        version = stream.extra(TLSAttribute.tls_version, None)
        self.tls = None if version is None else (version, stream.extra(TLSAttribute.cipher)[0])

    async def _feed_more(self, timeout: float) -> bool:
        """Read and parse once more; False at the end of the stream."""
        try:
            with anyio.fail_after(timeout):
                data = await self.stream.receive(65536)
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return False
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self.upgrade_rest = data[upgrade.args[0] :]
        except httptools.HttpParserError as exc:
            raise _Reject(400, f"malformed request: {exc}") from None
        return True

    async def _next_head(self) -> _Message | None:
        messages = self.callbacks.messages
        while messages and messages[0].done and not messages[0].head_done:
            messages.popleft()
        if not messages or not messages[0].head_done:
            # Idle until the first byte, then the whole head within header_timeout.
            if not messages:
                try:
                    if not await self._feed_more(self.limits.idle_timeout):
                        return None
                except TimeoutError:
                    return None
            with anyio.move_on_after(self.limits.header_timeout) as scope:
                while not (messages and messages[0].head_done):
                    self._check_head(messages[0] if messages else None)
                    if not await self._feed_more(self.limits.header_timeout):
                        return None
            if scope.cancelled_caught:
                raise _Reject(408, "request head not received in time")
        message = messages[0]
        self._check_head(message)
        return message

    def _check_head(self, message: _Message | None) -> None:
        if message is None:
            return
        over = self.limits.head_problem(len(message.url), message.header_bytes,
                                        len(message.headers))  # fmt: skip
        if over is not None:
            raise _Reject(*over)
        if message.head_done:
            hosts = [value for name, value in message.headers if name.lower() == b"host"]
            problem = host_problem(hosts, message.version)
            if problem is not None:
                raise _Reject(400, problem)

    async def _body(self, message: _Message) -> AsyncIterator[bytes]:
        while True:
            if message.chunks:
                yield message.chunks.popleft()
            elif message.done or not await self._feed_more(self.limits.body_timeout):
                return

    async def run(self) -> None:
        while not self.server.draining:
            try:
                message = await self._next_head()
            except _Reject as exc:
                await self._send_error(exc.status, str(exc))
                return
            except TimeoutError:
                return
            if message is None:
                return
            self.busy = True
            try:
                keep = await self._exchange(message)
            finally:
                self.busy = False
            if not keep:
                return

    async def _exchange(self, message: _Message) -> bool:
        names = {n.lower(): v for n, v in message.headers}
        length = names.get(b"content-length")
        upgrade = names.get(b"upgrade") if message.upgrade else None
        request = IncomingRequest(
            method=message.method.decode("latin-1"),
            target=message.url.decode("latin-1"),
            headers=message.headers,
            body=self._body(message),
            client=self.client,
            port=self.port,
            scheme=self.server.scheme,
            content_length=int(length) if length is not None else None,
            upgrade=upgrade,
            version=message.version,
            client_port=self.client_port,
            tls=self.tls,
        )
        try:
            response = await self.server.handler(request)
        except Exception:  # the handler's bug: logged, and the client is told nothing of it
            _log.exception("the handler failed on %s %s", request.method, request.target[:200])
            response = OutgoingResponse(500, [], b"500 Internal Server Error\n")
        if response.status == 101 and response.upgraded is not None:
            await self._pipe(response)
            return False
        try:
            # The rest of the request body is read (and dropped) before the next request.
            async for _ in request.body:
                pass
            self.callbacks.messages.popleft()
            keep = message.keep_alive and not self.server.draining
            await self._send_response(message, response, keep)
        except KrouteError as exc:
            # The body failed once the head was out (the backend went away, a body step's
            # limit): the response is cut, never ended as if it were whole.
            _log.warning("response to %s %s cut: %s", request.method, request.target[:200], exc)
            return False
        finally:
            if response.close is not None:  # whatever happened, the body's resources go
                with anyio.CancelScope(shield=True):
                    await response.close()
        return keep

    async def _send_response(
        self, message: _Message, response: OutgoingResponse, keep: bool
    ) -> None:
        drop = HOP_BY_HOP | connection_tokens(response.headers) | {b"content-length"}
        headers = [(n, v) for n, v in response.headers if n.lower() not in drop]
        length = next((v for n, v in response.headers if n.lower() == b"content-length"), None)
        no_body = bodiless(message.method, response.status)
        body = response.body
        chunked = False
        if isinstance(body, bytes):
            if message.method == b"HEAD" and length is not None:
                headers.append((b"Content-Length", length))  # what a GET would have sent
            elif not no_body:
                headers.append((b"Content-Length", str(len(body)).encode()))
        elif length is not None:
            headers.append((b"Content-Length", length))
        elif not no_body:
            headers.append((b"Transfer-Encoding", b"chunked"))
            chunked = True
        if not keep:
            headers.append((b"Connection", b"close"))
        head = status_line(response.status)
        head += b"".join(n + b": " + v + b"\r\n" for n, v in headers) + b"\r\n"
        with anyio.fail_after(self.limits.write_timeout):
            if isinstance(body, bytes):
                await self.stream.send(head + (b"" if no_body else body))
                return
            await self.stream.send(head)
            async for chunk in body:
                if no_body or not chunk:
                    continue
                await self.stream.send(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
            if chunked:
                await self.stream.send(b"0\r\n\r\n")

    async def _send_error(self, status: int, reason: str) -> None:
        try:
            with anyio.fail_after(self.limits.write_timeout):
                await self.stream.send(error_page(status, reason))
        except (TimeoutError, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass

    async def _pipe(self, response: OutgoingResponse) -> None:
        upstream = response.upgraded
        assert upstream is not None
        headers = [(n, v) for n, v in response.headers if n.lower() not in (b"content-length",)]
        head = b"HTTP/1.1 101 Switching Protocols\r\n"
        head += b"".join(n + b": " + v + b"\r\n" for n, v in headers) + b"\r\n"
        await self.stream.send(head)
        if self.upgrade_rest:
            await upstream.send(self.upgrade_rest)

        async def copy(source: anyio.abc.ByteStream, sink: anyio.abc.ByteStream) -> None:
            try:
                while True:
                    await sink.send(await source.receive())
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass
            group.cancel_scope.cancel()

        async with upstream, anyio.create_task_group() as group:
            group.start_soon(copy, self.stream, upstream)
            group.start_soon(copy, upstream, self.stream)


class HttpServer:
    """Serves `handler` over HTTP/1.1 on anyio listeners (asyncio or trio)."""

    def __init__(
        self, handler: Handler, *, limits: ServerLimits = ServerLimits(), scheme: str = "http"
    ) -> None:
        self.handler = handler
        self.limits = limits
        self.scheme = scheme
        self.draining = False
        self._connections: set[_Connection] = set()
        self._accepting: list[tuple[anyio.CancelScope, anyio.Event]] = []
        self._group: anyio.abc.TaskGroup | None = None

    async def serve(
        self,
        listener: anyio.abc.Listener[Any],
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept and serve connections until cancelled or shut down. `listener` yields byte
        streams: TCP, or TLS through `kroute.HandshakeListener` (HTTPS)."""
        listener = batched(listener)  # every pending connection at each wake-up
        async with listener, anyio.create_task_group() as group:
            self._group = group
            task_status.started()
            # Connections run in `group`; accepting runs in its own scope, which shutdown()
            # cancels: the group then waits for the connections to drain.
            stopped = anyio.Event()
            with anyio.CancelScope() as accepting:
                self._accepting.append((accepting, stopped))
                await listener.serve(self._handle, task_group=group)
            await listener.aclose()  # new connections are refused from now on
            stopped.set()

    async def _handle(self, stream: anyio.abc.ByteStream) -> None:
        connection = _Connection(self, stream)
        self._connections.add(connection)
        try:
            async with stream:
                await connection.run()
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, TimeoutError, OSError):
            pass
        finally:
            self._connections.discard(connection)

    @property
    def connections(self) -> int:
        return len(self._connections)

    async def shutdown(self, grace: float = 10.0) -> None:
        """Stop accepting, let requests in flight finish, then cancel what remains."""
        self.draining = True
        for scope, stopped in self._accepting:
            scope.cancel()
            await stopped.wait()
        with anyio.move_on_after(grace):
            while any(c.busy for c in self._connections):
                await anyio.sleep(0.01)
        if self._group is not None:
            self._group.cancel_scope.cancel()

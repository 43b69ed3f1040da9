"""The Transport protocol: the seam between routing and the network.

A transport sends one request to one endpoint and returns the response head with a streamed
body. What every implementation must guarantee (and `kroute.transport.conformance` checks):

- **Streaming.** `send` returns as soon as the response head has arrived; the body is an
  async iterator of chunks read as the caller consumes them. ForwardRequest bodies given as async
  iterables are sent as they are produced. Neither is buffered whole, so a body of any size
  passes in constant memory.
- **Completion.** The caller consumes the body to its end or calls `aclose()`. Only a
  response read to its end on a keep-alive connection gives the connection back for reuse; an
  early close, an error or a cancellation closes it.
- **Errors.** Every failure is a `kroute.errors.UpstreamError`: `UpstreamConnectError` (no
  connection: nothing sent), `UpstreamTimeout` (phase connect, write, read or pool),
  `UpstreamProtocolError` (a malformed response: never passed on), `UpstreamClosed`
  (the connection ended early). `request_sent` tells whether the endpoint may have seen any of
  the request, which decides whether a retry is safe.
- **Cancellation.** Cancelling `send` or the body read leaves no connection half-used: it is
  closed, and the pool stays usable (httpcore issue #1093 is the failure this rules out).
- **Framing is the transport's.** Callers give end-to-end headers (hop-by-hop already removed);
  the transport adds Content-Length or Transfer-Encoding, and Connection/Upgrade for upgrades.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import Protocol

import anyio.abc
import attrs

from kroute.errors import UpstreamClosed
from kroute.transport.proxy import replay_safe

Headers = list[tuple[bytes, bytes]]


@attrs.frozen
class Timeouts:
    """Seconds: to connect, per write, per read (between bytes), waiting for a pool slot."""

    connect: float = 5.0
    write: float = 30.0
    read: float = 60.0
    pool: float = 5.0


@attrs.frozen
class Target:
    """Where a request goes: an endpoint address and port, with TLS settings when it speaks
    TLS (`tls` is the context, carrying the verification settings; `server_name` the SNI and
    the name verified, the address when None)."""

    host: str
    port: int
    tls: ssl.SSLContext | None = attrs.field(default=None, eq=False)
    server_name: str | None = None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@attrs.define
class ForwardRequest:
    """A request as it leaves the proxy. `body` is bytes (replayable) or an async iterable
    of chunks; `content_length` frames an iterable body (None: chunked)."""

    method: str
    target: str
    headers: Headers = attrs.Factory(list)
    body: bytes | AsyncIterable[bytes] = b""
    content_length: int | None = None
    #: Ask the endpoint to switch protocols (e.g. b"websocket"); a 101 hands over the stream.
    upgrade: bytes | None = None

    @property
    def replayable(self) -> bool:
        return isinstance(self.body, bytes)


@attrs.define(eq=False)
class ForwardResponse:
    """A response head and its streamed body. `upgraded` is the raw connection after a 101."""

    status: int
    reason: bytes
    headers: Headers
    body: AsyncIterator[bytes]
    upgraded: anyio.abc.ByteStream | None = None
    _close: Callable[[], Awaitable[None]] | None = None

    async def read(self) -> bytes:
        """The whole body (for small ones; stream large ones)."""
        return b"".join([chunk async for chunk in self.body])

    async def aclose(self) -> None:
        """Give up on the rest of the body; the connection is closed, not reused."""
        if self._close is not None:
            await self._close()


def framing_headers(request: ForwardRequest) -> Headers:
    """The headers that frame a request's body and ask for an upgrade (the transport's job)."""
    out: Headers = []
    if request.upgrade is not None:
        out += [(b"Connection", b"Upgrade"), (b"Upgrade", request.upgrade)]
    if isinstance(request.body, bytes):
        if request.body or request.method not in ("GET", "HEAD", "DELETE", "OPTIONS"):
            out.append((b"Content-Length", b"%d" % len(request.body)))
    elif request.content_length is not None:
        out.append((b"Content-Length", b"%d" % request.content_length))
    else:
        out.append((b"Transfer-Encoding", b"chunked"))
    return out


def request_head(request: ForwardRequest) -> bytes:
    """The request line and headers as they go out, framing included (RFC 9112 section 3)."""
    lines = [f"{request.method} {request.target} HTTP/1.1".encode()]
    lines += [name + b": " + value for name, value in request.headers]
    lines += [name + b": " + value for name, value in framing_headers(request)]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def after_stale(request: ForwardRequest, target: Target) -> None:
    """A reused connection turned out closed by its endpoint before any response byte (it
    closed it while idle). Returns when the request may go once more on a fresh connection (an
    idempotent method and a body that can be sent again); raises UpstreamClosed otherwise, since
    the endpoint may have seen it."""
    if replay_safe(request.method, replayable=request.replayable):
        return
    raise UpstreamClosed(
        "connection closed by the endpoint while the request was sent", endpoint=str(target)
    )


class Transport(Protocol):
    """Sends requests to endpoints; see the module docstring for the guarantees."""

    async def send(self, target: Target, request: ForwardRequest) -> ForwardResponse: ...

    async def aclose(self) -> None: ...

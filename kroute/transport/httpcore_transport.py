"""HttpcoreTransport: the Transport protocol on httpcore's connection pool.

For users who want httpcore's features (HTTP/2 to endpoints with `http2=True` and the `h2`
package installed) or already use it. It passes the same conformance suite as the default
transport; it is slower per request (SEMANTICS.md section 8: about 450 µs of CPU per request,
and a pool whose waiting is O(n^2) in waiters, encode/httpcore#1035), so the default stays
`PooledTransport`. httpcore errors are mapped onto kroute's here, in one place.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio.abc
import httpcore

from kroute.chunks import OneChunk
from kroute.errors import (
    UpstreamClosed,
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from kroute.transport.base import ForwardRequest, ForwardResponse, Target, Timeouts, framing_headers
from kroute.transport.proxy import framing_conflict

_TIMEOUT_PHASES = {
    httpcore.ConnectTimeout: "connect",
    httpcore.WriteTimeout: "write",
    httpcore.ReadTimeout: "read",
    httpcore.PoolTimeout: "pool",
}


@contextlib.contextmanager
def _mapped(target: Target) -> Iterator[None]:
    """httpcore's exceptions -> kroute's UpstreamError family (the one place that maps them)."""
    endpoint = str(target)
    try:
        yield
    except httpcore.TimeoutException as exc:
        phase = _TIMEOUT_PHASES.get(type(exc), "read")
        sent = phase not in ("connect", "pool")
        raise UpstreamTimeout(phase, endpoint=endpoint, request_sent=sent) from None
    except httpcore.ConnectError as exc:
        raise UpstreamConnectError(str(exc) or "connect failed", endpoint=endpoint) from None
    except httpcore.RemoteProtocolError as exc:
        message = str(exc)
        if any(word in message.lower() for word in ("disconnected", "peer closed", "incomplete")):
            raise UpstreamClosed(message, endpoint=endpoint) from None
        raise UpstreamProtocolError(message, endpoint=endpoint) from None
    except (httpcore.ReadError, httpcore.WriteError, httpcore.NetworkError) as exc:
        raise UpstreamClosed(str(exc) or type(exc).__name__, endpoint=endpoint) from None
    except httpcore.ProtocolError as exc:
        raise UpstreamProtocolError(str(exc), endpoint=endpoint) from None


class _Upgraded(anyio.abc.ByteStream):
    """httpcore's network stream after a 101, as an anyio byte stream."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    async def receive(self, max_bytes: int = 65536) -> bytes:
        data: bytes = await self._stream.read(max_bytes)
        if not data:
            raise anyio.EndOfStream
        return data

    async def send(self, item: bytes) -> None:
        await self._stream.write(item)

    async def send_eof(self) -> None:
        raise NotImplementedError("half-close is not available on httpcore streams")

    async def aclose(self) -> None:
        await self._stream.aclose()


class HttpcoreTransport:
    """Forwarding through an `httpcore.AsyncConnectionPool`."""

    def __init__(
        self,
        *,
        max_connections: int = 100,
        max_idle: int = 32,
        keepalive_expiry: float = 60.0,
        timeouts: Timeouts = Timeouts(),
        ssl_context: ssl.SSLContext | None = None,
        http2: bool = False,
    ) -> None:
        self.timeouts = timeouts
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context, max_connections=max_connections,
            max_keepalive_connections=max_idle, keepalive_expiry=keepalive_expiry,
            http2=http2,
        )  # fmt: skip

    async def aclose(self) -> None:
        await self._pool.aclose()

    async def send(self, target: Target, request: ForwardRequest) -> ForwardResponse:
        scheme = b"https" if target.tls is not None else b"http"
        extensions: dict[str, Any] = {"timeout": {
            "connect": self.timeouts.connect, "read": self.timeouts.read,
            "write": self.timeouts.write, "pool": self.timeouts.pool,
        }}  # fmt: skip
        if target.server_name:
            extensions["sni_hostname"] = target.server_name
        core = httpcore.Request(
            request.method.encode(),
            httpcore.URL(scheme=scheme, host=target.host.encode(), port=target.port,
                         target=request.target.encode()),
            headers=[*request.headers, *framing_headers(request)],
            content=OneChunk(request.body) if isinstance(request.body, bytes) else request.body,
            extensions=extensions,
        )  # fmt: skip
        with _mapped(target):
            response = await self._pool.handle_async_request(core)
        conflict = framing_conflict(response.headers)
        if conflict is not None:
            await response.aclose()
            raise UpstreamProtocolError(conflict, endpoint=str(target))
        reason = response.extensions.get("reason_phrase", b"")
        if response.status == 101:
            return ForwardResponse(101, reason, list(response.headers), _empty(),
                            upgraded=_Upgraded(response.extensions["network_stream"]))  # fmt: skip
        return ForwardResponse(response.status, reason, list(response.headers),
                        self._body(target, response), close=response.aclose)  # fmt: skip

    async def _body(self, target: Target, response: httpcore.Response) -> AsyncIterator[bytes]:
        try:
            with _mapped(target):
                async for chunk in response.aiter_stream():
                    yield chunk
        finally:
            await response.aclose()


async def _empty() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover - makes this an async generator

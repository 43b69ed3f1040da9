"""MemoryTransport: forwards to ASGI applications or plain async functions, in process.

For tests of everything above the network: routing, retries, header rewriting, error mapping,
with backends that are a few lines of Python. Endpoints are mounted by "host:port"; a request to
an endpoint with nothing mounted fails like a refused connection (502). ForwardRequest and response
bodies are passed whole (this transport is for tests, not for gigabytes).

A plain handler takes the `ForwardRequest` (its body already read into bytes) and returns
`(status, headers, body)`; an ASGI application is called with an HTTP scope as any ASGI server
would.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import attrs

from kroute.errors import UpstreamConnectError, UpstreamError
from kroute.transport.base import ForwardRequest, ForwardResponse, Headers, Target

Handler = Callable[[ForwardRequest], Awaitable[tuple[int, Headers, bytes]]]
ASGIApp = Callable[
    [MutableMapping[str, Any], Callable[[], Awaitable[dict[str, Any]]],
     Callable[[dict[str, Any]], Awaitable[None]]],
    Awaitable[None],
]  # fmt: skip


async def _read(request: ForwardRequest) -> bytes:
    if isinstance(request.body, bytes):
        return request.body
    return b"".join([chunk async for chunk in request.body])


async def _once(data: bytes) -> Any:
    yield data


class MemoryTransport:
    """Requests go to in-process apps instead of the network."""

    def __init__(self, apps: dict[str, Handler | ASGIApp] | None = None) -> None:
        self.apps: dict[str, Handler | ASGIApp] = dict(apps or {})
        #: Every request delivered, with the endpoint it went to (for assertions).
        self.sent: list[tuple[str, ForwardRequest]] = []

    def mount(self, endpoint: str, app: Handler | ASGIApp) -> None:
        """Serve `endpoint` ("10.0.0.1:8080") with `app`."""
        self.apps[endpoint] = app

    async def aclose(self) -> None:
        return None

    async def send(self, target: Target, request: ForwardRequest) -> ForwardResponse:
        app = self.apps.get(str(target))
        if app is None:
            raise UpstreamConnectError("nothing mounted there", endpoint=str(target))
        body = await _read(request)
        delivered = attrs.evolve(request, body=body, content_length=len(body))
        self.sent.append((str(target), delivered))
        if len(inspect.signature(app).parameters) == 1:
            handler: Handler = app  # type: ignore[assignment]
            status, headers, payload = await handler(delivered)
        else:
            asgi: ASGIApp = app  # type: ignore[assignment]
            status, headers, payload = await self._asgi(asgi, target, delivered, body)
        return ForwardResponse(status, b"", list(headers), _once(payload).__aiter__())

    async def _asgi(
        self, app: ASGIApp, target: Target, request: ForwardRequest, body: bytes
    ) -> tuple[int, Headers, bytes]:
        path, _, query = request.target.partition("?")
        scope: dict[str, Any] = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1", "method": request.method, "scheme": "http",
            "path": path, "raw_path": path.encode(), "query_string": query.encode(),
            "root_path": "", "headers": [(n.lower(), v) for n, v in request.headers],
            "client": ("127.0.0.1", 0), "server": (target.host, target.port),
        }  # fmt: skip
        messages = [{"type": "http.request", "body": body, "more_body": False}]
        status = 500
        headers: Headers = []
        chunks: list[bytes] = []

        async def receive() -> dict[str, Any]:
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status, headers
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(bytes(n), bytes(v)) for n, v in message.get("headers", [])]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        try:
            await app(scope, receive, send)
        except Exception as exc:
            raise UpstreamError(f"application failed: {exc!r}", endpoint=str(target)) from exc
        return status, headers, b"".join(chunks)

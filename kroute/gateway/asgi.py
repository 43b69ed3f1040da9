"""AsgiGateway: the same Router behind any ASGI server (uvicorn, hypercorn, granian), or
mounted inside an existing ASGI application.

HTTP requests are routed and forwarded exactly as `GatewayHandler` does (the request side is the
same function, `handler.proxied`): hop-by-hop headers out, forwarding headers in, bodies
streamed both ways, errors as short 404/500/502/503/504 responses. The server frames the
response; the gateway passes Content-Length through when the backend sent one.

Lifespan (when the server sends it): startup runs `router.run()` (sources and health probes)
in the background and waits up to `sync_timeout` for the sources to sync, so the first requests
see the configuration; shutdown stops them and closes the transport. Mounted inside another
application, which receives the lifespan itself, run `router.run()` from that application's
lifespan instead.

Not carried over ASGI: WebSocket (ASGI delivers messages, not the byte stream a proxy pipes;
such requests are refused with a close before accept, which servers answer with 403). Use the
HttpServer front for WebSocket traffic.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

import anyio

from kroute.errors import InvalidRequest, KrouteError
from kroute.gateway import recording
from kroute.gateway.handler import proxied
from kroute.gateway.router import Router
from kroute.transport.proxy import Hop, TrustedProxies, error_response, strip_hop_by_hop

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class AsgiGateway:
    """An ASGI 3 application forwarding every HTTP request through `router`."""

    def __init__(
        self,
        router: Router,
        *,
        trusted: TrustedProxies = TrustedProxies(),
        sync_timeout: float = 30.0,
        hsts: str | None = None,
        entry_point: str | None = None,
    ) -> None:
        self.router = router
        self.trusted = trusted
        #: The entry point served; None: the Router's first of the request's scheme.
        self.entry_point = None if entry_point is None else router.entry_point(entry_point).name
        self.sync_timeout = sync_timeout
        #: Strict-Transport-Security for requests that came over HTTPS, or None.
        self.hsts = [(b"strict-transport-security", hsts.encode())] if hsts else []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008,
                        "reason": "kroute's ASGI gateway does not proxy WebSocket"})  # fmt: skip

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        await receive()  # lifespan.startup
        async with anyio.create_task_group() as group:
            group.start_soon(self.router.run)
            with anyio.move_on_after(self.sync_timeout):
                for source in self.router.sources:
                    await source.wait_synced()
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
            group.cancel_scope.cancel()
        if self.router.transport is not None:
            await self.router.transport.aclose()
        await send({"type": "lifespan.shutdown.complete"})

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers: list[tuple[bytes, bytes]] = [(bytes(n), bytes(v)) for n, v in scope["headers"]]
        host = next((v for n, v in headers if n == b"host"), b"").decode("latin-1")
        target = scope.get("raw_path") or scope["path"].encode()
        if scope.get("query_string"):
            target += b"?" + scope["query_string"]
        client = scope.get("client") or ("", 0)
        server = scope.get("server") or ("", 0)
        length = next((v for n, v in headers if n == b"content-length"), None)
        hop = Hop(client=client[0], scheme=scope.get("scheme", "http"), host=host,
                  port=server[1] or 0)  # fmt: skip
        extra = self.hsts if hop.scheme == "https" else []
        record = recording.record_for(
            self.router, self.entry_point, scope["method"], host, target.decode("latin-1"),
            scheme=hop.scheme, version=scope.get("http_version", "1.1"), client=client[0],
            client_port=client[1] or 0, headers=headers,
        )  # fmt: skip
        try:
            head, request = proxied(
                scope["method"], target.decode("latin-1"), headers, _body(receive),
                content_length=int(length) if length is not None else None, upgrade=None,
                hop=hop, trusted=self.trusted,
            )  # fmt: skip
            decision, response = await self.router.forward(
                head, request, entry_point=self.entry_point, record=record
            )
        except KrouteError as exc:
            status, error_headers, body = error_response(exc)
            if record is not None:
                recording.failed(self.router, record, exc, len(body))
            await send({"type": "http.response.start", "status": status,
                        "headers": [*error_headers, *extra]})  # fmt: skip
            await send({"type": "http.response.body", "body": body})
            return
        cookies = self.router.sticky_headers(decision)
        if cookies:
            extra = [*extra, *cookies]
        done = False
        try:
            await send({"type": "http.response.start", "status": response.status,
                        "headers": [*strip_hop_by_hop(response.headers), *extra]})  # fmt: skip
            async for chunk in response.body:
                if chunk:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    if record is not None:
                        record.bytes_sent += len(chunk)
            done = True
            await send({"type": "http.response.body", "body": b""})
        finally:
            if not done:
                await response.aclose()  # the client went away: the connection is not reused
            if record is not None:
                record.complete = done
                recording.ended(self.router, record, response.status)


async def _body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            # Never let a cut-short body pass as a complete one.
            raise InvalidRequest("the client disconnected before the request body ended")
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return

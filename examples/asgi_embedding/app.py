"""Embedding kroute in an existing ASGI service (no framework needed; Starlette or FastAPI mount
it the same way).

The service answers `/status` itself, calling another Service straight at its endpoints with
ServiceClient (no kube-proxy, no sidecar), and hands every other request to kroute's
AsgiGateway. Its own lifespan runs the Router (sources and health probes): a mounted gateway
does not receive the lifespan, its host application does.

    uvicorn app:app --app-dir examples/asgi_embedding --port 8000
    KROUTE_MANIFESTS=my/manifests uvicorn app:app --app-dir examples/asgi_embedding

Manifests default to examples/gateway/manifests (start the demo's pods, or the demo itself).
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import anyio

import kroute

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

MANIFESTS = os.environ.get(
    "KROUTE_MANIFESTS", str(Path(__file__).resolve().parent.parent / "gateway" / "manifests")
)
router = kroute.Router([kroute.ManifestSource([MANIFESTS])], transport=kroute.PooledTransport())
gateway = kroute.AsgiGateway(router)
services = kroute.ServiceClient(router)


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
    elif scope["type"] == "http" and scope["path"] == "/status":
        await status(send)
    else:
        await gateway(scope, receive, send)


async def lifespan(receive: Receive, send: Send) -> None:
    await receive()  # lifespan.startup: the service's own start-up would go here too
    async with anyio.create_task_group() as group:
        group.start_soon(router.run)
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
        group.cancel_scope.cancel()
    await router.transport.aclose()  # type: ignore[union-attr]
    await send({"type": "lifespan.shutdown.complete"})


async def status(send: Send) -> None:
    """The service's own endpoint: asks test-api for its status, directly at an endpoint."""
    try:
        decision, response = await services.request("GET", "http://test-api.default.svc/api/status")
        endpoint = str(decision.pick.endpoint) if decision.pick else None
        upstream: Any = {"status": response.status, "endpoint": endpoint,
                         "body": json.loads(await response.read())}  # fmt: skip
    except kroute.KrouteError as exc:
        upstream = {"error": str(exc)}
    body = json.dumps({"gateway_ready": router.ready, "test-api": upstream}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})

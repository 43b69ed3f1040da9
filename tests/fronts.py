"""One client for every gateway front: HttpServer and FastGateway over a socket, the ASGI
gateway through httpx's ASGI transport (what an ASGI server would call)."""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterable, AsyncIterator, Callable
from typing import Any, TypeVar

import anyio
import httpx

from kroute.gateway.asgi import AsgiGateway
from kroute.gateway.router import Router
from kroute.transport.base import ForwardRequest, Target
from kroute.transport.conformance import Backend
from kroute.transport.pooled import PooledTransport
from kroute.transport.proxy import TrustedProxies
from kroute.watch.sources import MemorySource
from tests.builders import gateway
from tests.pods import start_front
from tests.test_gateway_e2e import endpoint_slice, service

Headers = list[tuple[bytes, bytes]]


class FrontClient:
    """`request(...)` -> (status, headers, body) through one front."""

    def __init__(self, port: int | None, app: AsgiGateway | None) -> None:
        self.port = port
        self.app = app
        self.transport = PooledTransport()

    async def request(
        self,
        host: str,
        target: str = "/",
        *,
        method: str = "GET",
        headers: Headers | None = None,
        body: bytes | AsyncIterable[bytes] = b"",
    ) -> tuple[int, Headers, bytes]:
        """An iterable `body` goes chunked (no Content-Length)."""
        headers = [(b"Host", host.encode()), *(headers or [])]
        if self.app is not None:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport) as client:
                del client.headers["accept-encoding"]  # (as the other fronts' client: none)
                url = httpx.URL(f"http://{host}{target}")
                async with client.stream(method, url, headers=headers, content=body) as answer:
                    raw = b"".join([chunk async for chunk in answer.aiter_raw()])  # (undecoded)
                return answer.status_code, list(answer.headers.raw), raw
        assert self.port is not None
        request = ForwardRequest(method, target, headers, body)
        response = await self.transport.send(Target("127.0.0.1", self.port), request)
        return response.status, response.headers, await response.read()


@contextlib.asynccontextmanager
async def serving(
    router: Router, front: str, entry_point: str | None = None,
    trusted: TrustedProxies = TrustedProxies(),
) -> AsyncIterator[FrontClient]:  # fmt: skip
    """`router` served by `front` ("anyio", "fast" or "asgi") while the block runs, on its
    entry point `entry_point` (None: the front's default, the Router's first plain one),
    passing on X-Forwarded-* from `trusted` proxies."""
    async with anyio.create_task_group() as group:
        if front == "asgi":
            router.transport = router.transport or PooledTransport()
            client = FrontClient(None, AsgiGateway(router, entry_point=entry_point,
                                                   trusted=trusted))  # fmt: skip
        else:
            port = await start_front(group, router, front, entry_point=entry_point,
                                     trusted=trusted)  # fmt: skip
            client = FrontClient(port, None)
        try:
            yield client
        finally:
            await client.transport.aclose()
            if router.transport is not None:
                await router.transport.aclose()
            await router.aclose()
            group.cancel_scope.cancel()


@contextlib.asynccontextmanager
async def echo_gateway(
    routes: list[dict[str, Any]],
    front: str,
    trusted: TrustedProxies = TrustedProxies(),
    **router: Any,
) -> AsyncIterator[tuple[FrontClient, Backend, Router]]:
    """`routes` (attached to Gateway default/gw, sending to Service default/web) served by
    `front`, web being a real echo `Backend` on 127.0.0.2; `router` goes to the Router."""
    backend = Backend("127.0.0.2")
    async with anyio.create_task_group() as group:
        await group.start(backend.serve)
        source = MemorySource(objects=[gateway(), *routes, service("web"),
                                       endpoint_slice("web", backend.port, backend.address)])  # fmt: skip
        served = Router([source], **router)
        async with serving(served, front, trusted=trusted) as client:
            yield client, backend, served
        group.cancel_scope.cancel()


B = TypeVar("B", bound=Backend)


@contextlib.asynccontextmanager
async def pair_gateway(
    main: B, other: B, objects: Callable[[B, B], list[dict[str, Any]]], front: str, seed: int
) -> AsyncIterator[tuple[FrontClient, B, B, Router]]:
    """Two real backends serving, the Router over `objects(main, other)` running (its
    mirror workers too, seeded with `seed`) and served by `front`."""
    async with anyio.create_task_group() as group:
        await group.start(main.serve)
        await group.start(other.serve)
        router = Router([MemorySource(objects=objects(main, other))], rng=random.Random(seed))
        group.start_soon(router.run)
        async with serving(router, front) as client:
            yield client, main, other, router
        group.cancel_scope.cancel()


@contextlib.asynccontextmanager
async def module_pair(module: Any, front: str) -> AsyncIterator[tuple[FrontClient, Backend,
                                                                      Backend, Router]]:  # fmt: skip
    """`pair_gateway` on 127.0.0.2 and 127.0.0.3 over the test module's `pair_objects`."""
    async with pair_gateway(Backend("127.0.0.2"), Backend("127.0.0.3"), module.pair_objects,
                            front, 7) as out:  # fmt: skip
        yield out

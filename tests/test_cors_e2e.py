"""The HTTPRoute CORS filter through every front (HttpServer on asyncio and trio, FastGateway,
the ASGI gateway on asyncio and trio), with a real backend on loopback that echoes what it got:
preflights are answered by the gateway, actual responses carry the allow headers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from kroute.gateway.router import Router
from kroute.transport.conformance import Backend
from tests.builders import httproute, to
from tests.fronts import FrontClient, echo_gateway

pytestmark = pytest.mark.anyio
Headers = list[tuple[bytes, bytes]]

CORS = {
    "allowOrigins": ["https://app.example", "https://*.tenant.example"],
    "allowMethods": ["GET", "PUT"],
    "allowHeaders": ["x-token"],
    "exposeHeaders": ["x-trace"],
    "allowCredentials": True,
    "maxAge": 600,
}
ROUTES = [
    httproute("api", [{"filters": [{"type": "CORS", "cors": CORS}],
                       "backendRefs": [to("web")]}], hostnames=["api.local"]),
    # At backendRef level too (Extended support in HTTPBackendRef).
    httproute("public", [{"backendRefs": [to("web", filters=[
        {"type": "CORS", "cors": {"allowOrigins": ["*"], "allowMethods": ["*"]}}])]}],
        hostnames=["public.local"]),
]  # fmt: skip
PREFLIGHT = [(b"Origin", b"https://app.example"), (b"Access-Control-Request-Method", b"PUT"),
             (b"Access-Control-Request-Headers", b"x-token")]  # fmt: skip


def cors_fields(headers: Headers) -> dict[bytes, bytes]:
    return {n.lower(): v for n, v in headers if n.lower().startswith(b"access-control-")}


@pytest.fixture
async def client(every_front: str) -> AsyncIterator[tuple[FrontClient, Backend, Router]]:
    async with echo_gateway(ROUTES, every_front) as served:
        yield served


async def preflight(front: FrontClient, host: str, headers: Headers) -> dict[bytes, bytes]:
    """The CORS headers of the answer to a preflight (always 200)."""
    status, answer, _ = await front.request(host, "/echo", method="OPTIONS", headers=headers)
    assert status == 200
    return cors_fields(answer)


async def test_a_preflight_is_answered_without_reaching_the_backend(
    client: tuple[FrontClient, Backend, Router],
) -> None:
    front, backend, router = client
    assert router.refused == ()  # CORS is applied, not refused
    assert await preflight(front, "api.local", PREFLIGHT) == {
        b"access-control-allow-origin": b"https://app.example",
        b"access-control-allow-credentials": b"true",
        b"access-control-allow-methods": b"GET, PUT",
        b"access-control-allow-headers": b"x-token",
        b"access-control-expose-headers": b"x-trace",
        b"access-control-max-age": b"600",
    }
    denied = [(b"Origin", b"https://evil.example"), (b"Access-Control-Request-Method", b"PUT")]
    assert await preflight(front, "api.local", denied) == {}
    assert backend.hits == {}


async def test_an_actual_request_is_forwarded_and_its_response_allowed(
    client: tuple[FrontClient, Backend, Router],
) -> None:
    front, backend, _ = client
    origin = b"https://eu.shop.tenant.example"
    status, headers, body = await front.request("api.local", "/echo", method="PUT",
                                                headers=[(b"Origin", origin)])  # fmt: skip
    assert status == 200
    echo = json.loads(body)
    assert echo["method"] == "PUT"
    assert ["origin", origin.decode()] in [[n.lower(), v] for n, v in echo["headers"]]
    assert cors_fields(headers) == {
        b"access-control-allow-origin": origin,
        b"access-control-allow-credentials": b"true",
        b"access-control-expose-headers": b"x-trace",
    }
    assert b"Origin" in [v for n, v in headers if n.lower() == b"vary"]
    status, headers, _ = await front.request("api.local", "/echo",
                                             headers=[(b"Origin", b"https://tenant.example")])  # fmt: skip
    assert status == 200  # forwarded, but the browser is not allowed to read it
    assert cors_fields(headers) == {}
    assert backend.hits == {"/echo": 2}


async def test_a_backend_level_filter_with_wildcards(
    client: tuple[FrontClient, Backend, Router],
) -> None:
    front, backend, _ = client
    ask = [(b"Origin", b"http://localhost:3000"), (b"Access-Control-Request-Method", b"DELETE")]
    assert await preflight(front, "public.local", ask) == {
        b"access-control-allow-origin": b"*",
        b"access-control-allow-methods": b"DELETE",
        b"access-control-max-age": b"5",
    }
    status, headers, _ = await front.request("public.local", "/echo",
                                             headers=[(b"Origin", b"http://localhost:3000")])  # fmt: skip
    assert status == 200
    assert cors_fields(headers) == {b"access-control-allow-origin": b"*"}
    assert backend.hits == {"/echo": 1}

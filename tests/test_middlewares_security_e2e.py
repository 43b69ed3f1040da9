"""The protection middlewares through every front (HttpServer on asyncio and trio, FastGateway,
the ASGI gateway on asyncio and trio), against a real echo backend on loopback, each written as
Traefik's documentation shows it. What is refused never reaches the backend."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator

import anyio
import httpx
import pytest

from kroute.gateway.router import Router
from kroute.transport.conformance import Backend
from kroute.transport.proxy import TrustedProxies
from tests.builders import httproute, to
from tests.fronts import FrontClient, echo_gateway
from tests.test_middlewares_e2e import middleware, using
from tests.test_pipeline_e2e import ext, headers_of

pytestmark = pytest.mark.anyio

# Traefik's documentation: users test/test and test2/test2 (htpasswd -m).
USERS = "test:$apr1$H6uskkkW$IgXLP6ewTrSuBkTrqE8wj/\ntest2:$apr1$d9hr9HBB$4HxwgUir3HP4EsggP/QNo0\n"
ROUTES = [
    {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "authsecret",
     "namespace": "default"}, "data": {"users": base64.b64encode(USERS.encode()).decode()}},
    middleware("test-auth", {"basicAuth": {"secret": "authsecret",
                                           "headerField": "X-WebAuth-User"}}),
    middleware("test-ipallowlist", {"ipAllowList": {"sourceRange": ["127.0.0.1/32",
                                                                    "192.168.1.7"]}}),
    middleware("elsewhere", {"ipAllowList": {"sourceRange": ["192.0.2.0/24"]}}),
    *(middleware(f"depth-{d}", {"ipAllowList": {"sourceRange": ["192.0.2.7"],
                                                "ipStrategy": {"depth": d}}}) for d in (1, 2, 3)),
    middleware("test-ratelimit", {"rateLimit": {"average": 2, "period": "1h", "burst": 2}}),
    middleware("test-inflightreq", {"inFlightReq": {"amount": 1}}),
    using("auth.local", "test-auth"),
    using("allow.local", "test-ipallowlist"),
    using("elsewhere.local", "elsewhere"),
    *(using(f"depth{d}.local", f"depth-{d}") for d in (1, 2, 3)),
    using("limited.local", "test-ratelimit"),
    httproute("inflight", [{"filters": [ext("test-inflightreq", "traefik.io", "Middleware")],
                            "backendRefs": [to("web")], "timeouts": {"request": "2s"}}],
              hostnames=["inflight.local"]),
]  # fmt: skip


@pytest.fixture
async def client(every_front: str) -> AsyncIterator[tuple[FrontClient, Backend, Router]]:
    async with echo_gateway(ROUTES, every_front) as served:
        yield served


def basic(credentials: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"Authorization", b"Basic " + base64.b64encode(credentials))]


async def test_basic_auth_lets_a_user_through(client: tuple[FrontClient, Backend, Router]) -> None:
    front, backend, _ = client
    spoofed = (b"X-WebAuth-User", b"admin")
    status, _, body = await front.request("auth.local", "/echo",
                                          headers=[*basic(b"test:test"), spoofed])  # fmt: skip
    assert status == 200
    assert headers_of(json.loads(body))["x-webauth-user"] == ["test"]
    assert backend.hits == {"/echo": 1}


@pytest.mark.parametrize("headers", [
    basic(b"test:wrong"), basic(b"nobody:test"), [], [(b"Authorization", b"Basic %%%%")],
    [(b"Authorization", b"Bearer dGVzdDp0ZXN0")], basic(b"test"),
], ids=["wrong-password", "unknown-user", "missing", "malformed-base64", "not-basic",
        "no-colon"])  # fmt: skip
async def test_basic_auth_refusals(
    client: tuple[FrontClient, Backend, Router], headers: list[tuple[bytes, bytes]]
) -> None:
    front, backend, _ = client
    status, answer, body = await front.request("auth.local", "/echo", headers=headers)
    assert status == 401
    assert {n.lower(): v for n, v in answer}[b"www-authenticate"] == b'Basic realm="traefik"'
    assert body == b"401 Unauthorized\n"
    assert backend.hits == {}


async def test_ip_allow_list_reads_the_peer(client: tuple[FrontClient, Backend, Router]) -> None:
    front, backend, _ = client
    assert (await front.request("allow.local", "/echo"))[0] == 200
    spoof = [(b"X-Forwarded-For", b"192.0.2.1")]  # never trusted without an ipStrategy
    status, _, body = await front.request("elsewhere.local", "/echo", headers=spoof)
    assert (status, body) == (403, b"Forbidden")
    assert backend.hits == {"/echo": 1}


@pytest.mark.parametrize("depth", [1, 2, 3])
async def test_spoofed_forwarded_for_from_an_untrusted_client(
    client: tuple[FrontClient, Backend, Router], depth: int
) -> None:
    """The front drops a client's X-Forwarded-For: whatever it says, no depth finds 192.0.2.7."""
    front, backend, _ = client
    for spoof in (b"192.0.2.7", b"192.0.2.7, 192.0.2.7, 192.0.2.7", b"10.0.0.1, 192.0.2.7"):
        status, _, _ = await front.request(f"depth{depth}.local", "/echo",
                                           headers=[(b"X-Forwarded-For", spoof)])  # fmt: skip
        assert status == 403
    assert backend.hits == {}


@pytest.mark.parametrize("depth", [1, 2, 3])
async def test_depth_behind_a_trusted_proxy(every_front: str, depth: int) -> None:
    """Behind a trusted proxy (127.0.0.0/8 here) X-Forwarded-For is read at `depth` from the
    right; the allowed IP is at depth 2, the entry at depth 1 is a spoof the proxy appended to."""
    async with echo_gateway(ROUTES, every_front, trusted=TrustedProxies.of("127.0.0.0/8")) as (
        front, backend, _):  # fmt: skip
        xff = [(b"X-Forwarded-For", b"10.9.9.9, 192.0.2.7, 198.51.100.1")]
        status, _, _ = await front.request(f"depth{depth}.local", "/echo", headers=xff)
        assert status == (200 if depth == 2 else 403)
        assert backend.hits == ({"/echo": 1} if depth == 2 else {})


async def test_depth_is_never_the_trusted_proxy_itself(every_front: str) -> None:
    """The proxy in front of kroute (trusted, in the allowed 127.0.0.0/8) says the client is
    192.0.2.9: `depth: 1` refuses it, whatever spelling the peer's address has. The ASGI
    gateway is given an IPv4-mapped peer (`::ffff:127.0.0.1`, as a dual-stack listener sees an
    IPv4 client, which the steps see as `::ffff:7f00:1`); the socket fronts listen on
    127.0.0.1, where no mapped peer can be had (and this host's dual-stack sockets take no
    IPv4 connection), so their peer is 127.0.0.1."""
    routes = [middleware("proxy-depth", {"ipAllowList": {"sourceRange": ["127.0.0.0/8"],
                                                         "ipStrategy": {"depth": 1}}}),
              using("proxy.local", "proxy-depth")]  # fmt: skip
    xff = [(b"Host", b"proxy.local"), (b"X-Forwarded-For", b"192.0.2.9")]
    async with echo_gateway(routes, every_front, trusted=TrustedProxies.of("127.0.0.0/8")) as (
        front, backend, _):  # fmt: skip
        if front.app is not None:
            transport = httpx.ASGITransport(app=front.app, client=("::ffff:127.0.0.1", 40000))
            async with httpx.AsyncClient(transport=transport) as http:
                answer = await http.get("http://proxy.local/echo", headers=xff)
            status = answer.status_code
        else:
            status = (await front.request("proxy.local", "/echo", headers=xff[1:]))[0]
        assert status == 403
        assert backend.hits == {}


async def test_rate_limit_answers_429_past_the_burst(
    client: tuple[FrontClient, Backend, Router],
) -> None:
    front, backend, _ = client
    assert [(await front.request("limited.local", "/echo"))[0] for _ in range(2)] == [200, 200]
    status, headers, _ = await front.request("limited.local", "/echo")
    assert status == 429
    found = {n.lower(): v for n, v in headers}
    assert found[b"retry-after"] == b"1800"  # (2 per hour: the next token in 30 minutes)
    assert backend.hits == {"/echo": 2}


async def test_in_flight_requests_are_counted_until_they_end(
    client: tuple[FrontClient, Backend, Router],
) -> None:
    front, backend, _ = client
    for _ in range(3):  # one at a time: each ends before the next (the count goes back)
        assert (await front.request("inflight.local", "/echo"))[0] == 200
    statuses: list[int] = []

    async def slow() -> None:
        statuses.append((await front.request("inflight.local", "/slow-head"))[0])

    async with anyio.create_task_group() as group:
        group.start_soon(slow)
        while not backend.hits.get("/slow-head"):  # the request is in flight at the backend
            await anyio.sleep(0.005)
        assert (await front.request("inflight.local", "/echo"))[0] == 429
    assert statuses == [504]  # the route's request timeout ended it
    assert (await front.request("inflight.local", "/echo"))[0] == 200
    assert backend.hits == {"/echo": 4, "/slow-head": 1}

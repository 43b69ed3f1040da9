"""The traffic Middlewares (retry, forwardAuth, circuitBreaker) through every front (HttpServer
on asyncio and trio, FastGateway, the ASGI gateway on asyncio and trio), against real servers on
loopback: the same behaviour on each, because each asks the same policy and runs the same
steps."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.abc
import pytest

from kroute.gateway.router import Router
from kroute.gateway.server import HttpServer, IncomingRequest, OutgoingResponse
from kroute.rules.middlewares import forward_auth
from kroute.transport.conformance import Backend
from kroute.transport.proxy import RetryBudget
from kroute.transport.retry_policy import RetryPolicy
from kroute.watch.sources import MemorySource
from tests.fronts import FrontClient, echo_gateway, serving
from tests.pods import endpoint_slice, service, start_pods
from tests.test_middlewares_e2e import middleware, using
from tests.test_pipeline_e2e import headers_of

pytestmark = pytest.mark.anyio


async def serve_on(group: anyio.abc.TaskGroup, address: str, handler: Any, port: int = 0) -> int:
    """A TCP server on `address`:`port` (0: a free one) whose connections `handler` takes, until
    the group is cancelled; the port."""
    listener = await anyio.create_tcp_listener(local_host=address, local_port=port)

    async def serve(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        async with listener:
            task_status.started()
            await listener.serve(handler)

    await group.start(serve)
    return int(listener.extra(anyio.abc.SocketAttribute.local_port))


class Dropper:
    """An endpoint that accepts each connection and closes it at once, counting them: a
    backend that fails every try before a response head."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.hits = 0

    async def start(self, group: anyio.abc.TaskGroup, port: int) -> int:
        return await serve_on(group, self.address, self._drop, port)

    async def _drop(self, stream: anyio.abc.SocketStream) -> None:
        self.hits += 1
        await stream.aclose()


def retrying(host: str, attempts: int, service_name: str) -> list[dict[str, Any]]:
    name = f"retry-{host.split('.')[0]}"
    route = using(host, name)
    route["spec"]["routes"][0]["services"] = [{"name": service_name, "port": 80}]
    return [middleware(name, {"retry": {"attempts": attempts, "initialInterval": "1ms"}}), route]


@pytest.fixture
async def failing(every_front: str) -> AsyncIterator[tuple[FrontClient, list[Dropper], Any]]:
    """Service `down`: six endpoints that drop every connection; Service `mixed`: five such
    and one pod that answers."""
    async with anyio.create_task_group() as group:
        droppers = [Dropper(f"127.0.0.{20 + i}") for i in range(6)]
        port = 0
        for dropper in droppers:
            port = await dropper.start(group, port)
        pods, _ = await start_pods(group, "ok", ["127.0.0.30"], port)
        addresses = [d.address for d in droppers]
        objects = [
            service("down"), endpoint_slice("down", port, [(a, "ready") for a in addresses]),
            service("mixed"), endpoint_slice("mixed", port, [(a, "ready") for a in
                                                              [*addresses[:5], "127.0.0.30"]]),
            *retrying("four.local", 4, "down"), *retrying("one.local", 1, "down"),
            *retrying("six.local", 6, "mixed"),
        ]  # fmt: skip
        # (a budget that never runs out here: the attempt counts are the policy's)
        router = Router([MemorySource(objects=objects)],
                        retry=RetryPolicy(budget=RetryBudget(minimum=1000)))  # fmt: skip
        async with serving(router, every_front) as client:
            yield client, droppers, pods
        group.cancel_scope.cancel()


@pytest.mark.parametrize(("host", "body", "hits"), [
    ("four.local", None, 4),  # attempts: 4, a different endpoint each time
    ("one.local", None, 1),
    ("four.local", b"once", 1),  # a request with a body is never sent twice
])  # fmt: skip
# (The request with a body, on the ASGI gateway: the endpoint drops the connection before the
# body is read, so neither httpx's test client's body iterator nor the gateway's is run to its
# end; they are garbage collected, which trio may report at any later moment.)
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_retry_tries_as_many_endpoints_as_attempts_on_every_front(
    failing: tuple[FrontClient, list[Dropper], Any], host: str, body: bytes | None, hits: int
) -> None:
    client, droppers, _ = failing
    method = "GET" if body is None else "POST"
    status, _, _ = await client.request(host, "/", method=method, body=body or b"")
    assert status == 502
    assert sum(d.hits for d in droppers) == hits
    assert max(d.hits for d in droppers) == 1


async def test_retry_reaches_the_endpoint_that_answers(
    failing: tuple[FrontClient, list[Dropper], Any],
) -> None:
    client, droppers, pods = failing
    status, _, _ = await client.request("six.local", "/")
    assert status == 200
    assert pods[0].hits == 1
    assert sum(d.hits for d in droppers) <= 5


# -- forwardAuth -------------------------------------------------------------------------------


class AuthService:
    """An auth service on loopback: `/allow` says yes with headers and a cookie, `/deny` says 401
    with WWW-Authenticate and a body, `/slow` never answers (until the test ends), `/garbage`
    is answered with bytes that are not HTTP (by `Garbage`). It keeps what it was sent."""

    def __init__(self) -> None:
        self.seen: list[IncomingRequest] = []
        self.release = anyio.Event()
        self.server = HttpServer(self.handle)

    async def handle(self, request: IncomingRequest) -> OutgoingResponse:
        self.seen.append(request)
        if request.target.startswith("/allow"):
            return OutgoingResponse(200, [(b"X-Auth-User", b"alice"), (b"X-Auth-Role", b"admin"),
                                          (b"X-Other", b"not copied"),
                                          (b"Set-Cookie", b"session=s3cret; Path=/")], b"")  # fmt: skip
        if request.target.startswith("/deny"):
            return OutgoingResponse(401, [(b"WWW-Authenticate", b'Basic realm="kroute"'),
                                          (b"Location", b"/login")], b"who are you?")  # fmt: skip
        await self.release.wait()
        return OutgoingResponse(200, [], b"")

    async def start(self, group: anyio.abc.TaskGroup) -> int:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.40", local_port=0)
        await group.start(self.server.serve, listener)
        return int(listener.extra(anyio.abc.SocketAttribute.local_port))


async def garbage(stream: anyio.abc.SocketStream) -> None:
    async with stream:
        await stream.receive()
        await stream.send(b"this is not HTTP\r\n\r\n")


def auth_routes(port: int, garbage_port: int, down_port: int) -> list[dict[str, Any]]:
    base = f"http://127.0.0.40:{port}"
    specs = {
        # Traefik v3's Kubernetes example, with the options its page documents.
        "allow": {"address": f"{base}/allow", "trustForwardHeader": True,
                  "authResponseHeaders": ["X-Auth-User"],
                  "authResponseHeadersRegex": "^X-Auth-R", "authRequestHeaders": [
                      "Accept", "X-CustomHeader", "X-Forwarded-Method"],
                  "addAuthCookiesToResponse": ["session"]},
        "deny": {"address": f"{base}/deny"},
        "slow": {"address": f"{base}/slow"},
        "garbage": {"address": f"http://127.0.0.41:{garbage_port}/"},
        "down": {"address": f"http://127.0.0.42:{down_port}/"},
    }  # fmt: skip
    out: list[dict[str, Any]] = []
    for name, spec in specs.items():
        out += [middleware(f"auth-{name}", {"forwardAuth": spec}),
                using(f"{name}.local", "test-stripprefix", f"auth-{name}")]  # fmt: skip
    return [*out, middleware("test-stripprefix", {"stripPrefix": {"prefixes": ["/foobar"]}})]


@pytest.fixture
async def auth(
    every_front: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[FrontClient, Backend, AuthService]]:
    monkeypatch.setattr(forward_auth, "TIMEOUT", 0.5)  # (the slow service: a short wait)
    service_ = AuthService()
    async with anyio.create_task_group() as group:
        port = await service_.start(group)
        junk = await serve_on(group, "127.0.0.41", garbage)
        closed = await anyio.create_tcp_listener(local_host="127.0.0.42", local_port=0)
        down_port = int(closed.extra(anyio.abc.SocketAttribute.local_port))
        await closed.aclose()  # nothing listens there: connections are refused
        routes = auth_routes(port, junk, down_port)
        async with echo_gateway(routes, every_front) as (client, backend, _):
            yield client, backend, service_
        service_.release.set()
        group.cancel_scope.cancel()


async def test_forward_auth_allows_with_the_copied_headers(
    auth: tuple[FrontClient, Backend, AuthService],
) -> None:
    client, _, service_ = auth
    status, headers, body = await client.request(
        "allow.local", "/foobar/echo?q=1", headers=[
            (b"Accept", b"text/plain"), (b"X-CustomHeader", b"c"), (b"Cookie", b"not-sent=1"),
            (b"X-Auth-User", b"mallory"), (b"X-Auth-Role", b"spoofed")])  # fmt: skip
    assert status == 200, body
    got = headers_of(json.loads(body))
    assert got["x-auth-user"] == ["alice"]  # the client's value replaced
    assert got["x-auth-role"] == ["admin"]  # by the regex
    assert "x-other" not in got
    assert ("set-cookie", "session=s3cret; Path=/") in [(n.decode().lower(), v.decode())
                                                         for n, v in headers]  # fmt: skip
    (asked,) = service_.seen
    sent = {n.decode().lower(): v.decode() for n, v in asked.headers}
    assert asked.method == "GET"
    assert asked.target == "/allow"
    assert sent["accept"] == "text/plain"
    assert sent["x-customheader"] == "c"
    assert "cookie" not in sent  # only authRequestHeaders (and the X-Forwarded-* it sets)
    assert sent["x-forwarded-method"] == "GET"
    assert sent["x-forwarded-host"] == "allow.local"
    assert sent["x-forwarded-uri"] == "/echo?q=1"  # as the stripPrefix before it left it
    assert sent["x-forwarded-proto"] == "http"
    assert sent["x-forwarded-for"].split(",")[-1].strip() == "127.0.0.1"


async def test_forward_auth_calls_reuse_a_connection(
    auth: tuple[FrontClient, Backend, AuthService],
) -> None:
    """Every front's calls go through one long-lived transport (FastGateway's Router has none
    of its own: it used to make one, and a connection, per call)."""
    client, _, service_ = auth
    for _ in range(3):
        assert (await client.request("allow.local", "/foobar/echo"))[0] == 200
    assert len({asked.client_port for asked in service_.seen}) == 1


async def test_forward_auth_denial_is_returned_to_the_client(
    auth: tuple[FrontClient, Backend, AuthService],
) -> None:
    client, backend, _ = auth
    status, headers, body = await client.request("deny.local", "/foobar/echo")
    assert (status, body) == (401, b"who are you?")
    named = {n.decode().lower(): v.decode() for n, v in headers}
    assert named["www-authenticate"] == 'Basic realm="kroute"'
    assert named["location"].endswith("/login")
    assert named["location"].startswith("http://127.0.0.40:")  # made absolute, as Traefik
    assert backend.hits.get("/echo") is None


@pytest.mark.parametrize("host", ["down.local", "slow.local", "garbage.local"])
async def test_forward_auth_that_fails_refuses_the_request(
    auth: tuple[FrontClient, Backend, AuthService], host: str
) -> None:
    client, backend, _ = auth
    status, _, _ = await client.request(host, "/foobar/echo")
    assert status == 500
    assert backend.hits.get("/echo") is None  # never let through


# -- circuitBreaker ----------------------------------------------------------------------------


def breaker_routes() -> list[dict[str, Any]]:
    """Traefik v3's Kubernetes example (the expression), open for an hour on one route, for a
    moment on the other."""
    expression = "NetworkErrorRatio() > 0.5"
    return [
        middleware("cb-long", {"circuitBreaker": {"expression": expression,
                                                  "fallbackDuration": "1h"}}),
        middleware("cb-short", {"circuitBreaker": {"expression": expression, "checkPeriod": "1ms",
                                                   "fallbackDuration": "1ms",
                                                   "recoveryDuration": "1ms"}}),
        using("open.local", "cb-long"), using("recover.local", "cb-short"),
    ]  # fmt: skip


@pytest.fixture
async def breakers(every_front: str) -> AsyncIterator[tuple[FrontClient, Backend]]:
    async with echo_gateway(breaker_routes(), every_front) as (client, backend, _):
        yield client, backend


async def test_the_breaker_opens_under_a_failing_backend(
    breakers: tuple[FrontClient, Backend],
) -> None:
    client, backend = breakers
    assert (await client.request("open.local", "/bad-status"))[0] == 502  # a network error
    status, _, body = await client.request("open.local", "/echo")
    assert status == 503
    assert b"Service Unavailable" in body
    assert backend.hits.get("/echo") is None  # answered by the gateway, never forwarded


async def test_the_breaker_recovers(breakers: tuple[FrontClient, Backend]) -> None:
    client, backend = breakers
    assert (await client.request("recover.local", "/bad-status"))[0] == 502
    statuses = []
    while 200 not in statuses:  # open for 1 ms, then recovering for 1 ms, then closed
        await anyio.sleep(0.01)
        statuses.append((await client.request("recover.local", "/echo"))[0])
    assert set(statuses) <= {200, 503}
    assert backend.hits["/echo"] == 1


class ManualClock:
    """The Router's clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_the_breaker_runs_on_the_routers_clock_and_outlives_a_rebuild(
    every_front: str,
) -> None:
    """Open for an hour of the Router's clock: a rebuild (an unrelated object changed) keeps
    the route's breaker open; an hour and a second later it recovers, whatever time it is."""
    clock = ManualClock()
    async with echo_gateway(breaker_routes(), every_front, clock=clock) as (client, backend,
                                                                            router):  # fmt: skip
        assert (await client.request("open.local", "/bad-status"))[0] == 502
        assert (await client.request("open.local", "/echo"))[0] == 503
        source = router.sources[0]
        assert isinstance(source, MemorySource)
        rebuilds = router.statistics().rebuilds
        source.apply(middleware("unrelated", {"addPrefix": {"prefix": "/x"}}))
        assert router.statistics().rebuilds == rebuilds + 1
        assert (await client.request("open.local", "/echo"))[0] == 503  # (still open)
        clock.now += 3600.0  # recovering: none let through at its start
        assert (await client.request("open.local", "/echo"))[0] == 503
        clock.now += 10.0  # recovered (recoveryDuration 10s)
        assert (await client.request("open.local", "/echo"))[0] == 200
        assert backend.hits.get("/echo") == 1

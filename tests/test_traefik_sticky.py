"""Traefik's sticky cookies and passHostHeader on IngressRoute `services[]` and TraefikService
weighted: compiled (field errors naming the field), the pure choice (`stick`), and served
through every front against real echo backends on loopback. Manifests follow Traefik v3's
documentation examples (the same fields)."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

import kroute
from kroute.gateway.router.decisions import stick
from kroute.objects import BackendRef, StickyCookie, traefik_hash
from kroute.rules.request import RequestHead
from kroute.transport.conformance import Backend
from tests.builders import gateway
from tests.fronts import FrontClient, module_pair
from tests.test_gateway_e2e import endpoint_slice, service
from tests.test_traefik_services import Served, route_to, traefik_service, ts

# Traefik's "Sticky sessions" examples: on a Service of an IngressRoute, and on a weighted
# TraefikService (the cookie per child).
COOKIE = {"name": "cookie", "secure": True, "httpOnly": True, "sameSite": "none", "maxAge": 42,
          "path": "/"}  # fmt: skip
SERVICE_STICKY = {"name": "web", "port": 80, "sticky": {"cookie": COOKIE}}
WEIGHTED = traefik_service("wrr1", {"weighted": {
    "services": [{"name": "web", "port": 80, "weight": 1},
                 {"name": "other", "port": 80, "weight": 1}],
    "sticky": {"cookie": {"name": "lvl1", "httpOnly": True}}}})  # fmt: skip


def test_sticky_cookie_fields_and_set_cookie_as_traefik_writes_it() -> None:
    result = kroute.compile_objects([route_to("s.test", SERVICE_STICKY)])
    assert not result.errors
    assert not result.refused
    (route,) = result.table.routes
    (backend,) = route.backends
    assert route.sticky
    assert backend.sticky == StickyCookie("cookie", secure=True, http_only=True,
                                          same_site="None", max_age=42)  # fmt: skip
    assert backend.sticky.header("v") == (
        b"Set-Cookie",
        b"cookie=v; Path=/; Max-Age=42; HttpOnly; Secure; SameSite=None",
    )
    # Go's http.SetCookie: a negative maxAge expires the cookie now; 0 is a session cookie.
    assert StickyCookie("c", max_age=-1, path="").header("v") == (b"Set-Cookie", b"c=v; Max-Age=0")
    assert StickyCookie("c", domain="example.com").header("v")[1] == (
        b"c=v; Path=/; Domain=example.com"
    )


def test_cookie_name_defaults_and_sanitising_as_traefik() -> None:
    result = kroute.compile_objects([
        route_to("a.test", {"name": "web", "port": 80, "sticky": {"cookie": {}}}),
        route_to("b.test", {"name": "web", "port": 80, "sticky": {"cookie": {"name": "a b/c"}}}),
        route_to("c.test", {"name": "web", "port": 80, "sticky": {}}),
    ])  # fmt: skip
    a, b, c = (r.backends[0] for r in sorted(result.table.routes, key=lambda r: r.source.name))
    # Traefik: "_" and the SHA-1 of "_TRAEFIK_BACKEND_" + the service's name, 6 characters.
    assert a.sticky is not None
    assert a.sticky.name == "_cf9eb"
    assert b.sticky is not None
    assert b.sticky.name == "a_b_c"
    assert c.sticky is None  # (no cookie: no sticky sessions, as Traefik)


def test_malformed_sticky_options_reject_the_route_naming_the_field() -> None:
    result = kroute.compile_objects([
        route_to("a.test", {"name": "web", "port": 80,
                            "sticky": {"cookie": {"sameSite": "sometimes"}}}),
        route_to("b.test", {"name": "web", "port": 80, "sticky": {"cookie": {"maxage": 3}}}),
        route_to("c.test", {"name": "web", "port": 80, "passHostHeader": "no"}),
        route_to("d.test", {"name": "web", "port": 80, "sticky": {"cookie": {
            "path": "/\r\nX-Injected: yes"}}}),
        route_to("e.test", {"name": "web", "port": 80, "sticky": {"cookie": {
            "path": "/\u0100"}}}),
        route_to("f.test", {"name": "web", "port": 80, "sticky": {"cookie": {
            "domain": "-bad.example"}}}),
    ])  # fmt: skip
    assert sorted((e.field, e.reason) for e in result.errors) == [
        ("spec.routes[0].services[0].passHostHeader", "expected a boolean"),
        ("spec.routes[0].services[0].sticky.cookie.domain", "'-bad.example' is not a domain name"),
        ("spec.routes[0].services[0].sticky.cookie.maxage",
         "unknown option (known: name, secure, httpOnly, sameSite, maxAge, path, domain)"),
        ("spec.routes[0].services[0].sticky.cookie.path",
         "'/\\r\\nX-Injected: yes' is not a cookie path (visible ASCII, no ';')"),
        ("spec.routes[0].services[0].sticky.cookie.path",
         "'/\u0100' is not a cookie path (visible ASCII, no ';')"),
        ("spec.routes[0].services[0].sticky.cookie.sameSite",
         "'sometimes' is not none, lax or strict"),
    ]  # fmt: skip


def test_weighted_sticky_marks_each_child_with_its_value() -> None:
    nested = traefik_service("outer", {"weighted": {
        "services": [ts("wrr1", weight=1), {"name": "third", "port": 80, "weight": 2}],
        "sticky": {"cookie": {"name": "lvl0"}}}})  # fmt: skip
    result = kroute.compile_objects([WEIGHTED, nested, route_to("w.test", ts("outer"))])
    assert not result.errors
    assert not result.refused
    (route,) = result.table.routes
    assert [(b.name, b.weight) for b in route.backends] == [("web", 1), ("other", 1),
                                                            ("third", 4)]  # fmt: skip
    inner = traefik_hash("default-wrr1")
    assert [[(c.name, v) for c, v in b.stuck] for b in route.backends] == [
        [("lvl0", inner), ("lvl1", traefik_hash("default-web-80"))],
        [("lvl0", inner), ("lvl1", traefik_hash("default-other-80"))],
        [("lvl0", traefik_hash("default-third-80"))],
    ]


def _head(cookie: str = "") -> RequestHead:
    headers = {"Cookie": cookie} if cookie else {}
    return RequestHead.build("GET", "w.test", "/", headers=headers)


def test_stick_gives_a_sticky_service_share_to_the_child_its_cookie_names() -> None:
    lvl0, lvl1 = StickyCookie("lvl0"), StickyCookie("lvl1")
    backends = [
        BackendRef("default", "web", 80, 1, stuck=((lvl0, "in"), (lvl1, "w"))),
        BackendRef("default", "other", 80, 1, stuck=((lvl0, "in"), (lvl1, "o"))),
        BackendRef("default", "third", 80, 4, stuck=((lvl0, "3"),)),
        BackendRef("default", "plain", 80, 6),  # (a sibling of the sticky service)
    ]  # fmt: skip
    assert stick(backends, _head(), 0.5) is None  # no cookie: the route's own split
    assert stick(backends, _head("lvl0=stale"), 0.5) is None  # names no child
    draws = [k / 1200 for k in range(1200)]  # (evenly spread: exact counts per weight)
    picked = [stick(backends, _head("lvl0=in"), draw) for draw in draws]
    # The sticky service keeps its share (6 of 12) for the child "in" (web and other evenly);
    # the plain sibling keeps its own.
    assert {i: picked.count(i) for i in set(picked)} == {0: 300, 1: 300, 3: 600}
    both = {stick(backends, _head("lvl0=in; lvl1=o"), draw) for draw in draws}
    assert both == {1, 3}


@pytest.fixture
async def served(every_front: str, request: pytest.FixtureRequest) -> AsyncIterator[Served]:
    async with module_pair(request.module, every_front) as out:
        yield out


def pair_objects(one: Backend, two: Backend) -> list[dict[str, Any]]:
    second = endpoint_slice("web", two.port, two.address)
    second["metadata"] = {**second["metadata"], "name": "web-2"}
    with socket.socket() as closed:  # (a port nothing listens on: connections refused)
        closed.bind(("127.0.0.4", 0))
        dead = closed.getsockname()[1]
    flaky = endpoint_slice("flaky", dead, "127.0.0.4")
    flaky_two = endpoint_slice("flaky", two.port, two.address)
    flaky_two["metadata"] = {**flaky_two["metadata"], "name": "flaky-2"}
    return [
        gateway(), service("web"), service("other"),
        endpoint_slice("web", one.port, one.address), second,
        endpoint_slice("other", two.port, two.address),
        WEIGHTED,
        route_to("sticky.local", SERVICE_STICKY),
        route_to("plain.local", {"name": "web", "port": 80}),
        route_to("wrr.local", ts("wrr1")),
        route_to("host.local", {"name": "web", "port": 80, "passHostHeader": False}),
        service("flaky"), flaky, flaky_two,
        route_to("retry.local", {"name": "flaky", "port": 80, "passHostHeader": False}),
    ]  # fmt: skip


def _cookies(headers: list[tuple[bytes, bytes]]) -> list[bytes]:
    return [v for n, v in headers if n.lower() == b"set-cookie"]


async def _hits(front: FrontClient, host: str, cookie: bytes, times: int) -> None:
    for _ in range(times):
        status, headers, _ = await front.request(host, "/echo", headers=[(b"Cookie", cookie)])
        assert status == 200
        assert _cookies(headers) == []  # (the cookie says so already: not set again)


@pytest.mark.anyio
async def test_a_service_sticky_cookie_keeps_the_client_on_one_endpoint(served: Served) -> None:
    front, one, two, _ = served
    status, headers, _ = await front.request("sticky.local", "/echo")
    assert status == 200
    (cookie,) = _cookies(headers)
    assert cookie.endswith(b"; Path=/; Max-Age=42; HttpOnly; Secure; SameSite=None")
    assert cookie.startswith(b"cookie=")
    first = "one" if one.hits else "two"
    await _hits(front, "sticky.local", cookie.split(b";")[0], 6)
    assert (one.hits if first == "one" else two.hits) == {"/echo": 7}
    # A route without sticky: both endpoints, no cookie.
    for _ in range(4):
        status, headers, _ = await front.request("plain.local", "/echo")
        assert _cookies(headers) == []
    assert one.hits["/echo"] > 0
    assert two.hits["/echo"] > 0


@pytest.mark.anyio
async def test_a_weighted_sticky_cookie_keeps_the_client_on_one_child(served: Served) -> None:
    front, _, two, _ = served
    values = {}
    for _ in range(4):  # (no cookie: each answer sets it, for the child that answered)
        status, headers, body = await front.request("wrr.local", "/echo")
        assert status == 200
        (cookie,) = _cookies(headers)
        assert cookie.endswith(b"; Path=/; HttpOnly")
        values[cookie.split(b";")[0]] = json.loads(body)["target"]
    # web's endpoints are 127.0.0.2 and .3; other is .3 only: the "other" cookie keeps to it.
    other = b"lvl1=" + traefik_hash("default-other-80").encode()
    assert other in values
    before = dict(two.hits)
    await _hits(front, "wrr.local", other, 6)
    assert two.hits["/echo"] == before.get("/echo", 0) + 6


@pytest.mark.anyio
async def test_pass_host_header_false_sends_the_endpoint_address(served: Served) -> None:
    front, one, two, _ = served
    for _ in range(4):
        status, _, body = await front.request("host.local", "/echo",
                                              headers=[(b"X-Probe", b"1")])  # fmt: skip
        assert status == 200
        hosts = [v for n, v in json.loads(body)["headers"] if n.lower() == "host"]
        assert hosts in ([f"127.0.0.2:{one.port}"], [f"127.0.0.3:{two.port}"])
    status, _, body = await front.request("plain.local", "/echo")
    assert [v for n, v in json.loads(body)["headers"] if n.lower() == "host"] == ["plain.local"]


@pytest.mark.anyio
async def test_a_retry_names_the_endpoint_it_goes_to(served: Served) -> None:
    front, _, two, router = served
    for _ in range(4):  # (round robin: the refusing endpoint comes first at least once)
        status, _, body = await front.request("retry.local", "/echo")
        assert status == 200
        hosts = [v for n, v in json.loads(body)["headers"] if n.lower() == "host"]
        assert hosts == [f"127.0.0.3:{two.port}"]
    (pool,) = [p for p in router.statistics().pools if p.name.startswith("default/flaky")]
    assert any(e.endpoint.startswith("127.0.0.4") and e.recent_failures for e in pool.endpoints)

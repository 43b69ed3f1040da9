"""TraefikService (weighted, mirroring, failover) and the IngressRoute `services[]` fields:
compiled into the routes' backends and steps, what cannot map failing closed with the reason,
and served through every front against real echo backends on loopback. The manifests follow
Traefik v3's documentation examples (the same fields)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

import kroute
from kroute.gateway.router import Router
from kroute.pipeline.filters import Mirror
from kroute.transport.conformance import Backend
from tests.builders import gateway, ingressroute
from tests.fronts import FrontClient, module_pair
from tests.test_gateway_e2e import endpoint_slice, service
from tests.test_middlewares_e2e import middleware


def traefik_service(name: str, spec: dict[str, Any], namespace: str = "default") -> dict[str, Any]:
    return {"apiVersion": "traefik.io/v1alpha1", "kind": "TraefikService",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}  # fmt: skip


def route_to(host: str, *services: dict[str, Any], **route: Any) -> dict[str, Any]:
    return ingressroute(host.split(".")[0], [{"match": f"Host(`{host}`)", "kind": "Rule",
                                              "services": list(services), **route}])  # fmt: skip


def ts(name: str, **more: Any) -> dict[str, Any]:
    return {"name": name, "kind": "TraefikService", **more}


# Traefik's "Weighted Round Robin" and "Mirroring" examples, field for field.
DOCS = [
    traefik_service("wrr1", {"weighted": {"services": [
        {"name": "svc1", "port": 80, "weight": 1},
        {"name": "wrr2", "kind": "TraefikService", "weight": 1},
        {"name": "mirror1", "kind": "TraefikService", "weight": 1}]}}),
    traefik_service("wrr2", {"weighted": {"services": [
        {"name": "svc2", "port": 80, "weight": 1},
        {"name": "svc3", "port": 80, "weight": 1}]}}),
    traefik_service("mirror1", {"mirroring": {"name": "svc1", "port": 80, "mirrors": [
        {"name": "svc2", "port": 80, "percent": 20},
        {"name": "svc3", "port": 80, "percent": 20}]}}),
    ingressroute("ingressroutebar", [{"match": "Host(`example.com`) && PathPrefix(`/foo`)",
                                      "kind": "Rule", "services": [
                                          {"name": "wrr1", "namespace": "default",
                                           "kind": "TraefikService"}]}]),
]  # fmt: skip


def test_nested_weights_become_the_share_of_each_service() -> None:
    result = kroute.compile_objects(DOCS)
    assert not result.errors
    assert not result.refused
    (route,) = result.table.routes
    assert [(str(b), b.weight) for b in route.backends] == [
        ("default/svc1:80", 2), ("default/svc2:80", 1), ("default/svc3:80", 1),
        ("default/svc1:80", 2),  # (through mirror1: the same Service, with its mirrors)
    ]  # fmt: skip
    assert [[s.label for s in chain.steps] for chain in route.backend_chains] == [
        [], [], [],
        ["RequestMirror to default/svc2:80 (20%, spec.routes[0].services[0]: TraefikService "
         "default/wrr1 > default/mirror1 (spec.mirroring.mirrors[0]))",
         "RequestMirror to default/svc3:80 (20%, spec.routes[0].services[0]: TraefikService "
         "default/wrr1 > default/mirror1 (spec.mirroring.mirrors[1]))"],
    ]  # fmt: skip
    assert isinstance(route.backend_chains[3].steps[0], Mirror)


def test_route_weights_multiply_the_service_shares() -> None:
    result = kroute.compile_objects([
        traefik_service("split", {"weighted": {"services": [
            {"name": "a", "port": 80, "weight": 1}, {"name": "b", "port": 80, "weight": 2}]}}),
        route_to("w.test", ts("split", weight=3), {"name": "c", "port": 80, "weight": 1}),
    ])  # fmt: skip
    (route,) = result.table.routes
    # split: 3/4 of the traffic, a 1/3 and b 2/3 of it; c 1/4.
    assert [(b.name, b.weight) for b in route.backends] == [("a", 1), ("b", 2), ("c", 1)]


FAILING = [
    traefik_service("loop-a", {"weighted": {"services": [ts("loop-b")]}}),
    traefik_service("loop-b", {"weighted": {"services": [ts("loop-a")]}}),
    traefik_service("sticky", {"weighted": {"services": [{"name": "a", "port": 80}],
                                            "sticky": {"cookie": {"name": "lb"}},
                                            "healthCheck": {}}}),
    traefik_service("two", {"weighted": {"services": []}, "mirroring": {"name": "a"}}),
    traefik_service("by-answer", {"failover": {"service": {"name": "a", "port": 80},
                                               "fallback": {"name": "b", "port": 80},
                                               "errors": {"status": ["500-599"]}}}),
    traefik_service("mirror-ts", {"mirroring": {"name": "a", "port": 80,
                                                "mirrors": [ts("loop-a", percent=10)]}}),
    route_to("loop.test", ts("loop-a")),
    route_to("sticky.test", ts("sticky")),
    route_to("two.test", ts("two")),
    route_to("missing.test", ts("nowhere")),
    route_to("answer.test", ts("by-answer")),
    route_to("mirror.test", ts("mirror-ts")),
    route_to("p2c.test", {"name": "a", "port": 80, "strategy": "p2c"}),
    traefik_service("plain", {"weighted": {"services": [{"name": "a", "port": 80}]}}),
    route_to("host.test", ts("plain", passHostHeader=False)),
    route_to("cookie.test", ts("plain", sticky={"cookie": {"name": "c"}})),
    route_to("tls.test", {"name": "a", "port": 80, "serversTransport": "mytransport"}),
    route_to("check.test", {"name": "a", "port": 80, "healthCheck": {"path": "/health"}}),
]  # fmt: skip


def test_what_cannot_map_fails_closed_with_the_reason() -> None:
    result = kroute.compile_objects(FAILING)
    assert [(e.obj, e.field) for e in result.errors] == [("TraefikService default/two", "spec")]
    refused = {e.obj.split("/")[1]: (e.field, e.reason) for e in result.refused}
    assert refused == {
        "loop": ("spec.routes[0].services[0]", "answers 500: TraefikService cycle: "
                 "default/loop-a > default/loop-b > default/loop-a"),
        "sticky": ("spec.routes[0].services[0]", "answers 500: TraefikService default/sticky "
                   "(spec.weighted.healthCheck): healthCheck is not supported by kroute"),
        "two": ("spec.routes[0].services[0]", "answers 500: TraefikService default/two is "
                "invalid: spec: a TraefikService is exactly one of weighted, mirroring, "
                "failover; found weighted, mirroring"),
        "missing": ("spec.routes[0].services[0]",
                    "answers 500: TraefikService default/nowhere does not exist"),
        "answer": ("spec.routes[0].services[0]", "answers 500: TraefikService default/by-answer "
                   "(spec.failover.errors.status): failing over on the main service's answer is "
                   "not supported by kroute (only while it has no usable endpoint)"),
        "mirror": ("spec.routes[0].services[0]", "answers 500: TraefikService default/mirror-ts "
                   "(spec.mirroring.mirrors[0]): mirror target: TraefikService cycle: "
                   "default/mirror-ts > default/loop-a > default/loop-b > default/loop-a"),
        "p2c": ("spec.routes[0].services[0].strategy", "answers 500: strategy 'p2c': kroute "
                "balances a Service's endpoints as the gateway is configured "
                "(Router(balancer=...)), not per route: only wrr (RoundRobin) is accepted"),
        "host": ("spec.routes[0].services[0].passHostHeader", "answers 500: passHostHeader "
                 "False: it applies to a Kubernetes Service: set it on the TraefikService's "
                 "own services"),
        "cookie": ("spec.routes[0].services[0].sticky", "answers 500: sticky {'cookie': "
                   "{'name': 'c'}}: it applies to a Kubernetes Service: set it on the "
                   "TraefikService's own services (or weighted.sticky)"),
        "tls": ("spec.routes[0].services[0].serversTransport", "answers 500: serversTransport "
                "'mytransport': serversTransport is not supported by kroute yet"),
        "check": ("spec.routes[0].services[0].healthCheck", "answers 500: healthCheck {'path': "
                  "'/health'}: a Service's health checks are set on the Service (kroute.dev/* "
                  "annotations, docs/pools.md)"),
    }  # fmt: skip


def test_failover_fields_are_checked() -> None:
    main, fallback = {"name": "a", "port": 80}, {"name": "b", "port": 80}
    result = kroute.compile_objects([
        traefik_service("ok", {"failover": {"service": main, "fallback": fallback,
                                            "healthCheck": {}}}),
        traefik_service("typo", {"failover": {"service": main, "fallbak": fallback}}),
        traefik_service("check", {"failover": {"service": main, "fallback": fallback,
                                               "healthCheck": {"path": "/"}}}),
    ])  # fmt: skip
    assert sorted((e.obj, e.field) for e in result.errors) == [
        ("TraefikService default/check", "spec.failover.healthCheck.path"),
        ("TraefikService default/typo", "spec.failover.fallbak"),
    ]


def test_defaults_and_flush_interval_are_accepted() -> None:
    result = kroute.compile_objects([route_to("ok.test", {
        "name": "a", "port": 80, "strategy": "RoundRobin", "passHostHeader": True,
        "responseForwarding": {"flushInterval": "1ms"}, "scheme": "http", "healthCheck": {},
    }), route_to("wrr.test", {"name": "a", "port": 80, "strategy": "wrr"})])  # fmt: skip
    assert not result.errors
    assert not result.refused


def test_a_service_reference_runs_its_own_middlewares() -> None:
    result = kroute.compile_objects([
        middleware("strip", {"stripPrefix": {"prefixes": ["/api"]}}),
        traefik_service("split", {"weighted": {"services": [
            {"name": "a", "port": 80, "middlewares": [{"name": "strip"}]},
            {"name": "b", "port": 80}]}}),
        route_to("mw.test", ts("split")),
    ])  # fmt: skip
    assert not result.refused
    (route,) = result.table.routes
    assert [[s.label.split(" (")[0] for s in c.steps] for c in route.backend_chains] == [
        ["StripPrefix"],
        [],
    ]


Served = tuple[FrontClient, Backend, Backend, Router]


@pytest.fixture
async def served(every_front: str, request: pytest.FixtureRequest) -> AsyncIterator[Served]:
    async with module_pair(request.module, every_front) as out:
        yield out


def pair_objects(main: Backend, other: Backend) -> list[dict[str, Any]]:
    return [
        gateway(), service("web"), service("other"), service("empty"),
        endpoint_slice("web", main.port, main.address),
        endpoint_slice("other", other.port, other.address),
        traefik_service("split", {"weighted": {"services": [
            {"name": "web", "port": 80, "weight": 1}, {"name": "other", "port": 80, "weight": 1}]}}),
        traefik_service("shadowed", {"mirroring": {"name": "web", "port": 80, "mirrors": [
            {"name": "other", "port": 80, "percent": 100}]}}),
        traefik_service("down", {"failover": {"service": {"name": "empty", "port": 80},
                                              "fallback": {"name": "other", "port": 80}}}),
        traefik_service("up", {"failover": {"service": {"name": "web", "port": 80},
                                            "fallback": {"name": "other", "port": 80}}}),
        route_to("split.local", ts("split")),
        route_to("mirror.local", ts("shadowed")),
        route_to("down.local", ts("down")),
        route_to("up.local", ts("up")),
        route_to("missing.local", ts("nowhere")),
        traefik_service("shadow-split", {"mirroring": {"name": "web", "port": 80, "mirrors": [
            ts("split", percent=100)]}}),
        route_to("mirror-ts.local", ts("shadow-split")),
        middleware("deny", {"ipAllowList": {"sourceRange": ["192.0.2.0/24"]}}),  # (not loopback)
        route_to("down-denied.local", ts("down", middlewares=[{"name": "deny"}])),
        route_to("up-denied.local", ts("up", middlewares=[{"name": "deny"}])),
    ]  # fmt: skip


async def get(front: FrontClient, host: str) -> int:
    status, _, body = await front.request(host, "/echo")
    if status == 200:
        assert json.loads(body)["target"] == "/echo"
    return status


@pytest.mark.anyio
async def test_weighted_sends_to_each_service(served: Served) -> None:
    front, main, other, _ = served
    for _ in range(40):
        assert await get(front, "split.local") == 200
    assert main.hits["/echo"] + other.hits["/echo"] == 40
    assert main.hits["/echo"] > 5
    assert other.hits["/echo"] > 5


@pytest.mark.anyio
async def test_mirroring_copies_to_the_mirror(served: Served) -> None:
    front, main, other, router = served
    assert await get(front, "mirror.local") == 200
    with anyio.fail_after(5):
        while router.mirrors.mirrored < 1:  # the copy travels on its own, after the answer
            await anyio.sleep(0.005)
    assert main.hits == {"/echo": 1}
    assert other.hits == {"/echo": 1}


@pytest.mark.anyio
async def test_a_traefik_service_mirror_spreads_copies_over_its_services(served: Served) -> None:
    front, main, other, router = served
    for _ in range(6):
        assert await get(front, "mirror-ts.local") == 200
    with anyio.fail_after(5):
        while router.mirrors.mirrored < 6:
            await anyio.sleep(0.005)
    # 6 requests to web (main), 6 copies over split's web and other.
    assert main.hits["/echo"] + other.hits["/echo"] == 12
    assert main.hits["/echo"] > 6
    assert other.hits["/echo"] > 0


def test_a_traefik_service_mirror_target_is_resolved_to_its_services() -> None:
    result = kroute.compile_objects([
        traefik_service("split", {"weighted": {"services": [
            {"name": "a", "port": 80, "weight": 1}, {"name": "b", "port": 80, "weight": 3}]}}),
        traefik_service("shadow", {"mirroring": {"name": "web", "port": 80, "mirrors": [
            ts("split", percent=10)]}}),
        traefik_service("shadow-bad", {"mirroring": {"name": "web", "port": 80, "mirrors": [
            ts("nowhere", percent=10)]}}),
        route_to("m.test", ts("shadow")),
        route_to("bad.test", ts("shadow-bad")),
    ])  # fmt: skip
    assert [(e.field, e.reason) for e in result.refused] == [
        ("spec.routes[0].services[0]", "answers 500: TraefikService default/shadow-bad "
         "(spec.mirroring.mirrors[0]): mirror target: default/shadow-bad > TraefikService "
         "default/nowhere does not exist"),
    ]  # fmt: skip
    route = next(r for r in result.table.routes if r.source.name == "m")
    (mirror,) = route.backend_chains[0].steps
    assert isinstance(mirror, Mirror)
    assert mirror.label.startswith("RequestMirror to TraefikService default/split (10%, ")
    assert [(b.name, b.weight) for b in mirror.backends] == [("a", 1), ("b", 3)]
    assert [mirror.target(d).name for d in (0.0, 0.24, 0.25, 0.99)] == ["a", "a", "b", "b"]


@pytest.mark.anyio
async def test_failover_goes_to_the_fallback_while_the_main_service_has_no_endpoint(
    served: Served,
) -> None:
    front, main, other, _ = served
    assert await get(front, "down.local") == 200
    assert await get(front, "down.local") == 200
    assert await get(front, "up.local") == 200
    assert other.hits == {"/echo": 2}
    assert main.hits == {"/echo": 1}


@pytest.mark.anyio
async def test_a_failover_falling_back_keeps_its_middlewares(served: Served) -> None:
    """The Middlewares on a service reference guard the failover as a whole: its fallback
    serves through them too (found in review: they were skipped once the main had no
    endpoint, a fail-open)."""
    front, main, other, _ = served
    assert await get(front, "up-denied.local") == 403
    assert await get(front, "down-denied.local") == 403
    assert main.hits == other.hits == {}


@pytest.mark.anyio
async def test_a_missing_traefik_service_is_never_forwarded(served: Served) -> None:
    front, main, other, _ = served
    assert await get(front, "missing.local") == 500
    assert main.hits == {}
    assert other.hits == {}

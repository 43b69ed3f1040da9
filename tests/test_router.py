"""Router: sources -> table and pools -> decisions and forwarding (memory source and transport)."""

from __future__ import annotations

import random
from typing import Any

import anyio
import pytest

from kroute.errors import NoHealthyEndpoint, NoRoute
from kroute.gateway.router import ROUTING_KINDS, Router
from kroute.pool.health import Outcome
from kroute.rules.request import RequestHead
from kroute.transport.base import ForwardRequest, Headers
from kroute.transport.memory import MemoryTransport
from kroute.watch import kinds
from kroute.watch.sources import MemorySource
from tests.builders import ingress


def service(name: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "default"}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta,
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}  # fmt: skip


def endpoint_slice(service_name: str, *addresses: str, name: str | None = None,
                   terminating: tuple[str, ...] = ()) -> dict[str, Any]:  # fmt: skip
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
        "metadata": {"name": name or f"{service_name}-1", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": service_name}},
        "ports": [{"name": "http", "port": 8080}],
        "endpoints": [{"addresses": [a], "conditions": {
            "ready": a not in terminating, "serving": True, "terminating": a in terminating}}
            for a in addresses],
    }  # fmt: skip


def seed() -> MemorySource:
    return MemorySource(objects=[
        ingress("www", [("test-www.local", [("/", "Prefix", "test-www")])]),
        ingress("api", [("test-api.local", [("/", "Prefix", "test-api")])]),
        service("test-www"), service("test-api"),
        endpoint_slice("test-www", "10.0.0.1", "10.0.0.2"),
    ])  # fmt: skip


def head(host: str, path: str = "/") -> RequestHead:
    return RequestHead.build("GET", host, path)


def test_decisions_404_503_and_endpoints() -> None:
    router = Router([seed()], rng=random.Random(1))
    assert router.ready
    assert router.route(head("nobody.local")).status == 404
    decision = router.route(head("test-api.local"))  # the Service has no endpoint
    assert decision.status == 503
    assert decision.route is not None
    assert "no usable endpoint" in decision.reason
    picks = {router.route(head("test-www.local")).pick.endpoint.address for _ in range(4)}  # type: ignore[union-attr]
    assert picks == {"10.0.0.1", "10.0.0.2"}


def test_changes_reach_decisions_at_once() -> None:
    source = seed()
    router = Router([source], rng=random.Random(1))
    source.apply(endpoint_slice("test-api", "10.0.1.1"))
    assert router.route(head("test-api.local")).pick.endpoint.address == "10.0.1.1"  # type: ignore[union-attr]
    source.apply(ingress("www", [("test-www.local", [("/new", "Prefix", "test-api")])]))
    assert router.route(head("test-www.local", "/new/x")).backend.name == "test-api"  # type: ignore[union-attr]
    assert router.route(head("test-www.local", "/")).status == 404
    source.delete(endpoint_slice("test-api", "10.0.1.1"))
    assert router.route(head("test-api.local")).status == 503
    assert router.statistics().rebuilds >= 2


def test_route_target_agrees_with_route_through_changes() -> None:
    """route_target's short way (a route whose one backend has a pool) gives route's answers:
    the same endpoints in turn, the same 503 once the endpoints are gone, the new backend after
    a rebuild; each decision to send carries the pool that its pick is from."""
    source = seed()
    router, again = Router([source], rng=random.Random(1)), Router([source], rng=random.Random(1))

    def both(host: str, path: str = "/") -> tuple[Any, Any]:
        fast = router.route_target("GET", host, path, lambda: head(host, path))
        return fast, again.route(head(host, path))

    for _ in range(5):
        fast, slow = both("test-www.local")
        assert (fast.status, fast.pick, fast.backend) == (slow.status, slow.pick, slow.backend)
        pool = fast.pool
        assert pool is not None
        assert pool.statistics(now=0).name == "default/test-www:80"
        assert pool is router.pool(fast.backend)
    source.delete(endpoint_slice("test-www", "10.0.0.1", "10.0.0.2"))
    fast, slow = both("test-www.local")
    assert (fast.status, fast.reason) == (slow.status, slow.reason) == (503, slow.reason)
    assert fast.pool is None
    source.apply(ingress("www", [("test-www.local", [("/", "Prefix", "test-api")])]))
    source.apply(endpoint_slice("test-api", "10.0.1.1"))
    fast, slow = both("test-www.local")
    assert fast.backend.name == slow.backend.name == "test-api"
    assert fast.pick.endpoint.address == "10.0.1.1"
    assert both("nobody.local")[0].status == 404


def test_a_burst_of_routing_changes_costs_one_rebuild() -> None:
    source = seed()
    router = Router([source], rng=random.Random(1))
    before = router.statistics().rebuilds
    for i in range(20):
        source.apply(ingress(f"extra-{i}", [(f"x{i}.local", [("/", "Prefix", "test-www")])]))
    assert router.statistics().rebuilds == before + 1  # read once: rebuilt once
    assert router.route(head("x19.local")).status == 200
    assert router.route(head("x0.local")).status == 200
    assert router.statistics().rebuilds == before + 1
    source.delete(ingress("extra-0", []))
    assert router.route(head("x0.local")).status == 404  # never an outdated table
    assert router.statistics().rebuilds == before + 2


def test_a_status_write_costs_no_rebuild() -> None:
    """Routing never reads `status`: a change to it alone (a controller's write, kroute's own
    StatusWriter's) leaves the table as it is; any other change rebuilds it."""
    source = seed()
    router = Router([source], rng=random.Random(1))
    www = ingress("extra", [("x.local", [("/", "Prefix", "test-www")])])
    source.apply({**www, "metadata": {**www["metadata"], "resourceVersion": "1"}})
    assert router.route(head("x.local")).status == 200
    before = router.statistics().rebuilds
    written = {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}
    source.apply({**www, "metadata": {**www["metadata"], "resourceVersion": "2"},
                  "status": written})  # fmt: skip
    assert router.route(head("x.local")).status == 200
    assert router.statistics().rebuilds == before
    labelled = {**www["metadata"], "resourceVersion": "3", "labels": {"a": "b"}}
    source.apply({**www, "metadata": labelled, "status": written})
    router.route(head("x.local"))
    assert router.statistics().rebuilds == before + 1


def test_every_watched_kind_but_pools_and_tls_rebuilds_the_table() -> None:
    """A kind the sources watch by default either feeds the pools (Services, EndpointSlices)
    or the table (Secrets too: basicAuth Middlewares read them; the certificates as well): a
    new kind cannot be watched and then ignored."""
    feeds_elsewhere = {kinds.SERVICE, kinds.ENDPOINT_SLICE}
    assert set(kinds.ROUTING_KINDS) - feeds_elsewhere == ROUTING_KINDS
    source = seed()
    router = Router([source], rng=random.Random(1))
    before = router.statistics().rebuilds
    source.apply({"apiVersion": "traefik.io/v1alpha1", "kind": "Middleware",
                  "metadata": {"name": "auth", "namespace": "default"},
                  "spec": {"basicAuth": {"secret": "users"}}})  # fmt: skip
    router.route(head("test-www.local"))
    assert router.statistics().rebuilds == before + 1  # IngressRoutes that use it recompile


@pytest.mark.anyio
async def test_run_rebuilds_one_loop_turn_after_a_burst() -> None:
    source = seed()
    router = Router([source], rng=random.Random(1))
    before = router._rebuilds
    async with anyio.create_task_group() as group:
        group.start_soon(router.run)
        await anyio.sleep(0.01)
        for i in range(5):
            source.apply(ingress(f"extra-{i}", [(f"x{i}.local", [("/", "Prefix", "test-www")])]))
        assert router._rebuilds == before  # nobody has read the table yet
        await anyio.sleep(0.05)
        assert router._rebuilds == before + 1  # the run() task rebuilt once, unasked
        group.cancel_scope.cancel()


def test_rolling_update_fences_terminating_endpoints() -> None:
    source = seed()
    router = Router([source], rng=random.Random(1))
    # A new pod is ready, an old one terminating: new traffic only to ready ones.
    source.apply(endpoint_slice("test-www", "10.0.0.1", "10.0.0.2", "10.0.0.3",
                                terminating=("10.0.0.1",)))  # fmt: skip
    picks = {router.route(head("test-www.local")).pick.endpoint.address for _ in range(6)}  # type: ignore[union-attr]
    assert picks == {"10.0.0.2", "10.0.0.3"}


def test_pool_health_survives_table_rebuilds() -> None:
    source = seed()
    router = Router([source], rng=random.Random(1))
    decision = router.route(head("test-www.local"))
    assert decision.backend is not None
    pool = router.pool(decision.backend)
    assert pool is not None
    for _ in range(5):
        pool.begin(("10.0.0.1", 8080))
        pool.end(("10.0.0.1", 8080), Outcome.HTTP_5XX, now=router.clock())
    source.apply(ingress("other", [("other.local", [("/", "Prefix", "test-www")])]))  # rebuild
    assert router.pool(decision.backend) is pool
    picks = {router.route(head("test-www.local")).pick.endpoint.address for _ in range(6)}  # type: ignore[union-attr]
    assert picks == {"10.0.0.2"}


def test_health_settings_from_service_annotations() -> None:
    source = MemorySource(objects=[
        ingress("www", [("w.local", [("/", "Prefix", "web")])]),
        service("web", {"kroute.dev/outlier-consecutive-5xx": "2"}),
        endpoint_slice("web", "10.0.0.1", "10.0.0.2"),
    ])  # fmt: skip
    router = Router([source])
    decision = router.route(head("w.local"))
    pool = router.pool(decision.backend)  # type: ignore[arg-type]
    assert pool is not None
    assert pool.health.passive.consecutive_5xx == 2


@pytest.mark.anyio
async def test_forward_retries_another_endpoint_and_reports_health() -> None:
    async def app(request: ForwardRequest) -> tuple[int, Headers, bytes]:
        return 200, [], b"from 10.0.0.2"

    transport = MemoryTransport({"10.0.0.2:8080": app})  # 10.0.0.1 refuses connections
    router = Router([seed()], transport=transport, rng=random.Random(3))
    for _ in range(4):
        decision, response = await router.forward(
            head("test-www.local"), ForwardRequest("GET", "/", [(b"Host", b"test-www.local")])
        )
        assert await response.read() == b"from 10.0.0.2"
        assert decision.pick is not None
        assert decision.pick.endpoint.address == "10.0.0.2"
    stats = {e.endpoint: e for p in router.statistics().pools for e in p.endpoints}
    assert stats["10.0.0.1:8080"].state == "ejected"  # three connection failures in a row
    with pytest.raises(NoRoute):
        await router.forward(head("nobody.local"), ForwardRequest("GET", "/"))
    with pytest.raises(NoHealthyEndpoint):
        await router.forward(head("test-api.local"), ForwardRequest("GET", "/"))


def test_endpoint_affinity_by_hash_key_and_sticky_cookie_offline() -> None:
    from kroute.pool.balance import HashOn, RingHash

    hashing = Router([seed()], balancer=RingHash, hash_on=HashOn(header="X-User"),
                     rng=random.Random(3))  # fmt: skip

    def user(name: str) -> RequestHead:
        return RequestHead.build("GET", "test-www.local", "/", headers=[("X-User", name)])

    chosen = {name: {hashing.route(user(name)).pick.endpoint.address for _ in range(5)}  # type: ignore[union-attr]
              for name in (f"u{n}" for n in range(16))}  # fmt: skip
    assert all(len(addresses) == 1 for addresses in chosen.values())
    assert set().union(*chosen.values()) == {"10.0.0.1", "10.0.0.2"}
    # route_target (the fronts' remembered path) answers the same: affinity bypasses the memo.
    again = hashing.route_target("GET", "test-www.local", "/", lambda: user("u1"))
    assert again.pick is not None
    assert {again.pick.endpoint.address} == chosen["u1"]

    sticky = Router([seed()], sticky_cookie="aff", rng=random.Random(3))
    first = sticky.route(head("test-www.local"))
    header = sticky.sticky_header(first)
    assert header is not None
    assert header[0] == b"Set-Cookie"
    cookie = header[1].split(b";")[0].decode()
    for _ in range(4):
        back = sticky.route(RequestHead.build("GET", "test-www.local", "/",
                                              headers=[("Cookie", f"x=1; {cookie}")]))  # fmt: skip
        assert back.pick == first.pick
        assert sticky.sticky_header(back) is None  # the cookie already says so
    assert Router([seed()]).sticky_header(first) is None  # off unless asked for

"""KubernetesSource and the Router against a real kube-apiserver with etcd (../shared/kube).

What only a real server shows: list items without `kind`, the watch cache's 410 window, 429
"storage is (re)initializing" after a start, a restart that breaks every watch, watches served
by etcd without bookmarks, CEL validation, CRDs installed while the gateway runs. Routing is
checked through the Router's state (EndpointSlice addresses are 192.0.2.0/24, which the real
server accepts and nothing here ever sends traffic to). A converged Router is one whose routes,
pools and errors equal those of a Router built from a fresh list of the server's objects.
"""

from __future__ import annotations

import logging
import random
import statistics
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx
import pytest

from kroute.gateway.router import Router
from kroute.rules.request import RequestHead
from kroute.watch import kinds
from kroute.watch.backoff import Backoff
from kroute.watch.cluster import Cluster
from kroute.watch.kube import KubernetesSource
from kroute.watch.sources import KindStatistics, MemorySource
from tests.kubeserver import Kube, KubeApiError, KubeServer, kube_server, kubeconfig_for

pytestmark = pytest.mark.anyio

WATCHED = kinds.ROUTING_KINDS


@pytest.fixture(scope="module")
def kube_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeServer]:
    """Watches served by etcd (no watch cache, so no bookmarks) and compaction every 10 s."""
    with kube_server(tmp_path_factory.mktemp("kube-etcd"), KUBE_COMPACTION_INTERVAL="10s",
                     KUBE_APISERVER_EXTRA_ARGS="--watch-cache=false") as server:  # fmt: skip
        yield server


@pytest.fixture
async def group() -> AsyncIterator[anyio.abc.TaskGroup]:
    async with anyio.create_task_group() as group:
        yield group
        group.cancel_scope.cancel()


def watching(server: KubeServer, group: anyio.abc.TaskGroup, **options: Any) -> Router:
    """A Router on a KubernetesSource of every routing kind, running in `group`."""
    options.setdefault("backoff", Backoff(initial=0.05, cap=0.5))
    source = KubernetesSource(Cluster.from_kubeconfig(str(server.kubeconfig)), WATCHED,
                              rng=random.Random(0), **options)  # fmt: skip
    router = Router([source])  # no transport and no probes: nothing is sent to 192.0.2.0/24
    group.start_soon(source.run)
    return router


async def started(
    server: KubeServer,
    api: Kube,
    group: anyio.abc.TaskGroup,
    objects: Callable[[str], list[dict[str, Any]]] = lambda ns: one_of_each(ns),
    **options: Any,
) -> tuple[str, Router]:
    """A fresh namespace holding `objects(namespace)`, then a Router watching, synced."""
    ns = api.namespace()
    for obj in objects(ns):
        api.apply(obj)
    router = watching(server, group, **options)
    with anyio.fail_after(30):
        await source_of(router).wait_synced()
    return ns, router


def source_of(router: Router) -> KubernetesSource:
    source = router.sources[0]
    assert isinstance(source, KubernetesSource)
    return source


async def eventually(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.01)


# -- objects a real server accepts -------------------------------------------------------


def service(ns: str, name: str, port: int = 80) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": {"ports": [{"name": "http", "port": port, "targetPort": 8080}]}}  # fmt: skip


def endpoint_slice(ns: str, name: str, service: str, *addresses: str) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": ns,
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [a], "conditions": {"ready": True}} for a in addresses],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }  # fmt: skip


def ingress(ns: str, name: str, host: str, backend: str) -> dict[str, Any]:
    path = {"path": "/", "pathType": "Prefix",
            "backend": {"service": {"name": backend, "port": {"number": 80}}}}  # fmt: skip
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"ingressClassName": "kroute",
                     "rules": [{"host": host, "http": {"paths": [path]}}]}}  # fmt: skip


def httproute(ns: str, name: str, host: str, backend: str) -> dict[str, Any]:
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"parentRefs": [{"name": "gw"}], "hostnames": [host],
                     "rules": [{"backendRefs": [{"name": backend, "port": 80}]}]}}  # fmt: skip


def ingressroute(ns: str, name: str, host: str, backend: str) -> dict[str, Any]:
    return {"apiVersion": "traefik.io/v1alpha1", "kind": "IngressRoute",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"routes": [{"match": f"Host(`{host}`)", "kind": "Rule",
                                 "services": [{"name": backend, "port": 80}]}]}}  # fmt: skip


def gateway_objects(ns: str) -> list[dict[str, Any]]:
    """The kroute GatewayClass and IngressClass (cluster-wide), and a Gateway in `ns`."""
    return [
        {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
         "metadata": {"name": "kroute"},
         "spec": {"controllerName": "kroute.dev/gateway-controller"}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
         "metadata": {"name": "kroute"}, "spec": {"controller": "kroute.dev/gateway"}},
        {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
         "metadata": {"name": "gw", "namespace": ns},
         "spec": {"gatewayClassName": "kroute",
                  "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]}},
    ]  # fmt: skip


def one_of_each(ns: str, prefix: str = "") -> list[dict[str, Any]]:
    """A Service with a slice, and an Ingress, HTTPRoute and IngressRoute to it."""
    return [
        *gateway_objects(ns),
        service(ns, f"{prefix}web"),
        endpoint_slice(ns, f"{prefix}web-1", f"{prefix}web", "192.0.2.10", "192.0.2.11"),
        ingress(ns, f"{prefix}ing", f"{prefix}ing.{ns}.test", f"{prefix}web"),
        httproute(ns, f"{prefix}route", f"{prefix}route.{ns}.test", f"{prefix}web"),
        ingressroute(ns, f"{prefix}ir", f"{prefix}ir.{ns}.test", f"{prefix}web"),
    ]


# -- what the router decides ----------------------------------------------------------------


def decided(router: Router, host: str, path: str = "/") -> tuple[int, str | None, str | None]:
    """(status, Service, endpoint address) for GET http://host/path."""
    decision = router.route(RequestHead.build("GET", host, path))
    backend = decision.backend.name if decision.backend is not None else None
    address = decision.pick.endpoint.address if decision.pick is not None else None
    return decision.status, backend, address


def state_of(router: Router) -> tuple[Any, ...]:
    routes = [(route.name, route.backends) for route in router.table.routes]
    pools = {pool.name: sorted(e.endpoint for e in pool.endpoints)
             for pool in router.statistics().pools}  # fmt: skip
    return routes, pools, sorted(str(error) for error in router.errors)


def converged(router: Router, api: Kube) -> bool:
    """The router routes exactly as one built from a fresh list of the server's objects."""
    fresh = MemorySource(WATCHED, [obj for kind in WATCHED for obj in api.list(kind)])
    return state_of(router) == state_of(Router([fresh]))


def relists(router: Router) -> dict[str, int]:
    return {s.kind: s.relists for s in source_of(router).statistics()}


# -- the tests ------------------------------------------------------------------------------


@pytest.mark.parametrize("streaming", [False, True], ids=["list", "streaming-list"])
async def test_objects_that_exist_before_start_are_routed(
    kube: KubeServer, api: Kube, group: anyio.abc.TaskGroup, streaming: bool
) -> None:
    ns, router = await started(
        kube, api, group, streaming_list=streaming, page_size=2
    )  # lists in pages
    assert router.ready
    for host in (f"ing.{ns}.test", f"route.{ns}.test", f"ir.{ns}.test"):
        status, backend, address = decided(router, host)
        assert (status, backend) == (200, "web"), host
        assert address in ("192.0.2.10", "192.0.2.11")
    assert not [e for e in router.errors if ns in str(e)]
    assert converged(router, api)
    stats = {s.kind: s for s in source_of(router).statistics()}
    assert stats["ingresses.networking.k8s.io"].lists == (0 if streaming else 1)


async def test_churn_of_every_kind_converges(
    kube: KubeServer, api: Kube, group: anyio.abc.TaskGroup
) -> None:
    ns, router = await started(kube, api, group, gateway_objects)
    await churn(api, ns, random.Random(1), steps=120)
    await eventually(lambda: converged(router, api))
    assert all(count == 0 for count in relists(router).values()), relists(router)


async def churn(api: Kube, ns: str, rng: random.Random, *, steps: int) -> None:
    """Random creates, updates and deletes of Services, EndpointSlices, Ingresses, HTTPRoutes
    and IngressRoutes in `ns`; writes the server refuses for now (a restart) are skipped."""
    services = ["a", "b", "c"]
    makers: list[Callable[[int], dict[str, Any]]] = [
        lambda i: service(ns, rng.choice(services), rng.choice([80, 8080])),
        lambda i: endpoint_slice(ns, f"{rng.choice(services)}-{rng.randint(1, 2)}",
                                 rng.choice(services), f"192.0.2.{rng.randint(1, 254)}"),
        lambda i: ingress(ns, f"i{rng.randint(0, 3)}", f"i{i % 5}.{ns}.test",
                          rng.choice(services)),
        lambda i: httproute(ns, f"r{rng.randint(0, 2)}", f"r{i % 4}.{ns}.test",
                            rng.choice(services)),
        lambda i: ingressroute(ns, f"t{rng.randint(0, 2)}", f"t{i % 4}.{ns}.test",
                               rng.choice(services)),
    ]  # fmt: skip
    for i in range(steps):
        obj = rng.choice(makers)(i)
        try:
            if rng.random() < 0.25:
                api.delete(obj)
            else:
                api.apply(obj)
        except (KubeApiError, httpx.HTTPError):
            await anyio.sleep(0.1)
        await anyio.sleep(0.01)  # the watch streams read meanwhile


async def test_restart_mid_churn_converges_with_at_most_one_relist_per_kind(
    kube: KubeServer, api: Kube, group: anyio.abc.TaskGroup
) -> None:
    ns, router = await started(kube, api, group)
    done = anyio.Event()

    async def restart() -> None:
        # KUBE_RESTART_WARM=0: back as soon as it listens; the first lists may meet
        # 429 "storage is (re)initializing" with Retry-After.
        await anyio.to_thread.run_sync(lambda: kube.restart(KUBE_RESTART_WARM="0"))
        done.set()

    group.start_soon(restart)
    await churn(api, ns, random.Random(2), steps=60)
    await done.wait()
    await churn(api, ns, random.Random(3), steps=30)
    await eventually(lambda: converged(router, api), timeout=60)
    assert all(count <= 1 for count in relists(router).values()), relists(router)
    assert decided(router, f"ing.{ns}.test")[:2] == (200, "web")


async def test_watches_served_by_etcd_relist_a_quiet_kind_after_compaction(
    kube_etcd: KubeServer, group: anyio.abc.TaskGroup
) -> None:
    # --watch-cache=false: no bookmarks, so a kind nobody writes keeps its list's version,
    # and each short watch (timeoutSeconds 2-3) resumes from it until compaction (every 10 s)
    # removes it: 410, re-list. Routing must not notice.
    api = kube_etcd.client()
    ns, router = await started(kube_etcd, api, group, watch_timeout=(2, 3))
    quiet = str(kinds.INGRESS_ROUTE)
    i = 0
    with anyio.fail_after(90):
        while relists(router)[quiet] == 0:  # Ingresses change; IngressRoutes do not
            api.apply(ingress(ns, f"busy{i % 3}", f"busy{i}.{ns}.test", "web"))
            i += 1
            await anyio.sleep(0.2)
    assert decided(router, f"ir.{ns}.test")[:2] == (200, "web")
    api.apply(ingressroute(ns, "later", f"later.{ns}.test", "web"))
    await eventually(lambda: decided(router, f"later.{ns}.test")[0] == 200)
    await eventually(lambda: converged(router, api))
    api.close()


async def test_a_crd_installed_after_start_is_picked_up(
    kube: KubeServer, api: Kube, group: anyio.abc.TaskGroup, caplog: pytest.LogCaptureFixture
) -> None:
    crd = api.crd("ingressroutes.traefik.io")
    api.delete(crd)
    await eventually(lambda: not served(api, kinds.INGRESS_ROUTE), timeout=60)
    ns = api.namespace()
    for obj in one_of_each(ns)[:-1]:  # everything but the IngressRoute
        api.apply(obj)
    caplog.set_level(logging.WARNING, logger="kroute.watch")
    router = watching(kube, group, missing_recheck=0.3)
    with anyio.fail_after(30):
        await source_of(router).wait_synced()  # a kind that is not served is not waited for
    kind = str(kinds.INGRESS_ROUTE)

    def stats() -> KindStatistics:
        return {s.kind: s for s in source_of(router).statistics()}[kind]

    assert stats().missing
    assert decided(router, f"ing.{ns}.test")[:2] == (200, "web")
    await eventually(lambda: stats().reconnects >= 3)  # rechecked, and still missing
    missing = f"{kind}: not served (is its CRD installed?): skipped, rechecked every 0.3 s;"
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"{kind}:")]
    assert [line.startswith(missing) for line in said] == [True]  # not one line per recheck
    api.apply(crd)
    await eventually(lambda: served(api, kinds.INGRESS_ROUTE), timeout=60)
    api.apply(ingressroute(ns, "ir", f"ir.{ns}.test", "web"))
    await eventually(lambda: decided(router, f"ir.{ns}.test")[0] == 200)
    assert not stats().missing
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"{kind}:")]
    assert sum(line.startswith(missing) for line in said) == 1
    assert said.count(f"{kind}: served now (its CRD is installed): listing and watching it") == 1


def served(api: Kube, kind: kinds.Kind) -> bool:
    response = api.http.get(kind.path(), params={"limit": "1"})
    return response.status_code not in (404, 429)


async def test_write_to_routing_latency(
    kube: KubeServer, api: Kube, group: anyio.abc.TaskGroup, capsys: pytest.CaptureFixture[str]
) -> None:
    """30 Ingresses created one by one: each routed, and the time from the API write to the
    first routing decision that sees it reported (the benchmark measures it at scale)."""
    ns, router = await started(kube, api, group)
    seconds = []
    for i in range(30):
        host = f"new{i}.{ns}.test"
        began = time.perf_counter()
        api.apply(ingress(ns, f"new{i}", host, "web"))
        await eventually(lambda host=host: decided(router, host)[0] == 200)  # type: ignore[misc]
        seconds.append(time.perf_counter() - began)
    p50 = statistics.median(seconds) * 1000
    p99 = statistics.quantiles(seconds, n=100)[98] * 1000
    with capsys.disabled():
        print(f"\nAPI write to routing decision, 30 Ingresses: p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    assert len(seconds) == 30


async def test_a_wrong_token_is_reported_as_rejected_credentials(
    kube: KubeServer, tmp_path: Path, group: anyio.abc.TaskGroup
) -> None:
    path = kubeconfig_for(kube, "not-a-token", tmp_path / "kubeconfig")
    source = KubernetesSource(Cluster.from_kubeconfig(str(path)), (kinds.SERVICE,),
                              backoff=Backoff(initial=0.05, cap=0.2))  # fmt: skip
    group.start_soon(source.run)
    await eventually(lambda: "credentials rejected" in (source.statistics()[0].last_error or ""))
    assert not source.synced


async def test_namespace_and_label_selector_scoping(
    kube: KubeServer, api: Kube, group: anyio.abc.TaskGroup
) -> None:
    ns, other = api.namespace(), api.namespace()
    for where, name, labels in [(ns, "x", {"tier": "edge"}), (ns, "plain", {}),
                                (other, "x", {"tier": "edge"})]:  # fmt: skip
        api.apply({**service(where, name), "metadata": {"name": name, "namespace": where,
                                                        "labels": labels}})  # fmt: skip
    source = KubernetesSource(Cluster.from_kubeconfig(str(kube.kubeconfig)), (kinds.SERVICE,),
                              namespace=ns, label_selector="tier=edge")  # fmt: skip
    group.start_soon(source.run)
    with anyio.fail_after(30):
        await source.wait_synced()
    assert set(source.stores[kinds.SERVICE].snapshot()) == {(ns, "x")}
    api.apply({**service(ns, "y"), "metadata": {"name": "y", "namespace": ns,
                                                "labels": {"tier": "edge"}}})  # fmt: skip
    api.apply(service(ns, "z"))
    await eventually(lambda: (ns, "y") in source.stores[kinds.SERVICE].snapshot())
    assert set(source.stores[kinds.SERVICE].snapshot()) == {(ns, "x"), (ns, "y")}

"""Status write-back on a real kube-apiserver (../shared/kube): writes per second, and API
requests per routing change.

    python -m nox -s bench      (or: python benchmarks/bench_status.py)

1,000 HTTPRoutes attached to one Gateway, each to its own Service, followed by a Router through
a KubernetesSource; a StatusWriter (rate limit off, its default 4 writes in flight) writes their
status, counted by object. Measured in the same process:
- the first status of every object (nothing written before): writes per second;
- the 1,000 routes changed at once (each backend made missing: ResolvedRefs turns False) and
  changed back (the status turns back): one write per route is the goal, none for the Gateway
  (its attachedRoutes does not change);
- the 1,000 routes changed in a way that changes no status (a label): no write is the goal;
- the baseline: the same number of status writes (PUT /status at the resourceVersion read)
  made directly with ApiClient, the same number in flight, on the same server: what the API
  server allows; kroute's writes per second are given as a ratio of it.
"""

from __future__ import annotations

import collections
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kroute.gateway.router import Router
from kroute.gateway.status_writer import StatusWriter
from kroute.rules.entrypoints import EntryPoint
from kroute.watch import kinds
from kroute.watch.api import ApiClient
from kroute.watch.cluster import Cluster
from kroute.watch.kinds import Kind
from kroute.watch.kube import KubernetesSource
from tests.kubeserver import KubeServer, kube_server
from tests.test_kube_real import service

ROUTES = 1000
IN_FLIGHT = 4


class CountingApi(ApiClient):
    """ApiClient counting the requests made, by verb and object."""

    def __init__(self, cluster: Cluster) -> None:
        super().__init__(cluster)
        self.writes: collections.Counter[tuple[str, str]] = collections.Counter()
        self.reads = 0

    async def replace(
        self, kind: Kind, obj: dict[str, Any], *, subresource: str | None = None
    ) -> dict[str, Any]:
        self.writes[(kind.kind, obj["metadata"]["name"])] += 1
        return await super().replace(kind, obj, subresource=subresource)

    async def get(
        self, kind: Kind, namespace: str | None, name: str, *, subresource: str | None = None
    ) -> dict[str, Any]:
        self.reads += 1
        return await super().get(kind, namespace, name, subresource=subresource)


def route(ns: str, i: int, backend: str, label: str = "a") -> dict[str, Any]:
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": f"r{i}", "namespace": ns, "labels": {"v": label}},
            "spec": {"parentRefs": [{"name": "gw"}], "hostnames": [f"r{i}.example.com"],
                     "rules": [{"backendRefs": [{"name": backend, "port": 80}]}]}}  # fmt: skip


async def apply_all(client: ApiClient, objects: list[dict[str, Any]]) -> None:
    """Server-side apply of `objects`, 16 at a time (the 'at once' of a kubectl apply -f)."""
    limiter = anyio.CapacityLimiter(16)

    async def one(obj: dict[str, Any]) -> None:
        async with limiter:
            kind = next(k for k in kinds.ROUTING_KINDS if k.matches(obj))
            await client.apply(kind, obj, field_manager="bench", force=True)

    async with anyio.create_task_group() as group:
        for obj in objects:
            group.start_soon(one, obj)


async def settle(writer: StatusWriter, done: Any) -> float:
    """Seconds until `done()` holds and the writer has nothing left to do."""
    started = time.perf_counter()
    with anyio.fail_after(300):
        while not (done() and writer.settled):
            await anyio.sleep(0.005)
    return time.perf_counter() - started


def resolved(router: Router, ns: str, want: str) -> bool:
    """Every route's stored status has kroute's ResolvedRefs `want` ("True" / "False")."""
    store = router.sources[0].stores[kinds.HTTP_ROUTE]
    found = 0
    for obj in store.snapshot().values():
        if obj["metadata"].get("namespace") != ns:
            continue
        for entry in obj.get("status", {}).get("parents", []):
            found += any(c["type"] == "ResolvedRefs" and c["status"] == want
                         for c in entry["conditions"])  # fmt: skip
    return found == ROUTES


async def baseline(client: ApiClient, ns: str) -> float:
    """Status writes per second made directly: each route's status read, then written."""
    objs = [await client.get(kinds.HTTP_ROUTE, ns, f"r{i}") for i in range(ROUTES)]
    limiter = anyio.CapacityLimiter(IN_FLIGHT)

    async def one(obj: dict[str, Any]) -> None:
        obj["status"]["parents"][0]["conditions"][0]["message"] = "baseline"  # a real change
        async with limiter:
            await client.replace(kinds.HTTP_ROUTE, obj, subresource="status")

    started = time.perf_counter()
    async with anyio.create_task_group() as group:
        for obj in objs:
            group.start_soon(one, obj)
    return ROUTES / (time.perf_counter() - started)


async def measure(server: KubeServer) -> None:
    cluster = Cluster.from_kubeconfig(str(server.kubeconfig))
    setup = ApiClient(cluster, max_connections=16)
    ns = "bench"
    await apply_all(setup, [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}])
    gateway_class = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
                     "metadata": {"name": "kroute"},
                     "spec": {"controllerName": "kroute.dev/gateway-controller"}}  # fmt: skip
    gw = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
          "metadata": {"name": "gw", "namespace": ns},
          "spec": {"gatewayClassName": "kroute", "listeners": [
              {"name": "web", "port": 80, "protocol": "HTTP",
               "allowedRoutes": {"namespaces": {"from": "Same"}}}]}}  # fmt: skip
    await apply_all(setup, [gateway_class, gw, service(ns, "www")])
    await apply_all(setup, [route(ns, i, "www") for i in range(ROUTES)])
    source = KubernetesSource(cluster, kinds.ROUTING_KINDS)
    router = Router([source], entry_points=[EntryPoint("web", 80)])
    api = CountingApi(cluster)
    writer = StatusWriter(router, api, rate=float("inf"), concurrency=IN_FLIGHT)
    rows: list[tuple[str, int, float | None]] = []
    async with anyio.create_task_group() as group:
        group.start_soon(source.run)
        group.start_soon(writer.run)

        seconds = await settle(writer, lambda: resolved(router, ns, "True"))
        first = sum(api.writes.values())
        rows.append(("first status of every object", first, seconds))

        for what, backend, want in (("1,000 routes changed at once (backend missing)",
                                     "nowhere", "False"),
                                    ("1,000 routes changed back", "www", "True")):  # fmt: skip
            api.writes.clear()
            started = time.perf_counter()
            await apply_all(setup, [route(ns, i, backend) for i in range(ROUTES)])
            applied = time.perf_counter() - started
            await settle(writer, lambda want=want: resolved(router, ns, want))
            seconds = time.perf_counter() - started  # (from the first change applied)
            rows.append((what, sum(api.writes.values()), seconds))
            per_route = collections.Counter(
                n for (k, _), n in api.writes.items() if k == "HTTPRoute"
            )
            others = {key: n for key, n in api.writes.items() if key[0] != "HTTPRoute"}
            print(f"<!-- {what}: writes per route {dict(per_route)}, other writes {others}, "
                  f"reads {api.reads}; the changes took {applied:.2f} s to apply -->")  # fmt: skip

        api.writes.clear()
        rounds = writer.statistics().rounds
        await apply_all(setup, [route(ns, i, "www", label="b") for i in range(ROUTES)])
        await anyio.sleep(2.0)  # every event delivered and planned on
        await settle(writer, lambda: True)
        rows.append(("1,000 routes relabelled (no status change)", sum(api.writes.values()),
                     None))  # fmt: skip
        print(f"<!-- relabelled: rounds {writer.statistics().rounds - rounds} -->")
        group.cancel_scope.cancel()
    direct = await baseline(setup, ns)
    stats = writer.statistics()
    await setup.aclose()
    await api.aclose()

    print("| what | status writes | writes per routing change | seconds | writes/s | vs direct |")
    print("| --- | --- | --- | --- | --- | --- |")
    for what, writes, took_s in rows:
        rate = f"{writes / took_s:.0f}" if took_s else "-"
        ratio = f"{writes / took_s / direct:.2f}x" if took_s else "-"
        took = f"{took_s:.2f}" if took_s else "-"
        print(f"| {what} | {writes} | {writes / ROUTES:.2f} | {took} | {rate} | {ratio} |")
    print(f"\nDirect status writes (baseline, {IN_FLIGHT} in flight): {direct:.0f}/s. "
          f"Writer: {stats.rounds} rounds, {stats.conflicts} conflicts, "
          f"{stats.failures} failures, {stats.requests} requests.")  # fmt: skip


def main() -> None:
    print(f"## Status write-back (real API server, ../shared/kube): {ROUTES:,} HTTPRoutes\n")
    with tempfile.TemporaryDirectory() as work, kube_server(Path(work)) as server:
        anyio.run(measure, server)


if __name__ == "__main__":
    main()

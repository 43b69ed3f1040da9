"""The Kubernetes side on a real kube-apiserver with etcd (../shared/kube): change to routing,
and what a restart costs in LIST requests.

    python -m nox -s bench      (or: python benchmarks/bench_kube.py)

With 1,000 objects present (250 Services, 250 EndpointSlices, 500 Ingresses), a Router follows
the server through a KubernetesSource of every routing kind. Measured in the same process:
- an Ingress created, until the Router's decision for its host is 200; an EndpointSlice's
  address changed, until the Router picks the new address (p50 and p99 of CHANGES each);
- the baseline: the same writes until their event arrives on a bare watch stream (one httpx
  watch per kind, in the same event loop): what any watcher waits for; kroute's share is the
  rest;
- then a restart of the API server (restart-apiserver.sh, mid-churn) and the LIST requests,
  re-lists and throttled answers (429 with Retry-After) per kind until the Router has caught up.
EndpointSlice addresses are 192.0.2.0/24 (the real server refuses loopback ones); nothing is
ever sent to them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kroute.gateway.router import Router
from kroute.rules.request import RequestHead
from kroute.watch import kinds
from kroute.watch.cluster import Cluster
from kroute.watch.kube import KubernetesSource
from tests.kubeserver import Kube, KubeApiError, KubeServer, kube_server
from tests.test_kube_real import endpoint_slice, gateway_objects, ingress, service

SERVICES = 250
INGRESSES = 500
CHANGES = 50


class BareWatch:
    """One plain watch stream per kind: when each object's newest version arrived."""

    def __init__(self, server: KubeServer) -> None:
        self.server = server
        self.seen: dict[tuple[str, str], float] = {}  # (name, resourceVersion) -> arrival

    async def run(self, kind: kinds.Kind, since: str) -> None:
        verify = ssl.create_default_context(cafile=self.server.ca_file)
        headers = {"Authorization": f"Bearer {self.server.token}"}
        params = {"watch": "true", "resourceVersion": since, "allowWatchBookmarks": "true"}
        try:
            async with (
                httpx.AsyncClient(
                    base_url=self.server.url, verify=verify, headers=headers, timeout=None
                ) as client,  # fmt: skip
                client.stream("GET", kind.path(), params=params) as response,
            ):
                async for line in response.aiter_lines():
                    meta = json.loads(line)["object"]["metadata"]
                    seen = (meta.get("name", ""), meta["resourceVersion"])
                    self.seen[seen] = time.perf_counter()
        except httpx.HTTPError:
            pass  # the restart at the end breaks it; the measurements before it are taken


async def until(condition: Any) -> None:
    with anyio.fail_after(60):
        while not condition():
            await anyio.sleep(0.0005)


def quantiles(values: list[float]) -> tuple[float, float]:
    ms = sorted(v * 1000 for v in values)
    return statistics.median(ms), statistics.quantiles(ms, n=100)[98]


async def measure(server: KubeServer, api: Kube) -> None:
    ns = api.namespace("bench")
    for obj in gateway_objects(ns):
        api.apply(obj)
    for i in range(SERVICES):
        api.apply(service(ns, f"s{i}"))
        api.apply(endpoint_slice(ns, f"s{i}-1", f"s{i}", f"192.0.2.{i % 250 + 1}"))
    for i in range(INGRESSES):
        api.apply(ingress(ns, f"i{i}", f"i{i}.{ns}.test", f"s{i % SERVICES}"))
    source = KubernetesSource(Cluster.from_kubeconfig(str(server.kubeconfig)), kinds.ROUTING_KINDS,
                              rng=random.Random(0))  # fmt: skip
    router = Router([source])
    bare = BareWatch(server)
    rv = api.http.get(kinds.NAMESPACE.path()).json()["metadata"]["resourceVersion"]
    async with anyio.create_task_group() as group:
        group.start_soon(source.run)
        group.start_soon(bare.run, kinds.INGRESS, rv)
        group.start_soon(bare.run, kinds.ENDPOINT_SLICE, rv)
        started = time.perf_counter()
        await source.wait_synced()
        print(f"| initial sync of {SERVICES * 2 + INGRESSES:,} objects (and the rest), s | "
              f"{time.perf_counter() - started:.2f} |")  # fmt: skip
        ingress_times, ingress_base = await changes(router, api, bare, ns, "ingress")
        slice_times, slice_base = await changes(router, api, bare, ns, "slice")
        print("\n| change (1,000 objects present) | to routing decision p50 / p99, ms | "
              "to a bare watch p50 / p99, ms | routing / bare watch, p50 |")  # fmt: skip
        print("| --- | --- | --- | --- |")
        rows = [("Ingress created", ingress_times, ingress_base),
                ("EndpointSlice address changed", slice_times, slice_base)]  # fmt: skip
        for what, ours, base in rows:
            (p50, p99), (b50, b99) = quantiles(ours), quantiles(base)
            print(f"| {what} | {p50:.1f} / {p99:.1f} | {b50:.1f} / {b99:.1f} | {p50 / b50:.2f}x |")
        await restart(server, api, router, source, ns)
        group.cancel_scope.cancel()


async def changes(
    router: Router, api: Kube, bare: BareWatch, ns: str, what: str
) -> tuple[list[float], list[float]]:
    ours, base = [], []
    for i in range(CHANGES):
        started = time.perf_counter()
        if what == "ingress":
            host = f"new{i}.{ns}.test"
            written = api.apply(ingress(ns, f"new{i}", host, "s0"))

            def done(want: str = host) -> bool:  # routed at all
                return router.route(RequestHead.build("GET", want, "/")).status == 200
        else:
            address = f"192.0.2.{(i + 7) % 250 + 1}"
            written = api.apply(endpoint_slice(ns, "s1-1", "s1", address))

            def done(want: str = address) -> bool:  # routed to the new address
                pick = router.route(RequestHead.build("GET", f"i1.{ns}.test", "/")).pick
                return pick is not None and pick.endpoint.address == want

        await until(done)
        ours.append(time.perf_counter() - started)
        key = (written["metadata"]["name"], written["metadata"]["resourceVersion"])
        await until(lambda key=key: key in bare.seen)
        base.append(bare.seen[key] - started)
    return ours, base


async def restart(
    server: KubeServer, api: Kube, router: Router, source: KubernetesSource, ns: str
) -> None:
    before = {s.kind: s.lists for s in source.statistics()}
    done = anyio.Event()

    async def restart_now() -> None:
        await anyio.to_thread.run_sync(lambda: server.restart(KUBE_RESTART_WARM="0"))
        done.set()

    async with anyio.create_task_group() as group:
        group.start_soon(restart_now)
        i = 0
        while not done.is_set():  # churn: an Ingress changes every 20 ms, when it can
            with contextlib.suppress(KubeApiError, httpx.HTTPError):  # refused while restarting
                api.apply(ingress(ns, f"i{i % INGRESSES}", f"i{i % INGRESSES}.{ns}.test", "s3"))
            i += 1
            await anyio.sleep(0.02)
    host = f"after.{ns}.test"
    api.apply(ingress(ns, "after", host, "s0"))
    started = time.perf_counter()
    await until(lambda: router.route(RequestHead.build("GET", host, "/")).status == 200)
    waited = (time.perf_counter() - started) * 1000
    print(f"\nRestart mid-churn ({i} writes tried meanwhile); a new Ingress routed "
          f"{waited:.0f} ms after the server was back.\n")  # fmt: skip
    print("| kind | LIST requests over the restart | re-lists | throttled (Retry-After) |")
    print("| --- | --- | --- | --- |")
    for s in source.statistics():
        print(f"| {s.kind} | {s.lists - before[s.kind]} | {s.relists} | {s.throttled} |")


def main() -> None:
    logging.getLogger("kroute").setLevel(logging.ERROR)  # the restart's broken watches: expected
    print(f"## Kubernetes API server (real, ../shared/kube): {CHANGES} changes each\n")
    print("| measure | value |\n| --- | --- |")
    with tempfile.TemporaryDirectory() as work, kube_server(Path(work)) as server:
        api = server.client()
        anyio.run(measure, server, api)
        api.close()


if __name__ == "__main__":
    main()

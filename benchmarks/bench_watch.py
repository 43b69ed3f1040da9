"""Watch streams: initial sync, change-to-snapshot delay and memory, next to the official client.

    python -m nox -s bench      (or: python benchmarks/bench_watch.py)

Both clients talk to the same API emulator on loopback (kmock with the test layer in
tests/apiserver.py), holding 10,000 EndpointSlices of 10 endpoints each:
- initial sync: kroute's `KubernetesSource` (paged list of 500, then watch) until synced,
  against the official client's paged `list_endpoint_slice_for_all_namespaces(limit=500)`;
- delay: a new slice created at the emulator until it is in kroute's store, against until the
  official client's `Watch().stream(...)` yields it (both already watching, p50 and p99 of 200);
- memory: what holding the 10,000 slices costs (tracemalloc, after garbage collection): a
  kroute store built from them against the official client's model objects from its list.
"""

from __future__ import annotations

import gc
import json
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kroute.watch.cluster import Cluster
from kroute.watch.kinds import ENDPOINT_SLICE
from kroute.watch.kube import KubernetesSource
from kroute.watch.store import Store
from tests.apiserver import ApiServer

OBJECTS = 10_000
CHANGES = 200


def endpoint_slice(i: int) -> dict[str, Any]:
    return {
        "metadata": {"name": f"web-{i}", "namespace": f"ns-{i % 50}",
                     "labels": {"kubernetes.io/service-name": f"web-{i // 10}"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": [f"10.{i // 250}.{i % 250}.{j}"],
                       "conditions": {"ready": True, "serving": True, "terminating": False},
                       "nodeName": f"node-{j}", "zone": "a",
                       "targetRef": {"kind": "Pod", "name": f"web-{i}-{j}"}}
                      for j in range(10)],
    }  # fmt: skip


def kubeconfig(url: str) -> str:
    path = Path(tempfile.mkdtemp()) / "kubeconfig"
    path.write_text(
        f"apiVersion: v1\nkind: Config\nclusters: [{{name: e, cluster: {{server: '{url}'}}}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: e, context: {cluster: e, user: u}}]\ncurrent-context: e\n"
    )
    return str(path)


def official_client(url: str) -> Any:
    import kubernetes

    kubernetes.config.load_kube_config(config_file=kubeconfig(url))
    return kubernetes.client.DiscoveryV1Api()


def official_list(api: Any) -> list[Any]:
    items: list[Any] = []
    token = None
    while True:
        page = api.list_endpoint_slice_for_all_namespaces(limit=500, _continue=token)
        items.extend(page.items)
        token = page.metadata._continue
        if not token:
            return items


async def kroute_run(api: ApiServer, url: str) -> dict[str, Any]:
    source = KubernetesSource(Cluster.from_kubeconfig(kubeconfig(url)), (ENDPOINT_SLICE,))
    store = source.stores[ENDPOINT_SLICE]
    out: dict[str, Any] = {}
    async with anyio.create_task_group() as group:
        start = time.perf_counter()
        group.start_soon(source.run)
        await source.wait_synced()
        out["sync"] = time.perf_counter() - start
        await anyio.sleep(0.5)  # the watch is open
        delays = []
        for i in range(CHANGES):
            key = (f"ns-{i % 50}", f"new-{i}")
            obj = endpoint_slice(OBJECTS + i)
            obj["metadata"].update(name=key[1], namespace=key[0])
            start = time.perf_counter()
            await anyio.to_thread.run_sync(api.create, ENDPOINT_SLICE, obj)
            while store.get(key) is None:
                await anyio.sleep(0)
            delays.append(time.perf_counter() - start)
        out["delays"] = delays
        group.cancel_scope.cancel()
    out["items"] = json.dumps(list(store.snapshot().values()))
    return out


def kroute_store(items_json: str) -> Store:
    """A store holding the slices, built from JSON as the source builds it from a list."""
    store = Store("EndpointSlice")
    store.replace(json.loads(items_json), "1")
    return store


def measure_memory(build: Any) -> float:
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    value = build()
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del value
    return (after - before) / 2**20


def official_delays(api: ApiServer, client: Any) -> list[float]:
    import kubernetes

    seen: dict[str, float] = {}
    ready = threading.Event()
    stop = threading.Event()
    resource_version = client.list_endpoint_slice_for_all_namespaces(
        limit=1
    ).metadata.resource_version

    def watch() -> None:
        w = kubernetes.watch.Watch()
        ready.set()
        for event in w.stream(client.list_endpoint_slice_for_all_namespaces,
                              resource_version=resource_version, timeout_seconds=120):  # fmt: skip
            seen[event["object"].metadata.name] = time.perf_counter()
            if stop.is_set():
                w.stop()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    ready.wait()
    time.sleep(0.5)
    delays = []
    for i in range(CHANGES):
        name = f"old-{i}"
        obj = endpoint_slice(OBJECTS + CHANGES + i)
        obj["metadata"]["name"] = name
        start = time.perf_counter()
        api.create(ENDPOINT_SLICE, obj)
        while name not in seen:
            time.sleep(0.0002)
        delays.append(seen[name] - start)
    stop.set()
    api.create(
        ENDPOINT_SLICE, {**endpoint_slice(0), "metadata": {"name": "last", "namespace": "x"}}
    )
    return delays


def p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] * 1000


def main() -> None:
    with ApiServer([ENDPOINT_SLICE], bookmark_interval=30.0) as api:
        for i in range(OBJECTS):
            api.create(ENDPOINT_SLICE, endpoint_slice(i))
        ours = anyio.run(kroute_run, api, api.url)
        client = official_client(api.url)
        start = time.perf_counter()
        official_items = official_list(client)
        official_sync = time.perf_counter() - start
        assert len(official_items) >= OBJECTS
        del official_items
        theirs = official_delays(api, client)
        ours_mib = measure_memory(lambda: kroute_store(ours["items"]))
        theirs_mib = measure_memory(lambda: official_list(client))

    print("| measure | kroute | official client | official / kroute |")
    print("| --- | --- | --- | --- |")
    sync = ours["sync"]
    print(f"| initial sync of {OBJECTS:,} EndpointSlices, s | {sync:.2f} | {official_sync:.2f} "
          f"| {official_sync / sync:.1f}x |")  # fmt: skip
    for q in (50, 99):
        a, b = p(ours["delays"], q), p(theirs, q)
        print(f"| change to cache, p{q}, ms | {a:.1f} | {b:.1f} | {b / a:.1f}x |")
    print(f"| memory for {OBJECTS:,} EndpointSlices, MiB | {ours_mib:.1f} | {theirs_mib:.1f} "
          f"| {theirs_mib / ours_mib:.1f}x |")  # fmt: skip


if __name__ == "__main__":
    main()

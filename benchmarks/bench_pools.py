"""Backend pools: picks per second per balancer, and the cost of an EndpointSlice update.

    python -m nox -s bench      (or: python benchmarks/bench_pools.py)

Picks go through `Pool.pick` (sticky lookup, readmission check, balancer), with a fixed-seed
random source. The update is what a watch event costs: one endpoint of one EndpointSlice
replaced, through `ServiceEndpoints.apply_slice` and `Pool.apply`. Slices hold 100 endpoints,
the Kubernetes default; the baseline is a full `Pool.replace` of the same endpoints in the same
run.
"""

from __future__ import annotations

import gc
import itertools
import random
import time
from collections.abc import Callable
from typing import Any

from kroute.objects import ObjectRef
from kroute.pool.balance import (
    Balancer,
    HashOn,
    LeastRequest,
    RingHash,
    RoundRobin,
    WeightedRoundRobin,
)
from kroute.pool.endpoints import ServiceEndpoints
from kroute.pool.pool import Pool

ROUNDS = 7
BALANCERS: dict[str, Callable[[], Balancer]] = {
    "round-robin": RoundRobin,
    "weighted-round-robin": WeightedRoundRobin,
    "least-request (P2C)": LeastRequest,
    "ring-hash (header key)": RingHash,
}


def best_ns(fns: list[Callable[[], object]], calls: int) -> list[float]:
    """Best-of-ROUNDS cost of one call of each function, rounds interleaved across them so
    that drift on a shared machine hits all alike; garbage collector off."""
    best = [float("inf")] * len(fns)
    gc.collect()
    gc.disable()
    try:
        for _ in range(ROUNDS):
            for i, fn in enumerate(fns):
                start = time.perf_counter_ns()
                for _ in range(calls):
                    fn()
                best[i] = min(best[i], (time.perf_counter_ns() - start) / calls)
    finally:
        gc.enable()
    return best


def service() -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "b"},
            "spec": {"ports": [{"name": "http", "port": 80}]}}  # fmt: skip


def endpoint_slice(index: int, addresses: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
        "metadata": {"name": f"web-{index}", "namespace": "b",
                     "labels": {"kubernetes.io/service-name": "web"}},
        "ports": [{"name": "http", "port": 8080}],
        "endpoints": [{"addresses": [a], "conditions": {"ready": True}} for a in addresses],
    }  # fmt: skip


def addresses(slice_index: int, count: int) -> list[str]:
    return [f"10.{slice_index // 256}.{slice_index % 256}.{i}" for i in range(count)]


def picks() -> None:
    print("| balancer | picks/s at 10 endpoints | picks/s at 1,000 | 1,000 / 10 |")
    print("| --- | --- | --- | --- |")
    hash_on = HashOn(header="x-user")
    keys = [hash_on.key({"x-user": (f"user-{i}",)}, None) for i in range(1024)]
    cases = [picker(filled_pool(make(), size), keys) for make in BALANCERS.values()
             for size in (10, 1000)]  # fmt: skip
    costs = best_ns(cases, 20_000)
    for i, name in enumerate(BALANCERS):
        small, large = 1e9 / costs[2 * i], 1e9 / costs[2 * i + 1]
        print(f"| {name} | {small:,.0f} | {large:,.0f} | {large / small:.2f}x |")


def filled_pool(balancer: Balancer, size: int) -> Pool:
    pool = Pool("web", balancer=balancer)
    se = ServiceEndpoints(ObjectRef("Service", "b", "web"), 80)
    pool.apply(se.set_service(service()), now=0.0)
    for s in range(max(1, size // 100)):
        pool.apply(se.apply_slice(endpoint_slice(s, addresses(s, min(size, 100)))), now=0.0)
    assert len(pool) == size
    return pool


def picker(pool: Pool, keys: list[int | None]) -> Callable[[], object]:
    rng = random.Random(1)
    turn = itertools.count()

    def pick() -> object:
        return pool.pick(now=0.0, rng=rng, hash_key=keys[next(turn) & 1023])

    return pick


def updater(pool: Pool, se: ServiceEndpoints) -> Callable[[], None]:
    """Alternately replace one endpoint of slice 0 and put it back."""
    flip = [endpoint_slice(0, [*addresses(0, 99), "10.255.255.1"]),
            endpoint_slice(0, addresses(0, 100))]  # fmt: skip
    turn = itertools.count()

    def update() -> None:
        pool.apply(se.apply_slice(flip[next(turn) & 1]), now=0.0)

    return update


def rebuilder(pool: Pool, size: int) -> Callable[[], None]:
    """The naive baseline: re-resolve the whole Service from its slices, replace the pool."""
    slices = [endpoint_slice(s, addresses(s, 100)) for s in range(size // 100)]

    def rebuild() -> None:
        se = ServiceEndpoints(ObjectRef("Service", "b", "web"), 80)
        se.set_service(service())
        for item in slices:
            se.apply_slice(item)
        pool.replace(se.endpoints(), now=0.0)

    return rebuild


def updates() -> None:
    print()
    print("| endpoints (slices of 100) | incremental update, µs | vs 100 endpoints "
          "| full re-resolve, µs | full / incremental |")  # fmt: skip
    print("| --- | --- | --- | --- | --- |")
    base = None
    for size in (100, 1000, 10000):
        pool = Pool("web", balancer=RingHash())
        se = ServiceEndpoints(ObjectRef("Service", "b", "web"), 80)
        pool.apply(se.set_service(service()), now=0.0)
        for s in range(size // 100):
            pool.apply(se.apply_slice(endpoint_slice(s, addresses(s, 100))), now=0.0)
        (update_ns,) = best_ns([updater(pool, se)], 200)
        (full_ns,) = best_ns([rebuilder(pool, size)], 5)
        base = base or update_ns
        print(f"| {size:,} | {update_ns / 1000:,.1f} | {update_ns / base:.2f}x "
              f"| {full_ns / 1000:,.1f} | {full_ns / update_ns:,.1f}x |")  # fmt: skip


if __name__ == "__main__":
    picks()
    updates()

"""Rule matching: index vs ordered scan, and cost as the table grows (issue: rule matching).

    python -m nox -s bench            (or: python benchmarks/bench_rules.py)

Route sets of Ingress host+path rules for services laid out three ways: a host each, all with the
same paths; a host each, with paths of their own (`/svc-N/...`, and `/`); one host, with each
service's paths under it. One more set adds to the first a share of Traefik rules that the index
cannot key on path (PathRegexp) or that need a residual header check, and one mixes wildcard
hosts in: every other service is an Ingress `*.app-N.example.com`, plus Traefik v3.7 wildcards
(`Host(`**.app-N.example.com`)`) and catch-alls (`Host(`*`) && Path(...)`). Costs are per
`match()` call on prebuilt request heads, best of several rounds; every ratio compares numbers
from this run.

Last, a route regex on RE2 against a crafted path: `PathRegexp(`(a+)+$`)` and 10 kB of `a`
then `!`, which a backtracking engine takes exponential time over (Python's `re` is timed on a
path of 24 characters for comparison, bounded so that the run ends).
"""

from __future__ import annotations

import argparse
import gc
import random
import re
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import kroute

ROUNDS = 25


def ingress(i: int, host: str, paths: Sequence[tuple[str, str]]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": f"ing-{i}", "namespace": "default"},
        "spec": {
            "ingressClassName": "kroute",
            "rules": [
                {
                    "host": host,
                    "http": {
                        "paths": [
                            {
                                "path": path,
                                "pathType": kind,
                                "backend": {
                                    "service": {"name": f"svc-{i}", "port": {"number": 80}}
                                },
                            }
                            for path, kind in paths
                        ]
                    },
                }
            ],
        },
    }


def ingressroute(i: int, rule: str) -> dict[str, Any]:
    return {
        "apiVersion": "traefik.io/v1alpha1",
        "kind": "IngressRoute",
        "metadata": {"name": f"ir-{i}", "namespace": "default"},
        "spec": {"routes": [{"match": rule, "services": [{"name": f"ir-{i}", "port": 80}]}]},
    }


PATHS = [("/", "Prefix"), ("/api", "Prefix"), ("/api/v2/items", "Prefix"), ("/healthz", "Exact")]
TARGETS = ["/", "/api/users/7", "/api/v2/items/9", "/healthz", "/static/app.js", "/files/12/3"]
#: The other layouts: the same shapes under a path of each service's own ("{i}": its number).
OWN_PATHS = [("/", "Prefix"), ("/svc-{i}", "Prefix"), ("/svc-{i}/v2/items", "Prefix"),
             ("/svc-{i}/healthz", "Exact")]  # fmt: skip
OWN_TARGETS = ["/", "/svc-{i}/users/7", "/svc-{i}/v2/items/9", "/svc-{i}/healthz",
               "/static/app.js", "/files/12/3"]  # fmt: skip
#: How services are laid out: a host each, all with the same paths; a host each, with paths of
#: their own; or one host, each service with paths of its own under it.
SHARED, OWN, ONE_HOST, WILDCARD = "shared", "own", "one host", "wildcard"


def objects(
    routes: int, special_share: float, layout: str = SHARED
) -> tuple[list[dict[str, Any]], list[str]]:
    """About `routes` routes, `special_share` of them regex or header Traefik rules; and the
    host of each service (one host repeated for ONE_HOST)."""
    special = int(routes * special_share)
    shapes = PATHS if layout == SHARED else OWN_PATHS
    services = max(1, (routes - special) // len(shapes))
    if layout == ONE_HOST:
        names = ["api.example.com"] * services
        paths = {(p.format(i=i), kind): None for i in range(services) for p, kind in shapes}
        out = [ingress(0, names[0], list(paths))]
    elif layout == WILDCARD:  # every other service by wildcard; requests name a subdomain
        names = [f"{'w.' if i % 2 == 0 else ''}app-{i}.example.com" for i in range(services)]
        out = [
            ingress(i, names[i].replace("w.", "*.", 1), [(p.format(i=i), k) for p, k in shapes])
            for i in range(services)
        ]
    else:
        names = [f"app-{i}.example.com" for i in range(services)]
        out = [
            ingress(i, names[i], [(path.format(i=i), kind) for path, kind in shapes])
            for i in range(services)
        ]
    for j in range(special):
        host = names[j % services]
        if layout == WILDCARD:
            suffix = host.removeprefix("w.")
            rule = (f"Host(`**.{suffix}`) && PathPrefix(`/api`)" if j % 2
                    else f"Host(`*`) && Path(`/files/{j}`)")  # fmt: skip
        elif j % 2:
            rule = f"Host(`{host}`) && PathRegexp(`^/files/[0-9]+/{j}$`)"
        else:
            rule = f"Host(`{host}`) && PathPrefix(`/api`) && Header(`X-Tenant`, `t{j}`)"
        out.append(ingressroute(j, rule))
    return out, names


def requests(
    hosts: list[str], count: int, rng: random.Random, layout: str = SHARED
) -> list[kroute.RequestHead]:
    """`count` requests to services picked at random, 5% of them to an unknown host."""
    targets = TARGETS if layout == SHARED else OWN_TARGETS
    out = []
    for _ in range(count):
        i = rng.randrange(len(hosts))
        host = hosts[i] if rng.random() < 0.95 else "unknown.example.org"
        out.append(
            kroute.RequestHead.build(
                "GET",
                host,
                rng.choice(targets).format(i=i),
                headers={"X-Tenant": f"t{rng.randrange(50)}"},
            )
        )
    return out


_Call = TypeVar("_Call")


def per_call_ns(
    cases: Sequence[tuple[Callable[[_Call], object], list[_Call]]],
    clock: Callable[[], int] = time.perf_counter_ns,
) -> list[float]:
    """Best-of-ROUNDS mean cost of one call for each case, rounds interleaved across cases so
    that drift on a shared machine hits every case alike; the garbage collector is off, as in
    timeit. `clock` may be `time.thread_time_ns`: CPU time, without the time spent waiting for
    a core that other tenants hold."""
    best = [float("inf")] * len(cases)
    gc.collect()
    gc.disable()
    try:
        for _ in range(ROUNDS):
            for i, (fn, reqs) in enumerate(cases):
                start = clock()
                for request in reqs:
                    fn(request)
                best[i] = min(best[i], (clock() - start) / len(reqs))
    finally:
        gc.enable()
    return best


#: The route sets measured: (share of special rules, layout, what the tables call it).
MIXES = (
    (0.0, SHARED, "host+path"),
    (0.2, SHARED, "host+path, 20% regex/header"),
    (0.0, OWN, "host+path, paths of each host's own"),
    (0.0, ONE_HOST, "one host, paths of each service's own"),
    (0.2, WILDCARD, "host+path, half wildcard hosts, 20% Traefik wildcards/catch-alls"),
)


def begin(
    sizes: str, requests: int, columns: Sequence[str]
) -> tuple[list[int], int, random.Random]:
    """Read the command line (table sizes, requests per size) and print the results table's
    header; the sizes, the request count and the seeded random source of the run."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default=sizes)
    parser.add_argument("--requests", type=int, default=requests)
    args = parser.parse_args()
    print("| " + " | ".join(columns) + " |")
    print("|" + " --- |" * len(columns))
    return [int(s) for s in args.sizes.split(",")], args.requests, random.Random(7)


def main() -> None:
    sizes, count, rng = begin("10,1000,10000", 5000, [
        "routes", "mix", "build ms per 1,000 routes", "index ns/match", "vs 10 routes",
        "ordered scan ns/match", "scan / index",
    ])  # fmt: skip
    for share, layout, mix in MIXES:
        tables, build_ms, reqs = [], [], []
        for size in sizes:
            objs, hosts = objects(size, share, layout)
            start = time.perf_counter()
            result = kroute.compile_objects(objs)
            build_ms.append((time.perf_counter() - start) * 1e6 / len(result.table))
            assert not result.errors
            tables.append(result.table)
            hot_hosts = hosts[:2]
            reqs.append(requests(hosts, count, rng, layout))
            for request in reqs[-1][:200]:
                assert result.table.match(request) is result.table.scan(request)
        # The largest table once more, with requests for two services only: what the lookup costs
        # when the host's structures are in the CPU cache, as they are at 10 routes.
        hot = requests(hot_hosts, count, rng, layout)
        index = per_call_ns(
            [*((t.match, r) for t, r in zip(tables, reqs, strict=True)), (tables[-1].match, hot)]
        )
        scan = per_call_ns(
            [(t.scan, r[: max(50, 20_000 // len(t))]) for t, r in zip(tables, reqs, strict=True)]
        )
        for i, size in enumerate(sizes):
            build = f"{build_ms[i]:.1f}" if size >= 1000 else "(too few to tell)"
            print(
                f"| {size:,} | {mix} | {build} | {index[i]:,.0f} "
                f"| {index[i] / index[0]:.2f}x | {scan[i]:,.0f} | {scan[i] / index[i]:,.0f}x |"
            )
        print(
            f"| {sizes[-1]:,}, requests for 2 services | {mix} | | {index[-1]:,.0f} "
            f"| {index[-1] / index[0]:.2f}x | | |"
        )
    catastrophic()


def catastrophic() -> None:
    """A route regex that backtracks exponentially, on RE2, against a crafted 10 kB path."""
    table = kroute.compile_objects([ingressroute(0, "PathRegexp(`(a+)+$`)")]).table
    crafted = kroute.RequestHead.build("GET", "h", "/" + "a" * 10_000 + "!")
    (ns,) = per_call_ns([(table.match, [crafted])])
    backtracking = re.compile("(a+)+$")
    start = time.perf_counter_ns()
    assert backtracking.search("a" * 24 + "!") is None
    re_ns = time.perf_counter_ns() - start
    print()
    print("| engine | pattern | input | time per match |")
    print("| --- | --- | --- | --- |")
    print(f"| RE2 (kroute) | `(a+)+$` | 10,001-byte path | {ns / 1e6:.3f} ms |")
    print(f"| Python `re` (for comparison) | `(a+)+$` | 25 characters | {re_ns / 1e6:,.0f} ms |")


if __name__ == "__main__":
    main()

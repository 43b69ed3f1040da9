"""`python -m kroute explain`: cost per request line at 10,000 routes vs 10 (issue 17 item 8).

    python -m nox -s bench            (or: python benchmarks/bench_explain.py)

The route sets and requests of bench_rules (Ingress host+path rules, a host each with the same
paths, with 20% regex/header Traefik rules or not, or with paths of their own; one host with
every service's paths under it; half wildcard hosts with 20% Traefik wildcards and catch-alls),
compiled once; then the command's per-request part
(`kroute.cli.answer`: read the JSON line, explain, print) is timed on each request line, output
to /dev/null, in both formats, best of several rounds interleaved across cases, in CPU time of
the thread (a shared machine's other tenants take cores away for whole rounds). Every ratio
compares numbers from this run.

`--format json` reads the index only, so its cost should not grow with the table. The text
form also works out the routes for the request's host and the routes for any host
(`RouteTable.for_host`), so it grows with those, not with the table: the column "routes read"
says how many that is per request on average.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_rules import MIXES, begin, objects, per_call_ns, requests

import kroute
from kroute.cli import answer

#: About how long one round of one case should take: cases whose requests cost more get fewer.
ROUND_SECONDS = 0.03


def request_lines(hosts: list[str], count: int, rng: random.Random, layout: str) -> list[str]:
    """bench_rules' requests as the command reads them: JSON lines."""
    return [
        json.dumps({"method": r.method, "host": r.host, "path": r.path,
                    "headers": {name: list(values) for name, values in r.headers.items()}})
        for r in requests(hosts, count, rng, layout)
    ]  # fmt: skip


def fitted(fn: Callable[[str], object], lines: list[str]) -> list[str]:
    """As many of `lines` as one round of about ROUND_SECONDS holds (at least 20)."""
    start = time.perf_counter()
    for line in lines[:20]:
        fn(line)
    per_line = (time.perf_counter() - start) / 20
    return lines[: max(20, min(len(lines), int(ROUND_SECONDS / per_line)))]


def main() -> None:
    sizes, count, rng = begin("10,10000", 3000, [
        "mix", "routes", "json µs/request", "vs 10 routes", "text µs/request", "vs 10 routes",
        "routes read (text)",
    ])  # fmt: skip
    with open(os.devnull, "w", encoding="utf-8") as sink:

        def run(table: kroute.RouteTable, fmt: str) -> Callable[[str], object]:
            return lambda line: answer(table, (line,), "bench", fmt, sink, sink)

        for share, layout, mix in MIXES:
            cases, read, counts = [], [], []
            for size in sizes:
                objs, hosts = objects(size, share, layout)
                result = kroute.compile_objects(objs)
                assert not result.errors
                table = result.table
                counts.append(len(table))
                lines = request_lines(hosts, count, rng, layout)
                heads = [kroute.cli.request_from_json(line) for line in lines]
                read.append(sum(len(table.for_host(h.host)) for h in heads) / len(heads))
                for fmt in ("json", "text"):
                    cases.append((run(table, fmt), fitted(run(table, fmt), lines)))
            ns = per_call_ns(cases, time.thread_time_ns)
            for i, size in enumerate(counts):
                json_ns, text_ns = ns[2 * i], ns[2 * i + 1]
                print(
                    f"| {mix} | {size:,} | {json_ns / 1e3:,.1f} | {json_ns / ns[0]:.2f}x "
                    f"| {text_ns / 1e3:,.1f} | {text_ns / ns[1]:.2f}x | {read[i]:,.1f} |"
                )


if __name__ == "__main__":
    main()

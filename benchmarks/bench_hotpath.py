"""FastGateway's Python work per request, next to a minimal Python proxy in the same process.

    python benchmarks/bench_hotpath.py              (part of: python -m nox -s bench)
    python benchmarks/bench_hotpath.py --callgrind  (instruction counts; needs valgrind)

Why: the gateway's throughput next to nginx (bench_gateway.py) is what users see, but on this
machine its runs scatter by tens of percent, more than most changes to the hot path move it.
This measures the part of a request that kroute's code decides, without sockets: FastGateway's
`Client` and `Upstream` protocols, on uvloop when installed, are fed the request wrk sends and
the response nginx answers, over transports that only count writes, 20 connections in turn.
Routing, pools, passive health, the retry budget, metrics (when prometheus-client is
installed), forwarding headers and the response head are all the real code.

The baseline, in the same process: a minimal proxy on the same parser (httptools) that parses
both messages, drops hop-by-hop headers, adds one forwarding header and frames the response,
with no routing, health, timeouts or metrics. The ratio says what kroute's behaviour costs over
bare proxying in Python. With `--callgrind` the script runs itself under valgrind's callgrind
with two numbers of rounds and reports the difference per request: instruction counts, the
same from run to run whatever else the machine does (PYTHONHASHSEED is fixed for it).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import gc
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import httptools

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_gateway import (
    BASICAUTH_HOST,
    BASICAUTH_USER,
    MIDDLEWARES_HOST,
    PLAIN_ROUTE_HOST,
    RATELIMIT_HOST,
    STEPS_HOST,
    manifests,
)

import kroute
from kroute.gateway.fast import FastGateway
from kroute.gateway.fast.client import Client
from kroute.gateway.fast.endpoint import Upstream

CONNECTIONS = 20
REQUEST = b"GET / HTTP/1.1\r\nHost: bench.local\r\nUser-Agent: wrk\r\n\r\n"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Mon, 30 Nov 2026 09:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok"
)
KROUTE, MINIMAL = "kroute FastGateway", "minimal Python proxy (baseline)"
#: The same request to a route with steps: a header set and a path prefix replaced.
STEPS = "kroute FastGateway, route with a header set and a prefix rewrite"
STEPS_REQUEST = b"GET /api/ok HTTP/1.1\r\nHost: %b\r\nUser-Agent: wrk\r\n\r\n" % STEPS_HOST.encode()
#: An IngressRoute without Middlewares, and the same through stripPrefix + headers +
#: ipAllowList, one rateLimit, or one basicAuth (the right password, as a logged-in client sends
#: it with every request).
ROUTE = "kroute FastGateway, IngressRoute without middlewares"
MIDDLEWARES = "kroute FastGateway, IngressRoute with stripPrefix + headers + ipAllowList"
RATELIMIT = "kroute FastGateway, IngressRoute with rateLimit"
BASICAUTH = "kroute FastGateway, IngressRoute with basicAuth (bcrypt)"
_CREDENTIALS = b"Authorization: Basic %b" % base64.b64encode(b":".join(BASICAUTH_USER))


def _get(host: str, *headers: bytes) -> bytes:
    lines = b"".join(b"%b\r\n" % h for h in (b"Host: " + host.encode(), b"User-Agent: wrk",
                                               *headers))  # fmt: skip
    return b"GET /api/ok HTTP/1.1\r\n%b\r\n" % lines


ROUTE_REQUESTS = {
    ROUTE: _get(PLAIN_ROUTE_HOST),
    MIDDLEWARES: _get(MIDDLEWARES_HOST),
    RATELIMIT: _get(RATELIMIT_HOST),
    BASICAUTH: _get(BASICAUTH_HOST, _CREDENTIALS),
}
#: The plain request with tracing installed and not sampled, by kroute (`Tracing(provider,
#: sample_ratio=0)`: what issue 22 asks to cost within 5% of no tracing) and by the SDK's
#: sampler (`ParentBased(TraceIdRatioBased(0))`, a span that does not record per request).
#: The plain request where an admin app runs: its `Traffic` observer (the dashboard's charts)
#: counts every request too.
ADMIN = "kroute FastGateway, with the admin app's traffic charts"
TRACED = "kroute FastGateway, tracing installed, not sampled"
SDK_UNSAMPLED = "kroute FastGateway, tracing, not sampled by the SDK's sampler"
#: The plain request with the JSON access log on (`kroute.AccessLog(path)`, what the example
#: gateway's `--access-log PATH` makes): writing to a file, its writer thread's work included
#: (callgrind and the CPU time count every thread), and the serving side alone (the writer not
#: started: the events wait in its queue, up to its 10,000).
ACCESS_LOG = "kroute FastGateway, JSON access log to a file"
ACCESS_QUEUED = "kroute FastGateway, JSON access log, serving side only"
#: The writer alone: the JSON lines of a round's queued requests made (`AccessLog`'s batch
#: formatting), nothing served or written: per request, what a line costs the writer thread.
ACCESS_WRITER = "kroute FastGateway, JSON access log, the writer's line only"
#: The access logs whose writers run (closed at the end: what they hold is written).
WRITERS: list[kroute.AccessLog] = []
#: Every access log made, the last one's queue read by `writer_round`.
QUEUED: list[kroute.AccessLog] = []
#: One round: every connection sends its request, then every endpoint answers.
Round = Callable[[], Any]


class CountingTransport:
    """A transport that takes writes and counts them (no socket)."""

    def __init__(self) -> None:
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1

    def get_extra_info(self, name: str) -> Any:
        if name == "ssl_object":
            return None
        return ("127.0.0.1", 40000) if name == "peername" else ("127.0.0.1", 8080)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def kroute_round(request: bytes = REQUEST, *, tracing: str = "", admin: bool = False,
                 access: str = "") -> Round:  # fmt: skip
    """FastGateway's protocols with bench_gateway's routes, every connection sending
    `request` (`tracing`: installed, "kroute" or "sdk" sampling nothing; `admin`: with an
    AdminHandler, whose Traffic observer counts each request; `access`: the JSON access log to
    a file, "file", or queued for a writer never started, "queued")."""
    workdir = Path(tempfile.mkdtemp())
    manifests(workdir, 18180)
    objects = json.loads((workdir / "objects.json").read_text())
    router = kroute.Router([kroute.MemorySource(objects=objects)])
    with contextlib.suppress(ImportError):  # prometheus-client is an optional extra
        kroute.Metrics(router)
    if admin:
        kroute.AdminHandler(router)
    if tracing == "kroute":
        router.tracing = kroute.Tracing(unsampled("kroute"), sample_ratio=0.0)
    elif tracing == "sdk":
        router.tracing = kroute.Tracing(unsampled("sdk"))
    if access:
        log = kroute.AccessLog(workdir / "access.log")
        router.observers.append(log)
        if access == "file":
            log.start()
            WRITERS.append(log)
        QUEUED.append(log)
    gateway = FastGateway(router, max_idle=CONNECTIONS)
    loop = asyncio.get_running_loop()
    key = ("127.0.0.1", 18180)
    clients = []
    for _ in range(CONNECTIONS):
        client = Client(gateway)
        client.connection_made(cast(asyncio.Transport, CountingTransport()))
        clients.append(client)
        endpoint = Upstream(gateway.endpoints, key)
        endpoint.connection_made(cast(asyncio.Transport, CountingTransport()))
        gateway.endpoints.give_back(key, endpoint, loop.time())

    async def one_round() -> None:
        for client in clients:
            client.data_received(request)
        await asyncio.sleep(0)  # the Outbox writes
        for client in clients:
            exchange = client.exchange
            assert exchange is not None
            while exchange.conn is None:  # (basicAuth's first bcrypt check, in a thread)
                await asyncio.sleep(0.001)
            assert isinstance(exchange.conn, Upstream)
            exchange.conn.data_received(RESPONSE)
        await asyncio.sleep(0)

    return one_round


def writer_round() -> Round:
    """The access log's writer making the lines of one round of requests, the same entries
    each round (taken from a queued log's first round: their serving is not counted, as
    `instructions` takes the difference of two numbers of rounds)."""
    serve = kroute_round(access="queued")
    log = QUEUED[-1]
    batch: list[Any] = []

    async def one_round() -> None:
        if not batch:
            await serve()
            batch.extend(log._queue)
            log._queue.clear()
        log._lines(batch)

    return one_round


def unsampled(by: str) -> Any:
    """The SDK's TracerProvider (no exporter: nothing is exported): as the example gateway's
    `--tracing-sample-ratio 0` makes it for kroute's sampling ("kroute"), or sampling nothing
    itself, `ParentBased(TraceIdRatioBased(0))` ("sdk")."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    if by == "kroute":
        return TracerProvider()
    return TracerProvider(sampler=ParentBased(TraceIdRatioBased(0.0)))


_HOP = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"content-length"})


class _MinimalEndpoint:
    def __init__(self, idle: list[_MinimalEndpoint]) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.idle = idle
        self.transport = CountingTransport()
        self.client: _MinimalClient | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.out: list[bytes] = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        lines = [b"%b: %b\r\n" % (n, v) for n, v in self.headers if n.lower() not in _HOP]
        self.out = [b"HTTP/1.1 200 OK\r\n%bContent-Length: 2\r\n\r\n" % b"".join(lines)]
        self.headers = []

    def on_body(self, body: bytes) -> None:
        self.out.append(body)

    def on_message_complete(self) -> None:
        assert self.client is not None
        self.client.transport.write(b"".join(self.out))
        self.client = None
        self.idle.append(self)


class _MinimalClient:
    def __init__(self, idle: list[_MinimalEndpoint]) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.idle = idle
        self.transport = CountingTransport()
        self.headers: list[tuple[bytes, bytes]] = []
        self.url = b""
        self.endpoint: _MinimalEndpoint | None = None

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        lines = [b"%b: %b\r\n" % (n, v) for n, v in self.headers if n.lower() not in _HOP]
        head = b"GET %b HTTP/1.1\r\n%bX-Forwarded-For: 127.0.0.1\r\n\r\n" % (
            self.url, b"".join(lines))  # fmt: skip
        endpoint = self.idle.pop()
        endpoint.client = self
        self.endpoint = endpoint
        endpoint.transport.write(head)
        self.headers, self.url = [], b""


def minimal_round() -> Round:
    idle: list[_MinimalEndpoint] = [_MinimalEndpoint([]) for _ in range(CONNECTIONS)]
    for endpoint in idle:
        endpoint.idle = idle
    clients = [_MinimalClient(idle) for _ in range(CONNECTIONS)]

    async def one_round() -> None:
        for client in clients:
            client.parser.feed_data(REQUEST)
        await asyncio.sleep(0)
        for client in clients:
            assert client.endpoint is not None
            client.endpoint.parser.feed_data(RESPONSE)
        await asyncio.sleep(0)

    return one_round


ROUNDS: dict[str, Callable[[], Round]] = {
    KROUTE: kroute_round,
    MINIMAL: minimal_round,
    STEPS: lambda: kroute_round(STEPS_REQUEST),
    **{name: functools.partial(kroute_round, request) for name, request in ROUTE_REQUESTS.items()},
    ADMIN: lambda: kroute_round(admin=True),
    TRACED: lambda: kroute_round(tracing="kroute"),
    SDK_UNSAMPLED: lambda: kroute_round(tracing="sdk"),
    ACCESS_LOG: lambda: kroute_round(access="file"),
    ACCESS_QUEUED: lambda: kroute_round(access="queued"),
    ACCESS_WRITER: writer_round,
}
#: The rows of the first table, in order.
ROWS = (MINIMAL, KROUTE, STEPS, ADMIN, TRACED, SDK_UNSAMPLED, ACCESS_LOG, ACCESS_QUEUED,
        ACCESS_WRITER)  # fmt: skip


def run(main: Callable[[], Any]) -> None:
    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())


def timed(rounds: int, repeats: int) -> dict[str, float]:
    """Best µs of CPU per request for each proxy, their rounds interleaved."""
    best = dict.fromkeys(ROUNDS, float("inf"))

    async def main() -> None:
        made = {name: make() for name, make in ROUNDS.items()}
        for one_round in made.values():
            for _ in range(200):  # warm: plans, memo, decisions made; connections checked out
                await one_round()
        gc.collect()
        for _ in range(repeats):
            for name, one_round in made.items():
                started = time.process_time()
                for _ in range(rounds):
                    await one_round()
                elapsed = time.process_time() - started
                best[name] = min(best[name], elapsed / (rounds * CONNECTIONS) * 1e6)
        close_writers()

    run(main)
    return best


def close_writers() -> None:
    """Close the access logs whose writers run: every line still queued is written."""
    for log in WRITERS:
        log.close()
    WRITERS.clear()


def instructions(name: str) -> float:
    """Instructions per request of `name`: two callgrind runs, the difference per request."""
    counts = []
    for rounds in (30, 230):
        out = subprocess.run(
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
             __file__, "--only", name, "--rounds", str(rounds)],
            capture_output=True, text=True, check=True,
            env={**os.environ, "PYTHONHASHSEED": "0"},
        ).stderr  # fmt: skip
        counts.append(int(re.search(r"Collected : (\d+)", out).group(1)))  # type: ignore[union-attr]
    return (counts[1] - counts[0]) / (200 * CONNECTIONS)


def only(name: str, rounds: int) -> None:
    """The rounds of one proxy, nothing else measured (what callgrind runs)."""

    async def main() -> None:
        one_round = ROUNDS[name]()
        for _ in range(rounds):
            await one_round()
        close_writers()

    run(main)


def main() -> None:
    if "--only" in sys.argv:
        only(sys.argv[sys.argv.index("--only") + 1], int(sys.argv[sys.argv.index("--rounds") + 1]))
        return
    print(f"Python work per proxied request, in process ({CONNECTIONS} connections, no sockets; "
          "best of 7 interleaved rounds of CPU time):\n")  # fmt: skip
    best = timed(rounds=1500, repeats=7)
    print("| proxy | µs per request | vs baseline | vs kroute without steps |")
    print("| --- | --- | --- | --- |")
    for name in ROWS:
        print(f"| {name} | {best[name]:.2f} | {best[name] / best[MINIMAL]:.2f}x "
              f"| {best[name] / best[KROUTE]:.2f}x |")  # fmt: skip
    print()
    _middleware_rows("µs per request", best)
    if "--callgrind" not in sys.argv:
        return
    if shutil.which("valgrind") is None:
        print("Instructions: skipped (needs valgrind)\n")
        return
    counted = {name: instructions(name) for name in ROWS}
    print(
        "| proxy | instructions per request (callgrind) | vs baseline | vs kroute without steps |"
    )
    print("| --- | --- | --- | --- |")
    for name in ROWS:
        print(f"| {name} | {counted[name]:,.0f} | {counted[name] / counted[MINIMAL]:.2f}x "
              f"| {counted[name] / counted[KROUTE]:.2f}x |")  # fmt: skip
    print()
    _middleware_rows("instructions per request (callgrind)",
                     {name: instructions(name) for name in ROUTE_REQUESTS})  # fmt: skip


def _middleware_rows(unit: str, measured: dict[str, float]) -> None:
    """What Middlewares add to a request of an IngressRoute."""
    print(f"| IngressRoute | {unit} | added by the middleware | vs without middlewares |")
    print("| --- | --- | --- | --- |")
    for name in ROUTE_REQUESTS:
        added = measured[name] - measured[ROUTE]
        print(f"| {name} | {measured[name]:,.2f} | {added:+,.2f} "
              f"| {measured[name] / measured[ROUTE]:.2f}x |")  # fmt: skip
    print()


if __name__ == "__main__":
    main()

"""The gateway: throughput and latency next to nginx, and the time from an EndpointSlice change
to the first request routed to the new endpoint with 10,000 objects loaded.

    python -m nox -s bench      (or: python benchmarks/bench_gateway.py)
    python benchmarks/bench_gateway.py --steps-only   (a route with steps next to one without)
    python benchmarks/bench_gateway.py --middlewares-only   (an IngressRoute with stripPrefix,
                                                             headers and ipAllowList, next to
                                                             the same one without)
    python benchmarks/bench_gateway.py --tracing-only (tracing installed, not sampled, next to off)
    python benchmarks/bench_gateway.py --access-log-only   (FastGateway with JSON access logs to
                                                            a file, next to nginx with its
                                                            access log on, and next to
                                                            FastGateway without)

Throughput (needs wrk and nginx from Debian's packages; skipped, saying so, without them):
every proxy runs on core 0, one process, one worker; the backend (nginx, one worker, a 2-byte
answer) and wrk (one thread) share core 1. Proxies: nginx as a reverse proxy (upstream
keep-alive), the example gateway (examples/gateway/) on FastGateway and on the anyio front, and
the ASGI gateway (examples/asgi_embedding/) under uvicorn, hypercorn and granian where
installed; 20 and 100 connections. nginx keeps running beside each of them (idle while the
other is measured), and every run of a proxy follows an nginx run with as many connections:
each ratio is that pair's, and FastGateway's is the median of PAIRED_ROUNDS pairs. The same
example gateway with tracing installed and never sampled (traced_gateway.py) runs beside
FastGateway, their runs paired the same way. So does the example gateway with its access log
(`--access-log FILE`: JSON lines, Traefik's fields) next to an nginx reverse proxy like the
first with its access log on (`access_log FILE`: the combined format, written per request).

Change to routing: the example gateway's Router with FastGateway in this process, watching the
API emulator (tests/apiserver.py) that holds 2,000 Ingresses, 4,000 Services and 4,000
EndpointSlices; 100 times, one Service's slice is replaced with a new endpoint at the emulator
and requests go through the gateway until one is answered by the new endpoint. As the example
gateway does, the objects of the initial sync are frozen out of the garbage collector
(`gc.freeze()`) once the Router is ready; without that, full collections put 100-200 ms
outliers into the tail.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import bcrypt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_transport import PROXY_CONF, running_nginx

from kroute.gateway.fast import FastGateway
from kroute.gateway.router import Router
from kroute.watch import kinds
from kroute.watch.cluster import Cluster
from kroute.watch.kube import KubernetesSource
from tests.apiserver import ApiServer
from tests.pods import Client, Pod, endpoint_slice, service

ROOT = Path(__file__).resolve().parent.parent
SECONDS = 5
BACKEND, NGINX_PROXY, GATEWAY, ADMIN = 18180, 18181, 18182, 18183
TRACED_GATEWAY, TRACED_ADMIN = 18184, 18185
LOGGED_GATEWAY, LOGGED_ADMIN, LOGGED_PROXY = 18186, 18187, 18188
PROBE_HOST = "bench.local"
#: Rounds of (nginx, FastGateway) runs back to back: the machine's speed drifts by tens of
#: percent over a minute here, so each ratio compares two runs seconds apart.
PAIRED_ROUNDS = 5
NGINX = "nginx reverse proxy (1 worker, upstream keep-alive)"
#: The same nginx with its access log on: the default (combined) format, to a file.
LOGGED_PROXY_CONF = PROXY_CONF.replace(
    "listen 127.0.0.1:{port};", "listen 127.0.0.1:{port};\n        access_log {dir}/access.log;"
)
FAST = "kroute example gateway, FastGateway"
#: One wrk run: (requests/s, negative when there were errors; p50 ms; p99 ms).
Run = tuple[float, float, float]


#: The host of a route with steps: an HTTPRoute that sets a request header and replaces its path
#: prefix `/api` with `/` (what issue 17 asks to cost within 10% of a route without steps).
STEPS_HOST = "steps.local"
STEPS_ROUTE: list[dict[str, Any]] = [
    {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
     "metadata": {"name": "bench", "namespace": "default"},
     "spec": {"gatewayClassName": "kroute",
              "listeners": [{"name": "http", "protocol": "HTTP", "port": 80}]}},
    {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
     "metadata": {"name": "steps", "namespace": "default"},
     "spec": {"parentRefs": [{"name": "bench"}], "hostnames": [STEPS_HOST], "rules": [{
         "matches": [{"path": {"type": "PathPrefix", "value": "/api"}}],
         "filters": [
             {"type": "RequestHeaderModifier",
              "requestHeaderModifier": {"set": [{"name": "X-Env", "value": "bench"}]}},
             {"type": "URLRewrite", "urlRewrite": {
                 "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}}}],
         "backendRefs": [{"name": "backend", "port": 80}]}]}},
]  # fmt: skip


#: Hosts of two IngressRoutes alike but for their Middlewares: stripPrefix /api, a request and a
#: response header, ipAllowList of the loopback address (what issue 19 asks to cost within 15%
#: of the same route without middlewares).
MIDDLEWARES_HOST, PLAIN_ROUTE_HOST = "mw.local", "mw-plain.local"
#: Hosts of the same IngressRoute through one rateLimit (a limit never reached) or one basicAuth
#: Middleware (bcrypt, htpasswd -B's cost 5): their cost per request (bench_hotpath.py).
RATELIMIT_HOST, BASICAUTH_HOST = "ratelimit.local", "basicauth.local"
BASICAUTH_USER = (b"bench", b"bench-password")


def _middleware(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "traefik.io/v1alpha1", "kind": "Middleware",
            "metadata": {"name": name, "namespace": "default"}, "spec": spec}  # fmt: skip


def _ingressroute(host: str, *middlewares: str) -> dict[str, Any]:
    return {"apiVersion": "traefik.io/v1alpha1", "kind": "IngressRoute",
            "metadata": {"name": host.split(".")[0], "namespace": "default"},
            "spec": {"routes": [{"match": f"Host(`{host}`) && PathPrefix(`/api`)",
                                 "middlewares": [{"name": m} for m in middlewares],
                                 "services": [{"name": "backend", "port": 80}]}]}}  # fmt: skip


MIDDLEWARES_ROUTES = [
    _middleware("strip", {"stripPrefix": {"prefixes": ["/api"]}}),
    _middleware("headers", {"headers": {"customRequestHeaders": {"X-Env": "bench"},
                                        "customResponseHeaders": {"X-Served-By": "kroute"}}}),
    _middleware("allow", {"ipAllowList": {"sourceRange": ["127.0.0.1/32"]}}),
    _ingressroute(MIDDLEWARES_HOST, "strip", "headers", "allow"),
    _ingressroute(PLAIN_ROUTE_HOST),
    _middleware("limit", {"rateLimit": {"average": 1_000_000_000, "burst": 1_000_000_000}}),
    _middleware("auth", {"basicAuth": {"users": [b":".join((
        BASICAUTH_USER[0], bcrypt.hashpw(BASICAUTH_USER[1], bcrypt.gensalt(5)))).decode()]}}),
    _ingressroute(RATELIMIT_HOST, "limit"),
    _ingressroute(BASICAUTH_HOST, "auth"),
]  # fmt: skip


def manifests(directory: Path, backend_port: int, *extra: dict[str, Any]) -> None:
    ingress: dict[str, Any] = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
               "metadata": {"name": "bench", "namespace": "default"},
               "spec": {"ingressClassName": "kroute", "rules": [{"host": PROBE_HOST, "http": {
                   "paths": [{"path": "/", "pathType": "Prefix", "backend": {
                       "service": {"name": "backend", "port": {"number": 80}}}}]}}]}}  # fmt: skip
    endpoints = endpoint_slice("backend", backend_port, [("127.0.0.1", "ready")])
    objects = [ingress, *STEPS_ROUTE, *MIDDLEWARES_ROUTES, service("backend"), endpoints, *extra]
    (directory / "objects.json").write_text(json.dumps(objects))


def wrk(
    port: int, connections: int, *, scheme: str = "http", headers: tuple[str, ...] = (),
    host: str = PROBE_HOST, path: str = "/",
) -> Run:  # fmt: skip
    """(requests/s, p50 ms, p99 ms) from wrk on core 1."""
    out = subprocess.run(
        ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{SECONDS}s", "--latency",
         "-H", f"Host: {host}", *(f"-H{h}" for h in headers),
         f"{scheme}://127.0.0.1:{port}{path}"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    if "Non-2xx" in out or "Socket errors" in out:
        rps = -rps  # flagged below: errors are not throughput
    return rps, _percentile(out, "50%"), _percentile(out, "99%")


def _percentile(out: str, label: str) -> float:
    value, unit = re.search(rf"{label}\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


@contextlib.contextmanager
def on_core0(command: list[str], port: int, **options: Any) -> Iterator[None]:
    """Run `command` on core 0 until the block ends, once `port` listens and routes are up."""
    process = subprocess.Popen(
        ["taskset", "-c", "0", *command], cwd=ROOT / "examples/asgi_embedding",
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **options,
    )  # fmt: skip
    try:
        wait_port(port)
        time.sleep(1.5)  # the manifests are read, the routes published
        yield
    finally:
        process.terminate()
        process.wait()


def wait_port(port: int, timeout: float = 20.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def proxies(workdir: Path) -> dict[str, list[str]]:
    """Name -> command (run on core 0) of every proxy that can run here."""
    python = sys.executable
    gateway = [python, str(ROOT / "examples/gateway/gateway.py"), "--manifests", str(workdir),
               "--listen", f"127.0.0.1:{GATEWAY}", "--admin", f"127.0.0.1:{ADMIN}",
               # STEPS_ROUTE's Gateway listener is on port 80: the web entry point stands for it
               "--advertise", "web=80"]  # fmt: skip
    found = {
        FAST: gateway,
        "kroute example gateway, anyio front (HttpServer)": [*gateway, "--front", "anyio"],
    }
    app = ["--app-dir", str(ROOT / "examples/asgi_embedding")]
    if shutil.which("uvicorn") or _module("uvicorn"):
        found["AsgiGateway under uvicorn (httptools, uvloop)"] = [
            python, "-m", "uvicorn", "app:app", *app, "--port", str(GATEWAY), "--http",
            "httptools", "--loop", "uvloop" if _module("uvloop") else "asyncio",
            "--no-access-log", "--log-level", "warning"]  # fmt: skip
    if _module("hypercorn"):
        found["AsgiGateway under hypercorn"] = [
            python, "-m", "hypercorn", "app:app", "-b",
            f"127.0.0.1:{GATEWAY}", "--workers", "1", "--log-level", "warning",
            "--worker-class", "uvloop" if _module("uvloop") else "asyncio"]  # fmt: skip
    if _module("granian"):
        found["AsgiGateway under granian"] = [
            python, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1", "--port",
            str(GATEWAY), "--workers", "1", "--working-dir", str(ROOT / "examples/asgi_embedding"),
            "--log-level", "warning", "app:app"]  # fmt: skip
    return found


def _module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def throughput() -> None:
    if not (shutil.which("wrk") and shutil.which("nginx") and shutil.which("taskset")):
        print("Throughput: skipped (needs wrk, nginx and taskset: apt-get install wrk nginx)\n")
        return
    workdir = Path(tempfile.mkdtemp())
    manifests(workdir, BACKEND)
    env = {**os.environ, "KROUTE_MANIFESTS": str(workdir), "PYTHONPATH": str(ROOT)}
    commands = proxies(workdir)
    # The pairs alone (FastGateway, no nginx pairs): one of these flags, or all of them.
    only = [flag for flag in ONLY if flag in sys.argv]
    if only:
        commands = {FAST: commands[FAST]}
    rows: list[tuple[str, int, Run, float]] = []  # proxy, connections, median run, vs nginx
    steps: list[tuple[int, Run, Run, float]] = []
    middlewares: list[tuple[int, Run, Run, float]] = []
    traced: list[tuple[int, Run, Run, float]] = []
    logged: list[tuple[int, Run, Run, float]] = []
    logged_plain: list[tuple[int, Run, Run, float]] = []
    with running_nginx(BACKEND), running_nginx(NGINX_PROXY, PROXY_CONF, core=0, backend=BACKEND):
        for name, command in commands.items():
            with on_core0(command, GATEWAY, env=env):
                wrk(GATEWAY, 20)  # warm-up: connections to the backend are open
                rounds = PAIRED_ROUNDS if name == FAST else 1
                for connections in () if only else (20, 100):
                    pairs = [(wrk(NGINX_PROXY, connections), wrk(GATEWAY, connections))
                             for _ in range(rounds)]  # fmt: skip
                    if name == FAST:
                        rows.append((NGINX, connections, _median_run([n for n, _ in pairs]), 1.0))
                    ratio = statistics.median(abs(g[0]) / abs(n[0]) for n, g in pairs)
                    rows.append((name, connections, _median_run([g for _, g in pairs]), ratio))
                if name != FAST:
                    continue
                if not only or "--steps-only" in only:
                    steps = route_pairs(PROBE_HOST, STEPS_HOST)
                if not only or "--middlewares-only" in only:
                    middlewares = route_pairs(PLAIN_ROUTE_HOST, MIDDLEWARES_HOST)
                if not only or "--tracing-only" in only:
                    with on_core0(traced_command(workdir), TRACED_GATEWAY, env=env):
                        wrk(TRACED_GATEWAY, 20)
                        traced = paired(lambda c: wrk(GATEWAY, c),
                                        lambda c: wrk(TRACED_GATEWAY, c))  # fmt: skip
                if not only or "--access-log-only" in only:
                    logged, logged_plain = access_log_pairs(workdir, env)
    if rows:
        print(f"Throughput on one core (wrk, {SECONDS} s per row; each proxy run right after an "
              f"nginx run, the ratio is the pair's; FastGateway and nginx: median of "
              f"{PAIRED_ROUNDS} such pairs):\n")  # fmt: skip
        print("| proxy | connections | requests/s | p50 ms | p99 ms | vs nginx |")
        print("| --- | --- | --- | --- | --- | --- |")
        for name, connections, (rps, p50, p99), ratio in rows:
            flag = " (errors!)" if rps < 0 else ""
            print(f"| {name}{flag} | {connections} | {abs(rps):,.0f} | {p50:.2f} | {p99:.2f} "
                  f"| {ratio:.2f}x |")  # fmt: skip
        print()
    _pairs_table(
        "FastGateway, a route with steps (a request header set and the path prefix /api "
        "replaced) next to a route without, same path",
        ("without steps", "with steps"),
        steps,
    )
    _pairs_table(
        "FastGateway, an IngressRoute with the Middlewares stripPrefix, headers "
        "(a request and a response header) and ipAllowList next to the same "
        "IngressRoute without, same path",
        ("without middlewares", "with middlewares"),
        middlewares,
    )
    _pairs_table(
        "FastGateway with tracing installed and not sampled (kroute.Tracing(TracerProvider(), "
        "sample_ratio=0)) next to tracing off",
        ("tracing off", "not sampled"),
        traced,
    )
    _pairs_table(
        "FastGateway with JSON access logs to a file (the example gateway's --access-log FILE) "
        "next to nginx with its access log on (access_log FILE, the combined format)",
        ("nginx, access log", "FastGateway, access log"),
        logged,
    )
    _pairs_table(
        "FastGateway with JSON access logs to a file next to FastGateway without",
        ("FastGateway", "FastGateway, access log"),
        logged_plain,
    )


#: The flags that run only some pairs of FastGateway runs.
ONLY = ("--steps-only", "--middlewares-only", "--tracing-only", "--access-log-only")


def access_log_pairs(
    workdir: Path, env: dict[str, str]
) -> tuple[list[tuple[int, Run, Run, float]], list[tuple[int, Run, Run, float]]]:
    """nginx and the example gateway, each with its access log to a file (in a directory of
    its own), back to back; the files are removed afterwards (a few hundred MB). Then the
    example gateway without its log (the one at GATEWAY) and with it, back to back: nginx's
    runs move by more than the log costs on this machine, FastGateway's own ratio less."""
    logs = Path(tempfile.mkdtemp())
    command = [*proxies(workdir)[FAST], "--access-log", str(logs / "access.log")]
    command[command.index("--listen") + 1] = f"127.0.0.1:{LOGGED_GATEWAY}"
    command[command.index("--admin") + 1] = f"127.0.0.1:{LOGGED_ADMIN}"
    try:
        with running_nginx(LOGGED_PROXY, LOGGED_PROXY_CONF, core=0, backend=BACKEND), \
                on_core0(command, LOGGED_GATEWAY, env=env):  # fmt: skip
            wrk(LOGGED_GATEWAY, 20)
            logged = paired(lambda c: wrk(LOGGED_PROXY, c), lambda c: wrk(LOGGED_GATEWAY, c))
            return logged, paired(lambda c: wrk(GATEWAY, c), lambda c: wrk(LOGGED_GATEWAY, c))
    finally:
        shutil.rmtree(logs, ignore_errors=True)


def _pairs_table(
    title: str, what: tuple[str, str], pairs: list[tuple[int, Run, Run, float]]
) -> None:
    if not pairs:
        return
    first, second = what
    print(f"{title}, back to back ({PAIRED_ROUNDS} pairs):\n")
    print(f"| connections | {first} req/s | {second} req/s | p99 ms {first} / {second} "
          f"| {second} / {first} |")  # fmt: skip
    print("| --- | --- | --- | --- | --- |")
    for connections, plain, other, ratio in pairs:
        flag = " (errors!)" if plain[0] < 0 or other[0] < 0 else ""
        print(f"| {connections}{flag} | {abs(plain[0]):,.0f} | {abs(other[0]):,.0f} "
              f"| {plain[2]:.2f} / {other[2]:.2f} | {ratio:.2f}x |")  # fmt: skip
    print()


def traced_command(workdir: Path) -> list[str]:
    """The example gateway with tracing installed, never sampled (traced_gateway.py)."""
    return [sys.executable, str(ROOT / "benchmarks/traced_gateway.py"), "--manifests",
            str(workdir), "--listen", f"127.0.0.1:{TRACED_GATEWAY}",
            "--admin", f"127.0.0.1:{TRACED_ADMIN}", "--advertise", "web=80"]  # fmt: skip


def route_pairs(plain: str, host: str) -> list[tuple[int, Run, Run, float]]:
    """FastGateway on the same path of the routes for `plain` and `host` (the same route with
    steps or Middlewares), back to back."""
    return paired(lambda c: wrk(GATEWAY, c, host=plain, path="/api/ok"),
                  lambda c: wrk(GATEWAY, c, host=host, path="/api/ok"))  # fmt: skip


def paired(first: Callable[[int], Run], second: Callable[[int], Run]) -> list[
    tuple[int, Run, Run, float]
]:  # fmt: skip
    """`first` and `second` run back to back (PAIRED_ROUNDS pairs per number of connections):
    (connections, median run of first, of second, median ratio second / first)."""
    out = []
    for connections in (20, 100):
        pairs = [(first(connections), second(connections)) for _ in range(PAIRED_ROUNDS)]
        ratio = statistics.median(abs(b[0]) / abs(a[0]) for a, b in pairs)
        out.append((connections, _median_run([a for a, _ in pairs]),
                    _median_run([b for _, b in pairs]), ratio))  # fmt: skip
    return out


def _median_run(runs: list[Run]) -> Run:
    """The run with the median requests/s (with its own latencies)."""
    return sorted(runs, key=lambda run: abs(run[0]))[len(runs) // 2]


# -- change to routing ---------------------------------------------------------------------------


def cluster_objects() -> list[tuple[kinds.Kind, dict[str, Any]]]:
    objects: list[tuple[kinds.Kind, dict[str, Any]]] = []
    for i in range(2000):
        objects.append((kinds.INGRESS, {
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": f"app-{i}", "namespace": f"ns-{i % 20}"},
            "spec": {"ingressClassName": "kroute", "rules": [{
                "host": f"app-{i}.example.com", "http": {"paths": [{
                    "path": "/", "pathType": "Prefix",
                    "backend": {"service": {"name": f"app-{i}", "port": {"number": 80}}},
                }]}}]}}))  # fmt: skip
    for i in range(4000):
        svc = service(f"app-{i % 2000}" if i < 2000 else f"other-{i}", namespace=f"ns-{i % 20}")
        objects.append((kinds.SERVICE, svc))
        addresses = [(f"10.{i // 250}.{i % 250}.{j}", "ready") for j in range(3)]
        slice_ = endpoint_slice(svc["metadata"]["name"], 8080, addresses)
        slice_["metadata"]["namespace"] = svc["metadata"]["namespace"]
        objects.append((kinds.ENDPOINT_SLICE, slice_))
    return objects


def probe_ingress(host: str) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": "probe", "namespace": "default"},
        "spec": {"ingressClassName": "kroute", "rules": [{"host": host, "http": {
            "paths": [{"path": "/", "pathType": "Prefix", "backend": {
                "service": {"name": "probe", "port": {"number": 80}}}}]}}]}}  # fmt: skip


def summary(delays: list[float]) -> str:
    delays_ms = sorted(d * 1000 for d in delays)
    p99 = statistics.quantiles(delays_ms, n=100, method="inclusive")[98]
    return (f"{len(delays)} changes: p50 {statistics.median(delays_ms):.1f} ms, "
            f"p99 {p99:.1f} ms, max {delays_ms[-1]:.1f} ms")  # fmt: skip


async def change_to_routing() -> None:
    objects = cluster_objects()
    objects.append((kinds.INGRESS, probe_ingress("probe.local")))
    objects.append((kinds.SERVICE, service("probe")))
    pods = [Pod(f"pod-{i}", f"127.0.3.{i + 1}") for i in range(101)]
    kind_list = (kinds.INGRESS, kinds.INGRESS_CLASS, kinds.SERVICE, kinds.ENDPOINT_SLICE)
    with ApiServer(kind_list) as api:
        for kind, obj in objects:
            api.create(kind, obj)
        async with anyio.create_task_group() as group:
            port = 0
            for pod in pods:
                port = await pod.start(group, port)
            first = endpoint_slice("probe", port, [(pods[0].address, "ready")])
            api.create(kinds.ENDPOINT_SLICE, first)
            config = Path(tempfile.mkdtemp()) / "kubeconfig"
            config.write_text(
                f"apiVersion: v1\nkind: Config\nclusters: [{{name: e, cluster: {{server: "
                f"'{api.url}'}}}}]\nusers: [{{name: u, user: {{token: t}}}}]\n"
                "contexts: [{name: e, context: {cluster: e, user: u}}]\ncurrent-context: e\n"
            )  # fmt: skip
            source = KubernetesSource(Cluster.from_kubeconfig(str(config)), kind_list)
            router = Router([source])
            group.start_soon(router.run)
            gateway_port = await group.start(FastGateway(router).serve, "127.0.0.1", 0)
            started = time.perf_counter()
            while not router.ready:
                await anyio.sleep(0.01)
            synced = time.perf_counter() - started
            gc.freeze()  # as the example gateway does once ready
            client = Client(gateway_port)
            assert (await client.json("probe.local"))["pod"] == "pod-0"
            delays = []
            for pod in pods[1:]:
                change = endpoint_slice("probe", port, [(pod.address, "ready")])
                begun = time.perf_counter()
                group.start_soon(anyio.to_thread.run_sync, api.update, kinds.ENDPOINT_SLICE, change)
                while (await client.json("probe.local"))["pod"] != pod.name:
                    pass
                delays.append(time.perf_counter() - begun)
                await anyio.sleep(0.05)
            # An Ingress change rebuilds the table (only the changed object is compiled again).
            rebuilds = []
            for i in range(30):
                host = f"probe-{i}.local"
                begun = time.perf_counter()
                group.start_soon(anyio.to_thread.run_sync, api.update, kinds.INGRESS,
                                 probe_ingress(host))  # fmt: skip
                while (await client.request(host))[0] != 200:
                    pass
                rebuilds.append(time.perf_counter() - begun)
                await anyio.sleep(0.05)
            await client.aclose()
            group.cancel_scope.cancel()
    print(f"Change to routing, {len(objects) + 1:,} objects at the emulator (initial sync and "
          f"first table: {synced:.1f} s):")  # fmt: skip
    print(f"EndpointSlice replaced -> first request answered by the new endpoint, "
          f"{summary(delays)} (Traefik: 2 s throttle).")  # fmt: skip
    print(f"Ingress host changed -> first request routed on the new host (a table rebuild over "
          f"{router.statistics().routes:,} routes), {summary(rebuilds)}.")  # fmt: skip


def main() -> None:
    if "--change-only" not in sys.argv:
        throughput()
    if not any(flag in sys.argv for flag in ONLY):
        anyio.run(change_to_routing)


if __name__ == "__main__":
    main()

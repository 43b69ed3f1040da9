"""Forwarding transports: requests per second, p99 latency and CPU per request on one core.

    python -m nox -s bench      (or: python benchmarks/bench_transport.py)

The backend is nginx (Debian package; one worker on its own core, answering a 2-byte body from
memory) when it is installed, so that the client is what is measured; otherwise the conformance
suite's Python backend (and the numbers say so). The client runs on the other core, on asyncio,
with 1, 20 and 100 requests in flight, each transport for the same time in the same run:
PooledTransport (the default: its asyncio Protocol engine here), the same with its anyio stream
engine (what it runs on trio), HttpcoreTransport, and a naive `httpx.AsyncClient` as the
baseline an application would otherwise write.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kroute.transport.base import ForwardRequest, Target, Transport
from kroute.transport.conformance import Backend
from kroute.transport.httpcore_transport import HttpcoreTransport
from kroute.transport.pooled import PooledTransport

SECONDS = 3.0
CONCURRENCY = (1, 20, 100)
_NGINX_BASE = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path {dir}; proxy_temp_path {dir}; fastcgi_temp_path {dir};
    uwsgi_temp_path {dir}; scgi_temp_path {dir};
"""
NGINX_CONF = (
    _NGINX_BASE
    + """
    server {{ listen 127.0.0.1:{port}; location / {{ return 200 "ok"; }} }}
}}
"""
)
PROXY_CONF = (
    _NGINX_BASE
    + """
    upstream backend {{ server 127.0.0.1:{backend}; keepalive 128; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""
)


def start_nginx(
    port: int,
    config: str = NGINX_CONF,
    *,
    core: int = 1,
    files: dict[str, bytes] | None = None,
    **extra: int,
) -> subprocess.Popen[bytes] | None:
    """nginx with `config` on `core`, from a fresh directory holding `files` (certificates)."""
    if shutil.which("nginx") is None:
        return None
    workdir = tempfile.mkdtemp()
    for name, data in (files or {}).items():
        (Path(workdir) / name).write_bytes(data)
    conf = Path(workdir) / "nginx.conf"
    conf.write_text(config.format(dir=workdir, port=port, **extra))
    command = ["nginx", "-c", str(conf), "-p", workdir]
    if shutil.which("taskset"):
        command = ["taskset", "-c", str(core), *command]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    return process


@contextlib.contextmanager
def running_nginx(port: int, config: str = NGINX_CONF, **options: Any) -> Iterator[None]:
    """start_nginx for the length of a block (nginx must be installed)."""
    process = start_nginx(port, config, **options)
    assert process is not None, "nginx is not installed"
    try:
        yield
    finally:
        process.terminate()
        process.wait()


Sender = Callable[[], Awaitable[None]]


async def measure(send: Sender, concurrency: int) -> tuple[float, float, float]:
    """(requests/s, p99 ms, CPU µs per request) for `concurrency` loops for SECONDS."""
    latencies: list[float] = []
    deadline = time.perf_counter() + SECONDS

    async def loop() -> None:
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            await send()
            latencies.append(time.perf_counter() - start)

    cpu = time.process_time()
    wall = time.perf_counter()
    async with anyio.create_task_group() as group:
        for _ in range(concurrency):
            group.start_soon(loop)
    wall = time.perf_counter() - wall
    cpu = time.process_time() - cpu
    p99 = statistics.quantiles(latencies, n=100)[98] * 1000 if len(latencies) > 100 else 0.0
    return len(latencies) / wall, p99, cpu / len(latencies) * 1e6


def transport_sender(transport: Transport, target: Target) -> Sender:
    request = ForwardRequest("GET", "/", [(b"Host", b"backend")])

    async def send() -> None:
        response = await transport.send(target, request)
        await response.read()

    return send


async def run(target: Target, label: str) -> dict[int, float]:
    """The table; returns the default transport's CPU µs per request by requests in flight."""
    print(f"Backend: {label}\n")
    default_cpu = {}
    print("| client | in flight | requests/s | p99 ms | CPU µs per request | vs httpx |")
    print("| --- | --- | --- | --- | --- | --- |")
    for concurrency in CONCURRENCY:
        results = {}
        pooled = PooledTransport()
        streams = PooledTransport(fast_path=False)
        core = HttpcoreTransport()
        url = f"http://{target.host}:{target.port}/"
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=100)) as client:

            async def naive(client: httpx.AsyncClient = client, url: str = url) -> None:
                (await client.get(url, headers={"Host": "backend"})).read()

            results["httpx.AsyncClient (baseline)"] = await measure(naive, concurrency)
        results["PooledTransport (default)"] = await measure(
            transport_sender(pooled, target), concurrency
        )
        results["PooledTransport, anyio streams engine (trio's)"] = await measure(
            transport_sender(streams, target), concurrency
        )
        results["HttpcoreTransport"] = await measure(transport_sender(core, target), concurrency)
        await pooled.aclose()
        await streams.aclose()
        await core.aclose()
        base = results["httpx.AsyncClient (baseline)"][0]
        default_cpu[concurrency] = results["PooledTransport (default)"][2]
        for name, (rps, p99, cpu) in results.items():
            ratio = rps / base
            print(
                f"| {name} | {concurrency} | {rps:,.0f} | {p99:.1f} | {cpu:,.0f} | {ratio:.1f}x |"
            )
    return default_cpu


def worker_cpu(master: int) -> float:
    """CPU seconds used by the worker processes of an nginx master (from /proc)."""
    total = 0.0
    for child in Path(f"/proc/{master}/task/{master}/children").read_text().split():
        fields = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


async def nginx_proxy_cpu(
    proxy: subprocess.Popen[bytes], port: int, ours: dict[int, float]
) -> None:
    """CPU per request of nginx as a reverse proxy (upstream keep-alive) under the same load,
    next to the default transport's client-side CPU from the table (`ours`)."""
    print(
        "\nnginx 1 worker as reverse proxy to the same backend (upstream keep-alive), CPU of "
        "its worker from /proc, next to PooledTransport's whole client process:\n"
    )
    print("| in flight | nginx requests/s | nginx µs per request | PooledTransport µs | ratio |")
    print("| --- | --- | --- | --- | --- |")
    for concurrency in (20, 100):
        transport = PooledTransport()
        send = transport_sender(transport, Target("127.0.0.1", port))
        before = worker_cpu(proxy.pid)
        rps, _, _ = await measure(send, concurrency)
        used = (worker_cpu(proxy.pid) - before) / (rps * SECONDS) * 1e6
        await transport.aclose()
        print(
            f"| {concurrency} | {rps:,.0f} | {used:,.0f} | {ours[concurrency]:,.0f} | "
            f"{ours[concurrency] / used:.1f}x |"
        )


def main() -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {0})
    port = 18080
    nginx = start_nginx(port)
    proxy = None
    try:
        if nginx is not None:
            ours = anyio.run(run, Target("127.0.0.1", port), "nginx 1 worker, on the other core")
            proxy = start_nginx(port + 1, PROXY_CONF, backend=port)
            if proxy is not None:
                anyio.run(nginx_proxy_cpu, proxy, port + 1, ours)
        else:
            anyio.run(python_backend)
    finally:
        for process in (nginx, proxy):
            if process is not None:
                process.terminate()
                process.wait()


async def python_backend() -> None:
    backend = Backend()
    async with anyio.create_task_group() as group:
        await group.start(backend.serve)
        await run(
            backend.target, "the conformance Python backend, same process (nginx not installed)"
        )
        group.cancel_scope.cancel()


if __name__ == "__main__":
    main()

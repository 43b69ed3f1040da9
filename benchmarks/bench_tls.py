"""TLS termination: handshakes per second and requests per second over keep-alive TLS on one
core, next to nginx terminating TLS with the same certificate in the same run.

    python -m nox -s bench      (or: python benchmarks/bench_tls.py)

Needs wrk and nginx (Debian packages); says so and skips without them. The certificate (RSA
2048 from trustme's test CA, for bench.local and 127.0.0.1) is served by nginx from files and by
the example gateway from a kubernetes.io/tls Secret in its manifests (`--tls-listen`,
`--default-certificate`: wrk sends no server name for an IP address). Proxies on core 0, one
process and one worker each; the backend (nginx) and wrk on core 1. Keep-alive: 20
connections. Handshakes: 20 connections with `Connection: close`, so every request is a new
TLS connection (TLS 1.3; neither side caches sessions by default, and wrk does not resume).
"""

from __future__ import annotations

import base64
import shutil
import sys
import tempfile
from pathlib import Path

import trustme

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_gateway import ADMIN, BACKEND, ROOT, manifests, on_core0, wait_port, wrk
from bench_transport import _NGINX_BASE, running_nginx

NGINX_TLS = 18190
GATEWAY_TLS = 18191
GATEWAY_PLAIN = 18192
TLS_PROXY_CONF = (
    _NGINX_BASE
    + """
    upstream backend {{ server 127.0.0.1:{backend}; keepalive 128; }}
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {dir}/tls.crt;
        ssl_certificate_key {dir}/tls.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""
)


def main() -> None:
    if not (shutil.which("wrk") and shutil.which("nginx") and shutil.which("taskset")):
        print("TLS: skipped (needs wrk, nginx and taskset: apt-get install wrk nginx)")
        return
    issued = trustme.CA().issue_cert("bench.local", "127.0.0.1")
    chain = b"".join(blob.bytes() for blob in issued.cert_chain_pems)
    key = issued.private_key_pem.bytes()
    workdir = Path(tempfile.mkdtemp())
    secret = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
              "metadata": {"name": "bench-tls", "namespace": "default"},
              "data": {"tls.crt": base64.b64encode(chain).decode(),
                       "tls.key": base64.b64encode(key).decode()}}  # fmt: skip
    manifests(workdir, BACKEND, secret)
    results: dict[str, tuple[float, float]] = {}
    with running_nginx(BACKEND):  # the backend, on core 1
        with running_nginx(NGINX_TLS, TLS_PROXY_CONF, core=0, backend=BACKEND,
                           files={"tls.crt": chain, "tls.key": key}):  # fmt: skip
            wait_port(NGINX_TLS)
            results["nginx (1 worker)"] = _measure(NGINX_TLS)
        command = [sys.executable, str(ROOT / "examples/gateway/gateway.py"), "--manifests",
                   str(workdir), "--listen", f"127.0.0.1:{GATEWAY_PLAIN}", "--admin",
                   f"127.0.0.1:{ADMIN}", "--tls-listen", f"127.0.0.1:{GATEWAY_TLS}",
                   "--default-certificate", "default/bench-tls"]  # fmt: skip
        for name, front in (("kroute example gateway, FastGateway", "fast"),
                            ("kroute example gateway, anyio front", "anyio")):  # fmt: skip
            with on_core0([*command, "--front", front], GATEWAY_TLS):
                results[name] = _measure(GATEWAY_TLS)
    base = results["nginx (1 worker)"]
    print("TLS termination on one core (wrk, 5 s per cell, same run):\n")
    print("| proxy | keep-alive requests/s | vs nginx | handshakes/s | vs nginx |")
    print("| --- | --- | --- | --- | --- |")
    for name, (rps, handshakes) in results.items():
        print(f"| {name} | {rps:,.0f} | {rps / base[0]:.2f}x | {handshakes:,.0f} "
              f"| {handshakes / base[1]:.2f}x |")  # fmt: skip


def _measure(port: int) -> tuple[float, float]:
    wrk(port, 20, scheme="https")  # warm-up
    keep_alive = abs(wrk(port, 20, scheme="https")[0])
    handshakes = abs(wrk(port, 20, scheme="https", headers=("Connection: close",))[0])
    return keep_alive, handshakes


if __name__ == "__main__":
    main()

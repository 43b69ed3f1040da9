"""What the TLS-ALPN-01 responder costs ordinary TLS clients: handshakes per second (a new TLS
connection per request) and requests per second over keep-alive TLS, on each front, with no
responder, with the responder and nothing pending, and with a challenge pending (for another
name: every client here is an ordinary one, whose ClientHello is read first). Ratios are to
"no responder" on the same front in the same run.

    python benchmarks/bench_alpn.py     (needs wrk and taskset; says so and skips without)

The gateway (one process on core 0, uvloop when installed) answers every request itself (404:
no routes), so the numbers are TLS and the front, not a backend; wrk on core 1, 20 connections,
5 s per cell; the certificate is ECDSA P-256 from trustme's test CA (its default: the
cheapest handshake, so what the responder adds shows most).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import shutil
import ssl
import sys
import time
from importlib.util import find_spec
from pathlib import Path

import anyio
import trustme

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_gateway import on_core0, wrk

import kroute
from kroute.tls.alpn.hello import parse_client_hello

PORT = 18195
MODES = ("no responder", "responder, nothing pending", "a challenge pending")


async def serve(front: str, mode: str) -> None:
    """The gateway of one cell (run in the child process)."""
    issued = trustme.CA().issue_cert("bench.local", "127.0.0.1")
    pem = {"tls.crt": issued.cert_chain_pems[0].bytes(), "tls.key": issued.private_key_pem.bytes()}
    secret = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
              "metadata": {"name": "bench", "namespace": "default"},
              "data": {k: base64.b64encode(v).decode() for k, v in pem.items()}}  # fmt: skip
    contexts = kroute.TlsContexts()
    contexts.update(kroute.certificates_from_objects([secret], default_secret=("default", "bench")))
    challenges = None if mode == MODES[0] else contexts.challenges
    if mode == MODES[2]:
        contexts.challenges.add("elsewhere.example.test", "token.thumbprint")
    router = kroute.Router([kroute.MemorySource()])
    async with anyio.create_task_group() as group:
        if front == "fast":
            gateway = kroute.FastGateway(router, scheme="https")
            serving = functools.partial(gateway.serve, tls=contexts.server, challenges=challenges)
            await group.start(serving, "127.0.0.1", PORT)
            return
        tcp = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=PORT)
        listener = kroute.HandshakeListener(tcp, contexts.server, standard_compatible=False,
                                            challenges=challenges)  # fmt: skip
        server = kroute.HttpServer(kroute.GatewayHandler(router), scheme="https")
        await group.start(server.serve, listener)


def parse_cost() -> None:
    """CPU time of reading a ClientHello next to that of the TLS handshake it precedes (the
    server's side, ECDSA P-256, TLS 1.3), in this process: CPU time, so less sensitive to a busy
    machine than the wrk cells."""
    issued = trustme.CA().issue_cert("bench.local")
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    issued.configure_cert(server)
    client = ssl.create_default_context()
    client.check_hostname, client.verify_mode = False, ssl.CERT_NONE
    client.set_alpn_protocols(["h2", "http/1.1"])

    def handshake() -> tuple[float, bytes]:
        """(the server side's CPU seconds, the ClientHello)."""
        c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
        tls_c = client.wrap_bio(c_in, c_out, server_hostname="bench.local")
        tls_s = server.wrap_bio(s_in, s_out, server_side=True)
        spent, hello = 0.0, b""
        for _ in range(4):
            with contextlib.suppress(ssl.SSLWantReadError):
                tls_c.do_handshake()
            data = c_out.read()
            hello = hello or data
            s_in.write(data)
            start = time.process_time()
            with contextlib.suppress(ssl.SSLWantReadError):
                tls_s.do_handshake()
            spent += time.process_time() - start
            c_in.write(s_out.read())
        return spent, hello

    runs = 200
    server_cpu = sum(handshake()[0] for _ in range(runs)) / runs
    hello = handshake()[1]
    start = time.process_time()
    for _ in range(10_000):
        parse_client_hello(hello)
    parse = (time.process_time() - start) / 10_000
    print(
        f"ClientHello of {len(hello)} bytes read in {parse * 1e6:.1f} us CPU; the server's "
        f"handshake {server_cpu * 1e6:,.0f} us CPU: {parse / server_cpu:.1%} of it\n"
    )


def main() -> None:
    parse_cost()
    if not (shutil.which("wrk") and shutil.which("taskset")):
        print("TLS-ALPN-01: skipped (needs wrk and taskset)")
        return
    results: dict[tuple[str, str], tuple[float, float]] = {}
    for front in ("fast", "anyio"):
        for mode in MODES:
            command = [sys.executable, str(Path(__file__).resolve()), "--serve", front, mode]
            with on_core0(command, PORT):
                wrk(PORT, 20, scheme="https")  # warm-up
                keep_alive = abs(wrk(PORT, 20, scheme="https")[0])  # (404s: abs)
                handshakes = abs(wrk(PORT, 20, scheme="https", headers=("Connection: close",))[0])
            results[front, mode] = (keep_alive, handshakes)
    print("TLS-ALPN-01 responder, ordinary TLS clients (wrk, 5 s per cell, same run):\n")
    print("| front | responder | keep-alive requests/s | ratio | handshakes/s | ratio |")
    print("| --- | --- | --- | --- | --- | --- |")
    for (front, mode), (rps, handshakes) in results.items():
        base = results[front, MODES[0]]
        print(f"| {front} | {mode} | {rps:,.0f} | {rps / base[0]:.2f}x | {handshakes:,.0f} "
              f"| {handshakes / base[1]:.2f}x |")  # fmt: skip


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        anyio.run(serve, sys.argv[2], sys.argv[3],
                  backend_options={"use_uvloop": find_spec("uvloop") is not None})  # fmt: skip
    else:
        main()

"""The README's main job: the seed's scenario on one machine, no cluster.

Starts four demo backends (the pods of test-www and test-api, on 127.0.0.11, .12, .21 and .22
port 8081), then the example gateway (gateway.py) on the manifests in ./manifests (the seed's
Ingresses, and the same Services through a Gateway API HTTPRoute and a Traefik IngressRoute),
sends a few requests through it and says which route took each, shows a pod leaving rotation
when its health check fails and coming back, and keeps serving until Ctrl-C (or exits after
that tour with --once).

    python examples/gateway/demo.py [--listen HOST:PORT] [--admin HOST:PORT] [--once]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

import anyio

import kroute

sys.path.insert(0, str(Path(__file__).parent))
import gateway

PODS = {"test-www": ["127.0.0.11", "127.0.0.12"], "test-api": ["127.0.0.21", "127.0.0.22"]}
POD_PORT = 8081


class DemoPod:
    """A pod's web server: answers who it is; /healthz fails after POST /fail until /recover."""

    def __init__(self, service: str, address: str) -> None:
        self.service, self.address, self.failing = service, address, False

    async def __call__(self, request: kroute.IncomingRequest) -> kroute.OutgoingResponse:
        path = request.target.split("?", 1)[0]
        if path == "/healthz":
            status = 503 if self.failing else 200
            return kroute.OutgoingResponse(status, [], b"failing\n" if self.failing else b"ok\n")
        if request.method == "POST" and path in ("/fail", "/recover"):
            self.failing = path == "/fail"
            return kroute.OutgoingResponse(200, [], f"{self.address} {path[1:]}ed\n".encode())
        forwarded = {n.lower(): v for n, v in request.headers}.get(b"x-forwarded-for", b"").decode()
        answer = {"service": self.service, "pod": self.address, "path": request.target,
                  "x-forwarded-for": forwarded}  # fmt: skip
        return kroute.OutgoingResponse(200, [(b"Content-Type", b"application/json")],
                                       json.dumps(answer).encode() + b"\n")  # fmt: skip


async def fetch(port: int, host: str, path: str, method: str = "GET") -> tuple[int, bytes]:
    client = kroute.PooledTransport()
    try:
        request = kroute.ForwardRequest(method, path, [(b"Host", host.encode())])
        response = await client.send(kroute.Target("127.0.0.1", port), request)
        return response.status, await response.read()
    finally:
        await client.aclose()


async def rotation(admin_port: int, service: str) -> list[str]:
    """The Service's endpoints in rotation, in any of its pools (one per port the routes name:
    the Ingress says port "http", the HTTPRoute port 80)."""
    _, body = await fetch(admin_port, "localhost", "/api/services")
    pools = json.loads(body)["services"]
    return sorted({e["endpoint"] for p in pools if p["service"].startswith(f"default/{service}:")
                   for e in p["endpoints"] if e["state"] == "up"})  # fmt: skip


#: The tour's requests: the seed's Ingresses, then an HTTPRoute and an IngressRoute.
TOUR = [("test-www.localhost", "/"), ("test-www.localhost", "/"),
        ("test-api.localhost", "/api/users"), ("test-api.localhost", "/"),
        ("httproute.localhost", "/api/orders"), ("httproute.localhost", "/"),
        ("ingressroute.localhost", "/api/users"), ("ingressroute.localhost", "/"),
        ("nobody.localhost", "/")]  # fmt: skip


async def tour(router: kroute.Router, port: int, admin_port: int) -> None:
    """A few requests through the gateway, each with the route that took it (asked of the
    Router's table, which matches without I/O or picking an endpoint), and the health
    scenario."""
    say = print
    for host, path in TOUR:
        status, body = await fetch(port, host, path)
        say(f"  GET http://{host}{path} -> {status} {body.decode().strip()}")
        route = router.table.match(kroute.RequestHead.build("GET", host, path))
        say(f"      routed by {route.name if route is not None else 'no route'}")
    pod = PODS["test-www"][1]
    say(f"\nHealth: {pod}'s /healthz starts failing ...")
    await _post(pod, "/fail")
    while any(pod in e for e in await rotation(admin_port, "test-www")):
        await anyio.sleep(0.2)
    say(f"  {pod} left rotation; in rotation now: {await rotation(admin_port, 'test-www')}")
    await _post(pod, "/recover")
    while not any(pod in e for e in await rotation(admin_port, "test-www")):
        await anyio.sleep(0.2)
    say(f"  {pod} recovered and is back: {await rotation(admin_port, 'test-www')}")


async def _post(pod: str, path: str) -> None:
    client = kroute.PooledTransport()
    try:
        request = kroute.ForwardRequest("POST", path, [(b"Host", pod.encode())])
        response = await client.send(kroute.Target(pod, POD_PORT), request)
        await response.read()
    finally:
        await client.aclose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", default="127.0.0.1:8080")
    parser.add_argument("--admin", default="127.0.0.1:8580")
    parser.add_argument("--once", action="store_true", help="exit after the tour")
    options = parser.parse_args()
    manifests = str(Path(__file__).parent / "manifests")
    args = gateway.parse_args(["--manifests", manifests, "--listen", options.listen,
                               "--admin", options.admin,  # the Gateway listener's port:
                               "--advertise", "web=8080"])  # fmt: skip
    async with anyio.create_task_group() as group:
        for service, addresses in PODS.items():
            for address in addresses:
                listener = await anyio.create_tcp_listener(local_host=address, local_port=POD_PORT)
                await group.start(kroute.HttpServer(DemoPod(service, address)).serve, listener)
        stop = anyio.Event()
        router, port, admin_port, *_ = await group.start(gateway.serve, args, stop)
        with anyio.fail_after(30):
            while not router.ready:  # the manifests are read; the routes are up
                await anyio.sleep(0.05)
        host = args.listen[0]
        print(f"kroute demo gateway on http://{host}:{port}/ (manifests: {manifests})\n")
        await tour(router, port, admin_port)
        print(f"\nTry it:\n  curl http://test-www.localhost:{port}/\n"
              f"  curl -H 'Host: test-api.localhost' http://{host}:{port}/api/users\n"
              f"  curl http://httproute.localhost:{port}/api/orders      (an HTTPRoute)\n"
              f"  curl http://ingressroute.localhost:{port}/             (an IngressRoute)\n"
              f"  curl -X POST http://{PODS['test-www'][1]}:{POD_PORT}/fail   "
              f"(then /recover): a pod leaves rotation and comes back\n"
              f"Dashboard: http://{args.admin[0]}:{admin_port}/   "
              f"(also /ready, /api/routes, /api/services, /metrics)\n"
              f"Edit {manifests}/*.yaml: changes apply within a second. Ctrl-C stops.",
              flush=True)  # fmt: skip
        if not options.once:
            await anyio.sleep_forever()
        stop.set()
        group.cancel_scope.cancel()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        anyio.run(main)

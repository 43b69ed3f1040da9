"""The application's own steps in Python, named from an HTTPRoute (no WASM, Lua or Go plugin).

`filters` registers two functions: `tenant`, a plain function that edits the request (it runs
in the gateway's loop, no I/O), and `require-token`, an `async def` that may wait (here it only
checks a header; a real one would call an auth service). manifests/routes.yaml names them with
ExtensionRef filters (group kroute.dev, kind Filter). A route naming a filter that is not
registered answers 500 and says why in explain and the admin API.

    python examples/filters/own_filters.py          # serve on 127.0.0.1:8080 with a demo backend
    python examples/filters/own_filters.py --once   # send three requests through it and print them
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import anyio
import anyio.abc

import kroute
from kroute import Answer, Filters, UpstreamRequest

MANIFESTS = Path(__file__).resolve().parent / "manifests"
filters = Filters()


@filters.register("tenant")
def tenant(request: UpstreamRequest) -> Answer | None:
    """The tenant is the token's prefix, passed on as a header the backend trusts."""
    token = (request.get(b"authorization") or b"").removeprefix(b"Bearer ")
    request.set(b"X-Tenant", token.partition(b".")[0])
    return None


@filters.register("require-token")
async def require_token(request: UpstreamRequest) -> Answer | None:
    """401 without a bearer token (a real check would await an auth service here)."""
    await anyio.sleep(0)
    if not (request.get(b"authorization") or b"").startswith(b"Bearer "):
        return Answer(401, "no bearer token", headers=((b"WWW-Authenticate", b"Bearer"),))
    return None


async def echo(request: kroute.IncomingRequest) -> kroute.OutgoingResponse:
    """The demo backend: answers with what it received."""
    headers = {n.decode().lower(): v.decode() for n, v in request.headers}
    body = json.dumps({"target": request.target, "tenant": headers.get("x-tenant"),
                       "gateway": headers.get("x-gateway")})  # fmt: skip
    return kroute.OutgoingResponse(200, [(b"Content-Type", b"application/json")], body.encode())


def cluster(port: int) -> list[dict[str, object]]:
    """The Service `api` with one endpoint: the demo backend on 127.0.0.1:`port`."""
    return [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "api", "namespace": "default"},
         "spec": {"ports": [{"port": 80}]}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
         "metadata": {"name": "api-1", "namespace": "default",
                      "labels": {"kubernetes.io/service-name": "api"}},
         "ports": [{"port": port}], "endpoints": [{"addresses": ["127.0.0.1"]}]},
    ]  # fmt: skip


async def listen(group: anyio.abc.TaskGroup, server: kroute.HttpServer, port: int) -> int:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=port)
    await group.start(server.serve, listener)
    return int(listener.extra(anyio.abc.SocketAttribute.local_port))


async def main(once: bool, port: int) -> None:
    async with anyio.create_task_group() as group:
        backend = await listen(group, kroute.HttpServer(echo), 0)
        routing = [dict(m.obj) for m in kroute.load_paths([MANIFESTS])]
        source = kroute.MemorySource(objects=[*routing, *cluster(backend)])
        router = kroute.Router([source], transport=kroute.PooledTransport(), filters=filters)
        for problem in router.refused:
            print("fails closed:", problem)
        gateway = kroute.HttpServer(kroute.GatewayHandler(router))
        port = await listen(group, gateway, 0 if once else port)
        if not once:
            url = f"http://127.0.0.1:{port}/api/orders"
            print(f"serving on {url} (try: curl -H 'Host: api.local' "
                  f"-H 'Authorization: Bearer acme.123' {url})")  # fmt: skip
            await anyio.sleep_forever()
        client = kroute.PooledTransport()
        for token in (None, b"Bearer acme.123"):
            headers = [(b"Host", b"api.local")] + ([(b"Authorization", token)] if token else [])
            request = kroute.ForwardRequest("GET", "/api/orders?page=2", headers)
            response = await client.send(kroute.Target("127.0.0.1", port), request)
            print(response.status, (await response.read()).decode().strip())
        await client.aclose()
        await router.transport.aclose()  # type: ignore[union-attr]
        group.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--once", action="store_true", help="send requests, print, exit")
    parser.add_argument("--port", type=int, default=8080)
    arguments = parser.parse_args()
    anyio.run(main, arguments.once, arguments.port)

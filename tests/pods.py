"""Pods for gateway tests: keep-alive HTTP servers (kroute's own front) on distinct loopback
addresses sharing one port, as the pods of one EndpointSlice do; each can fail its health check,
be stopped gracefully (drain) or be killed (connections cut at once).

A pod answers `/healthz` with 200 (503 when `healthy` is false); `/slow?s=0.2` after a delay;
anything else with JSON naming the pod, the request and the body length it read.
"""

from __future__ import annotations

import functools
import json
import ssl
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import anyio
import anyio.abc

from kroute.gateway.fast import FastGateway
from kroute.gateway.handler import GatewayHandler
from kroute.gateway.router import Router
from kroute.gateway.server import HttpServer, IncomingRequest, OutgoingResponse
from kroute.tls.alpn.challenges import AlpnChallenges
from kroute.tls.listener import HandshakeListener
from kroute.transport.base import ForwardRequest, Target, Timeouts
from kroute.transport.http1 import ServerLimits
from kroute.transport.pooled import PooledTransport
from kroute.transport.proxy import TrustedProxies

T = TypeVar("T")


class Pod:
    def __init__(self, name: str, address: str) -> None:
        self.name = name
        self.address = address
        self.healthy = True
        self.hits = 0
        self.server = HttpServer(self.handle)
        self._scope: anyio.CancelScope | None = None

    async def handle(self, request: IncomingRequest) -> OutgoingResponse:
        path, _, query = request.target.partition("?")
        if path == "/healthz":
            return OutgoingResponse(200 if self.healthy else 503, [], b"ok")
        size = 0
        async for chunk in request.body:
            size += len(chunk)
        self.hits += 1
        if path == "/slow":
            await anyio.sleep(float(query.partition("=")[2] or 0.2))
        headers = {n.decode("latin-1").lower(): v.decode("latin-1") for n, v in request.headers}
        body = {"pod": self.name, "target": request.target, "size": size, "headers": headers}
        return OutgoingResponse(200, [(b"Content-Type", b"application/json")],
                                json.dumps(body).encode())  # fmt: skip

    async def start(self, group: anyio.abc.TaskGroup, port: int = 0) -> int:
        """Listen on `address:port` (0: any free port); the port."""
        listener = await anyio.create_tcp_listener(local_host=self.address, local_port=port)
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        self._scope = anyio.CancelScope()
        await group.start(self._serve, listener)
        return port

    async def _serve(
        self,
        listener: anyio.abc.Listener[anyio.abc.SocketStream],
        *,
        task_status: anyio.abc.TaskStatus[None],
    ) -> None:
        assert self._scope is not None
        with self._scope:
            await self.server.serve(listener, task_status=task_status)

    async def stop(self, grace: float = 5.0) -> None:
        """Graceful: stop accepting, finish requests in flight, then go."""
        await self.server.shutdown(grace)

    def kill(self) -> None:
        """Abrupt: the listener and every connection closed at once."""
        assert self._scope is not None
        self._scope.cancel()


async def start_pods(
    group: anyio.abc.TaskGroup, name: str, addresses: list[str], port: int = 0
) -> tuple[list[Pod], int]:
    """Pods of one Service on `addresses`, all on one port (the first free one when 0)."""
    pods = [Pod(f"{name}-{i}", address) for i, address in enumerate(addresses)]
    for pod in pods:
        port = await pod.start(group, port)
    return pods, port


def service(name: str, *, namespace: str = "default", **annotations: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
            "spec": {"ports": [{"name": "http", "port": 80}]}}  # fmt: skip


def endpoint_slice(
    name: str, port: int, endpoints: list[tuple[str, str]], *, slice_name: str | None = None
) -> dict[str, Any]:
    """A slice of Service `name`: endpoints are (address, state) with state "ready",
    "terminating" (serving, not ready) or "gone" (not serving)."""
    conditions = {"ready": {"ready": True},
                  "terminating": {"ready": False, "serving": True, "terminating": True},
                  "gone": {"ready": False, "serving": False, "terminating": True}}  # fmt: skip
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
        "metadata": {"name": slice_name or f"{name}-1", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": name}},
        "ports": [{"name": "http", "port": port}],
        "endpoints": [{"addresses": [a], "conditions": conditions[s]} for a, s in endpoints],
    }  # fmt: skip


async def until(read: Callable[[], T], ok: Callable[[T], bool], timeout: float = 30.0) -> T:
    """`read()` once `ok` says yes (the last value in the failure otherwise)."""
    value = read()
    with anyio.fail_after(timeout):
        while not ok(value):
            await anyio.sleep(0.05)
            value = read()
    return value


class Client:
    """An HTTP client for tests (kroute's PooledTransport, keep-alive) aimed at one port."""

    def __init__(self, port: int, address: str = "127.0.0.1") -> None:
        self.target = Target(address, port)
        self.transport = PooledTransport()

    async def request(
        self, host: str, path: str = "/", method: str = "GET", body: bytes | None = None
    ) -> tuple[int, bytes]:
        """(status, body); a streamed (not replayable) body when `body` is given."""
        request = ForwardRequest(method, path, [(b"Host", host.encode())])
        if body is not None:
            request.body, request.content_length = _once(body), len(body)
        response = await self.transport.send(self.target, request)
        return response.status, await response.read()

    async def json(self, host: str, path: str = "/") -> Any:
        status, body = await self.request(host, path)
        assert status == 200, (status, body)
        return json.loads(body)

    async def aclose(self) -> None:
        await self.transport.aclose()


async def _once(body: bytes) -> AsyncIterator[bytes]:
    yield body


async def start_front(
    group: anyio.abc.TaskGroup,
    router: Router,
    front: str,
    *,
    limits: ServerLimits = ServerLimits(),
    timeouts: Timeouts = Timeouts(),
    tls: ssl.SSLContext | None = None,
    challenges: AlpnChallenges | None = None,
    hsts: str | None = None,
    entry_point: str | None = None,
    trusted: TrustedProxies = TrustedProxies(),
    port: int = 0,
) -> int:
    """Serve `router` on 127.0.0.1:`port` (0: a free one) with the front named `front` ("anyio"
    or "fast"); the port.
    `entry_point` names the Router's entry point served (None: the front's default); `trusted`
    are the proxies whose X-Forwarded-* it passes on.

    The anyio front forwards through the Router's transport (a PooledTransport with
    `timeouts` is set when it has none); FastGateway forwards itself, with `timeouts`. With
    `tls`, HTTPS (kroute's HandshakeListener for the anyio front), answering the TLS-ALPN-01
    `challenges` given.
    """
    scheme = "https" if tls is not None else "http"
    if front == "fast":
        gateway = FastGateway(router, limits=limits, timeouts=timeouts, scheme=scheme, hsts=hsts,
                              entry_point=entry_point, trusted=trusted)  # fmt: skip
        serve = functools.partial(gateway.serve, tls=tls, challenges=challenges)
        return int(await group.start(serve, "127.0.0.1", port))
    if router.transport is None:
        router.transport = PooledTransport(timeouts=timeouts)
    tcp = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=port)
    port = int(tcp.extra(anyio.abc.SocketAttribute.local_port))
    listener: anyio.abc.Listener[Any] = tcp
    if tls is not None:
        listener = HandshakeListener(tcp, tls, standard_compatible=False, handshake_timeout=5,
                                     challenges=challenges)  # fmt: skip
    handler = GatewayHandler(router, hsts=hsts, entry_point=entry_point, trusted=trusted)
    server = HttpServer(handler, limits=limits, scheme=scheme)
    await group.start(server.serve, listener)
    return port

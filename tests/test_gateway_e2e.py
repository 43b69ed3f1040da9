"""End to end on loopback: client -> HttpServer -> Router -> PooledTransport -> real backends."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.abc
import pytest

from kroute.gateway.handler import GatewayHandler
from kroute.gateway.router import Router
from kroute.gateway.server import HttpServer
from kroute.transport.base import ForwardRequest, Target
from kroute.transport.conformance import Backend
from kroute.transport.pooled import PooledTransport
from kroute.watch.sources import MemorySource
from tests.builders import ingress

pytestmark = pytest.mark.anyio


def service(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
            "spec": {"ports": [{"name": "http", "port": 80}]}}  # fmt: skip


def endpoint_slice(name: str, port: int, *addresses: str) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
        "metadata": {"name": f"{name}-1", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": name}},
        "ports": [{"name": "http", "port": port}],
        "endpoints": [{"addresses": [a]} for a in addresses],
    }  # fmt: skip


@pytest.fixture
async def gateway() -> AsyncIterator[tuple[int, MemorySource, list[Backend]]]:
    backends = [Backend("127.0.0.2"), Backend("127.0.0.3")]
    async with anyio.create_task_group() as group:
        for backend in backends:
            await group.start(backend.serve)
        source = MemorySource(objects=[
            ingress("www", [("test-www.local", [("/", "Prefix", "test-www")])]),
            ingress("api", [("test-api.local", [("/", "Prefix", "test-api")])]),
            service("test-www"), service("test-api"),
            endpoint_slice("test-www", backends[0].port, backends[0].address),
        ])  # fmt: skip
        transport = PooledTransport()
        router = Router([source], transport=transport)
        server = HttpServer(GatewayHandler(router))
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        await group.start(server.serve, listener)
        yield port, source, backends
        await transport.aclose()
        group.cancel_scope.cancel()


async def call(
    port: int, host: str, path: str = "/echo", **kw: Any
) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    client = PooledTransport()
    try:
        response = await client.send(Target("127.0.0.1", port),
                                      ForwardRequest(kw.pop("method", "GET"), path, [(b"Host", host.encode())], **kw))  # fmt: skip
        return response.status, await response.read(), response.headers
    finally:
        await client.aclose()


async def test_requests_flow_with_forwarding_headers(
    gateway: tuple[int, MemorySource, list[Backend]],
) -> None:
    port, _, backends = gateway
    status, body, _ = await call(port, "test-www.local", "/echo?q=1", method="POST", body=b"hello")
    assert status == 200
    echo = json.loads(body)
    headers = {k.lower(): v for k, v in echo["headers"]}
    assert echo["target"] == "/echo?q=1"
    assert echo["length"] == 5
    assert headers["host"] == "test-www.local"
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-host"] == "test-www.local"
    assert headers["x-forwarded-proto"] == "http"
    assert backends[0].hits["/echo"] == 1


async def test_statuses_404_503_and_changes_at_once(
    gateway: tuple[int, MemorySource, list[Backend]],
) -> None:
    port, source, backends = gateway
    assert (await call(port, "nobody.local"))[0] == 404
    status, body, _ = await call(port, "test-api.local")
    assert status == 503
    assert b"no endpoint" in body or b"no usable endpoint" in body
    source.apply(endpoint_slice("test-api", backends[1].port, backends[1].address))
    assert (await call(port, "test-api.local", "/fixed?size=3"))[1] == b"xxx"


async def test_streamed_bodies_and_websocket_through_the_gateway(
    gateway: tuple[int, MemorySource, list[Backend]],
) -> None:
    port, _, _ = gateway
    status, body, headers = await call(port, "test-www.local", "/chunked?n=5&size=1000")
    assert status == 200
    assert body == b"y" * 5000
    assert (b"Transfer-Encoding", b"chunked") in headers
    client = PooledTransport()
    response = await client.send(Target("127.0.0.1", port),
                                 ForwardRequest("GET", "/ws", [(b"Host", b"test-www.local")],
                                                upgrade=b"websocket"))  # fmt: skip
    assert response.status == 101
    assert response.upgraded is not None
    async with response.upgraded as stream:
        await stream.send(b"hello through kroute")
        assert await stream.receive() == b"hello through kroute"
    await client.aclose()

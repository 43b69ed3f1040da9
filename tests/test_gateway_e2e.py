"""End to end on loopback: client -> front -> Router -> endpoints (real backends), for both
fronts: HttpServer + GatewayHandler + PooledTransport, and FastGateway."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.abc
import pytest

from kroute.gateway.router import Router
from kroute.pool.balance import HashOn, RingHash
from kroute.transport.base import ForwardRequest, Target, Timeouts
from kroute.transport.conformance import Backend
from kroute.transport.pooled import PooledTransport
from kroute.watch.sources import MemorySource
from tests.builders import ingress, ingressroute
from tests.pods import start_front

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
async def gateway(front: str) -> AsyncIterator[tuple[int, MemorySource, list[Backend]]]:
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
        router = Router([source])
        timeouts = Timeouts(connect=1.0, read=0.5)
        port = await start_front(group, router, front, timeouts=timeouts)
        yield port, source, backends
        if router.transport is not None:
            await router.transport.aclose()
        group.cancel_scope.cancel()


async def call(
    port: int, host: str, path: str = "/echo", **kw: Any
) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    client = PooledTransport()
    headers = [(b"Host", host.encode()), *kw.pop("headers_extra", [])]
    try:
        response = await client.send(Target("127.0.0.1", port),
                                      ForwardRequest(kw.pop("method", "GET"), path, headers, **kw))  # fmt: skip
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


async def test_traefik_matching_rules_hold_on_every_front(
    gateway: tuple[int, MemorySource, list[Backend]],
) -> None:
    # Traefik v3 (pkg/muxer/http): request methods are case-sensitive, and unreserved
    # percent-encodings are decoded before matching; the target is forwarded as received.
    port, source, backends = gateway
    rule = "Host(`parity.local`) && Method(`GET`) && Path(`/echo`)"
    source.apply(ingressroute("parity", [{"match": rule,
                                          "services": [{"name": "test-www", "port": 80}]}]))  # fmt: skip
    assert (await call(port, "parity.local", method="GET"))[0] == 200
    # `get` is never `GET`: the fronts' parser (llhttp) refuses it before routing, with 400.
    assert (await call(port, "parity.local", method="get"))[0] == 400
    await call(port, "parity.local", "/%65cho")
    assert backends[0].hits.get("/%65cho") == 1
    # A `%` that starts no escape: Go's url.ParseRequestURI refuses the target, Traefik 400s.
    for target in ("/echo%zz", "/%", "/%4", "/a%2?q=1"):
        status, body, _ = await call(port, "parity.local", target)
        assert (status, b"invalid percent-escape" in body) == (400, True), target
    # An absolute-form target names the host; the Host header is ignored (RFC 9112 section
    # 3.2.2, Go's net/http). It goes on in origin form with a Host made from the target.
    status, body, _ = await call(port, "nobody.local", "http://Parity.Local:80/echo?q=1")
    assert status == 200
    echo = json.loads(body)
    headers = {k.lower(): v for k, v in echo["headers"]}
    assert (echo["target"], headers["host"]) == ("/echo?q=1", "Parity.Local:80")
    assert headers["x-forwarded-host"] == "Parity.Local:80"
    assert (await call(port, "parity.local", "http://nobody.local/echo"))[0] == 404


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


async def test_large_bodies_stream_both_ways(
    gateway: tuple[int, MemorySource, list[Backend]],
) -> None:
    port, _, _ = gateway
    payload = b"z" * 3_000_000
    status, body, _ = await call(port, "test-www.local", "/echo", method="PUT", body=payload)
    assert status == 200
    assert json.loads(body)["length"] == len(payload)

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(50):
            yield b"c" * 10_000

    status, body, _ = await call(port, "test-www.local", "/echo", method="POST", body=chunks())
    assert json.loads(body)["length"] == 500_000
    status, body, headers = await call(port, "test-www.local", "/fixed?size=2000000")
    assert len(body) == 2_000_000
    assert (b"Content-Length", b"2000000") in headers


async def test_upstream_failures_become_502_and_504(
    gateway: tuple[int, MemorySource, list[Backend]],
) -> None:
    port, _, backends = gateway
    for path in ("/bad-status", "/cl-te", "/drop-request"):
        status, body, _ = await call(port, "test-www.local", path)
        assert status == 502, (path, body)
        assert b"502 Bad Gateway" in body
    status, body, _ = await call(port, "test-www.local", "/slow-head")
    assert status == 504
    assert b"timeout" in body
    # The endpoint is still used for what it answers well.
    assert (await call(port, "test-www.local", "/fixed?size=3"))[1] == b"xxx"
    assert backends[0].hits["/fixed"] == 1


async def test_pipelined_requests_are_answered_in_order(
    gateway: tuple[int, MemorySource, list[Backend]],
) -> None:
    port, _, _ = gateway
    request = b"GET /fixed?size=%d HTTP/1.1\r\nHost: test-www.local\r\n\r\n"
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(request % 1 + request % 2 + request % 3)
        received = b""
        with anyio.fail_after(5):
            while received.count(b"HTTP/1.1 200") < 3 or not received.endswith(b"xxx"):
                received += await stream.receive()
    bodies = [part.rsplit(b"\r\n\r\n", 1)[1] for part in received.split(b"HTTP/1.1 ")[1:]]
    assert bodies == [b"x", b"xx", b"xxx"]


async def test_each_request_on_a_connection_gets_its_own_forwarding_headers(
    gateway: tuple[int, MemorySource, list[Backend]],
) -> None:
    """FastGateway renders this hop's X-Forwarded-* once per connection and Host: a keep-alive
    connection that changes Host must not carry the previous Host along; headers a client
    spoofs or names in Connection never reach the backend."""
    port, source, backends = gateway
    source.apply(endpoint_slice("test-api", backends[1].port, backends[1].address))
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:  # one connection
        buffer = b""
        for host in ("test-www.local", "test-api.local", "test-api.local", "test-www.local"):
            await stream.send(
                b"GET /echo HTTP/1.1\r\nHost: %b\r\nX-Forwarded-Host: evil.example\r\n"
                b"Connection: X-Trace\r\nX-Trace: secret\r\nAccept: */*\r\n\r\n" % host.encode()
            )
            while b"\r\n\r\n" not in buffer:
                buffer += await stream.receive()
            head, _, buffer = buffer.partition(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            while len(buffer) < length:
                buffer += await stream.receive()
            body, buffer = buffer[:length], buffer[length:]
            assert head.startswith(b"HTTP/1.1 200")
            headers = {k.lower(): v for k, v in json.loads(body)["headers"]}
            assert headers["host"] == host
            assert headers["x-forwarded-host"] == host
            assert headers["accept"] == "*/*"
            assert "x-trace" not in headers


async def test_head_requests_keep_both_connections_usable(
    gateway: tuple[int, MemorySource, list[Backend]],
) -> None:
    # A HEAD response announces a body it does not carry (RFC 9110 section 9.3.2): neither the
    # gateway's connection to the endpoint nor the client's may wait for it or read the next
    # response as it.
    port, _, backends = gateway
    client = PooledTransport(timeouts=Timeouts(read=2.0))
    target = Target("127.0.0.1", port)
    for _ in range(3):
        head = await client.send(target, ForwardRequest("HEAD", "/fixed?size=5",
                                                        [(b"Host", b"test-www.local")]))  # fmt: skip
        assert head.status == 200
        assert (b"Content-Length", b"5") in head.headers
        assert await head.read() == b""
        get = await client.send(target, ForwardRequest("GET", "/fixed?size=3",
                                                       [(b"Host", b"test-www.local")]))  # fmt: skip
        assert await get.read() == b"xxx"
    assert backends[0].connections == 1
    await client.aclose()


@contextlib.asynccontextmanager
async def two_endpoints(front: str, **options: Any) -> AsyncIterator[tuple[int, list[Backend]]]:
    """One Service with two endpoints behind www.local, on a Router made with `options`."""
    backends = [Backend("127.0.0.2")]
    async with anyio.create_task_group() as group:
        await group.start(backends[0].serve)
        backends.append(Backend("127.0.0.3", backends[0].port))  # one port, as pods share it
        await group.start(backends[1].serve)
        slice_ = endpoint_slice("www", backends[0].port, "127.0.0.2", "127.0.0.3")
        source = MemorySource(objects=[
            ingress("www", [("www.local", [("/", "Prefix", "www")])]), service("www"), slice_,
        ])  # fmt: skip
        router = Router([source], **options)
        port = await start_front(group, router, front, timeouts=Timeouts(connect=1.0, read=2.0))
        yield port, backends
        if router.transport is not None:
            await router.transport.aclose()
        group.cancel_scope.cancel()


def answered_by(backends: list[Backend]) -> list[int]:
    return [backend.hits.get("/echo", 0) for backend in backends]


async def test_ring_hash_sends_each_key_to_one_endpoint(front: str) -> None:
    seen: dict[str, set[int]] = {}
    async with two_endpoints(front, balancer=RingHash, hash_on=HashOn(header="X-User")) as (
        port, backends,
    ):  # fmt: skip
        for user in [f"user-{n}" for n in range(12)] * 3:
            before = answered_by(backends)
            await call(port, "www.local", headers_extra=[(b"X-User", user.encode())])
            after = answered_by(backends)
            seen.setdefault(user, set()).add(next(i for i in range(2) if after[i] > before[i]))
    assert all(len(endpoints) == 1 for endpoints in seen.values())  # a key sticks to one
    assert {next(iter(e)) for e in seen.values()} == {0, 1}  # and keys spread over both


async def test_sticky_cookie_brings_the_client_back(front: str) -> None:
    async with two_endpoints(front, sticky_cookie="kroute_affinity") as (port, backends):
        status, _, headers = await call(port, "www.local")
        assert status == 200
        cookies = [v for n, v in headers if n.lower() == b"set-cookie"]
        assert len(cookies) == 1
        assert cookies[0].startswith(b"kroute_affinity=")
        assert b"127.0.0" not in cookies[0]  # a hash, not the address
        first = answered_by(backends).index(1)
        cookie = cookies[0].split(b";")[0]
        for _ in range(6):
            _, _, again = await call(port, "www.local", headers_extra=[(b"Cookie", cookie)])
            assert not [v for n, v in again if n.lower() == b"set-cookie"]  # already right
        assert answered_by(backends)[first] == 7  # every request on the endpoint of the cookie
        stale = [(b"Cookie", b"kroute_affinity=x")]
        _, _, fresh = await call(port, "www.local", headers_extra=stale)
        assert [n for n, _ in fresh if n.lower() == b"set-cookie"]  # a stale cookie is replaced

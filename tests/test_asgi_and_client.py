"""The ASGI gateway (under uvicorn, and called directly) and the client side (ServiceClient,
the httpx transport), with real pods on loopback."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, MutableMapping
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx
import pytest

import kroute
from kroute.client.service import ServiceClient, service_of
from kroute.gateway.asgi import AsgiGateway
from kroute.gateway.router import Router
from kroute.transport.pooled import PooledTransport
from kroute.watch.sources import ManifestSource, MemorySource
from tests.builders import ingress
from tests.pods import Client, Pod, endpoint_slice, service, start_pods

pytestmark = pytest.mark.anyio


@pytest.fixture
async def pods() -> AsyncIterator[tuple[list[Pod], int]]:
    async with anyio.create_task_group() as group:
        yield await start_pods(group, "www", ["127.0.0.51", "127.0.0.52"])
        group.cancel_scope.cancel()


def objects(port: int, *extra: str) -> list[dict[str, Any]]:
    return [
        ingress("www", [("www.test", [("/", "Prefix", "www")])]),
        service("www"),
        endpoint_slice("www", port, [("127.0.0.51", "ready"), ("127.0.0.52", "ready"),
                                     *((a, "ready") for a in extra)]),
    ]  # fmt: skip


# -- ASGI --------------------------------------------------------------------------------------


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # uvicorn runs on asyncio only
async def test_asgi_gateway_under_uvicorn(pods: tuple[list[Pod], int], tmp_path: Path) -> None:
    import uvicorn

    (tmp_path / "objects.json").write_text(json.dumps(objects(pods[1])))
    router = Router([ManifestSource([tmp_path])], transport=PooledTransport())
    config = uvicorn.Config(AsgiGateway(router), host="127.0.0.1", port=0, lifespan="on",
                            log_level="warning", ws="none")  # fmt: skip
    server = uvicorn.Server(config)
    async with anyio.create_task_group() as group:
        group.start_soon(server.serve)
        with anyio.fail_after(10):
            while not server.started:
                await anyio.sleep(0.01)
        assert router.ready  # the lifespan ran the source and waited for it to sync
        port = server.servers[0].sockets[0].getsockname()[1]
        client = Client(port)
        answer = await client.json("www.test", "/hello?x=1")
        assert answer["target"] == "/hello?x=1"
        assert answer["headers"]["x-forwarded-for"] == "127.0.0.1"
        assert answer["headers"]["x-forwarded-host"] == "www.test"
        status, body = await client.request("www.test", "/upload", "POST", b"x" * 100_000)
        assert status == 200
        assert json.loads(body)["size"] == 100_000
        status, body = await client.request("nobody.test")
        assert status == 404
        assert b"no route" in body
        await client.aclose()
        server.should_exit = True
    assert router.transport is not None


async def test_asgi_gateway_called_directly(pods: tuple[list[Pod], int]) -> None:
    router = Router([MemorySource(objects=objects(pods[1]))], transport=PooledTransport(),
                    sticky_cookie="affinity")  # fmt: skip
    app = AsgiGateway(router)
    sent: list[MutableMapping[str, Any]] = []
    incoming = iter([{"type": "http.request", "body": b"abc", "more_body": True},
                     {"type": "http.request", "body": b"def", "more_body": False}])  # fmt: skip

    async def receive() -> dict[str, Any]:
        return next(incoming)

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "PUT", "path": "/p", "raw_path": b"/p", "query_string": b"",
             "headers": [(b"host", b"www.test"), (b"transfer-encoding", b"chunked"),
                         (b"connection", b"keep-alive, x-drop"), (b"x-drop", b"1")],
             "client": ("10.1.2.3", 5555), "server": ("127.0.0.1", 80), "scheme": "https"}  # fmt: skip
    await app(scope, receive, send)
    assert sent[0]["type"] == "http.response.start"
    assert sent[0]["status"] == 200
    cookies = [v for n, v in sent[0]["headers"] if n.lower() == b"set-cookie"]
    assert len(cookies) == 1
    assert cookies[0].startswith(b"affinity=")  # sticky sessions: the next request comes back
    answer = json.loads(b"".join(m.get("body", b"") for m in sent[1:]))
    assert answer["size"] == 6
    assert answer["headers"]["x-forwarded-proto"] == "https"
    assert answer["headers"]["x-forwarded-for"] == "10.1.2.3"
    assert "x-drop" not in answer["headers"]  # named in Connection: hop-by-hop
    assert sent[-1] == {"type": "http.response.body", "body": b""}
    await router.transport.aclose()  # type: ignore[union-attr]


async def test_asgi_gateway_routes_absolute_form_and_refuses_bad_escapes(
    pods: tuple[list[Pod], int],
) -> None:
    # As on the other fronts (tests/test_gateway_e2e.py): a server that passes the target as
    # received (raw_path) gets routing by its authority (RFC 9112 section 3.2.2), and a `%`
    # that starts no escape is a 400 (Traefik: Go's url.ParseRequestURI refuses it).
    router = Router([MemorySource(objects=objects(pods[1]))], transport=PooledTransport())
    app = AsgiGateway(router)

    async def answer(raw_path: bytes, host: bytes) -> list[MutableMapping[str, Any]]:
        sent: list[MutableMapping[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: MutableMapping[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "GET", "path": "/", "raw_path": raw_path,
                 "query_string": b"q=1", "headers": [(b"host", host)],
                 "client": ("127.0.0.1", 5555), "server": ("127.0.0.1", 80)}  # fmt: skip
        await app(scope, receive, send)
        return sent

    sent = await answer(b"http://www.test/p", b"other.test")
    assert sent[0]["status"] == 200
    echo = json.loads(b"".join(m.get("body", b"") for m in sent[1:]))
    assert (echo["target"], echo["headers"]["host"]) == ("/p?q=1", "www.test")
    assert (await answer(b"http://other.test/p", b"www.test"))[0]["status"] == 404
    for bad in (b"/p%zz", b"/%", b"/%4"):
        sent = await answer(bad, b"www.test")
        assert sent[0]["status"] == 400
        assert b"invalid percent-escape" in sent[1]["body"]
    await router.transport.aclose()  # type: ignore[union-attr]


async def test_asgi_websocket_is_refused_with_a_reason() -> None:
    sent: list[MutableMapping[str, Any]] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    await AsgiGateway(Router([]))({"type": "websocket"}, receive, send)
    assert sent[0]["type"] == "websocket.close"
    assert "WebSocket" in sent[0]["reason"]


# -- client side -------------------------------------------------------------------------------


def test_service_hosts_are_recognised() -> None:
    assert service_of("api.shop.svc") == ("shop", "api")
    assert service_of("api.shop.svc.cluster.local") == ("shop", "api")
    assert service_of("API.Shop.svc.cluster.local.") == ("shop", "api")
    assert service_of("api.shop.svc.other.domain") is None
    assert service_of("api.shop.svc.corp", cluster_domain="corp") == ("shop", "api")
    assert service_of("www.example.com") is None
    assert service_of("svc") is None


async def test_service_client_calls_services_and_routes(pods: tuple[list[Pod], int]) -> None:
    router = Router([MemorySource(objects=objects(pods[1]))], transport=PooledTransport())
    client = ServiceClient(router)
    seen = set()
    for url in ["http://www.default.svc/a", "http://www.default.svc.cluster.local:80/b"] * 2:
        decision, response = await client.request("GET", url)
        answer = json.loads(await response.read())
        assert answer["headers"]["host"] == url.split("/")[2]
        assert decision.route is None
        assert str(decision.backend) == "default/www:80"
        seen.add(answer["pod"])
    assert seen == {"www-0", "www-1"}  # balanced over the Service's endpoints
    decision, response = await client.request("POST", "http://www.test/r", body=b"12345")
    assert json.loads(await response.read())["size"] == 5
    assert decision.route is not None
    assert decision.route.source.name == "www"
    with pytest.raises(kroute.NoHealthyEndpoint):
        await client.request("GET", "http://missing.default.svc/")
    with pytest.raises(kroute.NoRoute):
        await client.request("GET", "http://nobody.test/")
    with pytest.raises(kroute.InvalidRequest):
        await client.request("GET", "https://www.default.svc/")
    await router.transport.aclose()  # type: ignore[union-attr]


async def test_httpx_transport_with_retries_and_errors(pods: tuple[list[Pod], int]) -> None:
    # 127.0.0.53 is in the slice but nothing listens there: safe requests are retried elsewhere.
    router = Router([MemorySource(objects=objects(pods[1], "127.0.0.53"))],
                    transport=PooledTransport())  # fmt: skip
    async with httpx.AsyncClient(transport=kroute.KrouteTransport(router)) as http:
        for _ in range(6):
            response = await http.get("http://www.default.svc/x", params={"q": "1"})
            assert response.status_code == 200
            assert response.json()["target"] == "/x?q=1"
        response = await http.post("http://www.default.svc/y", content=b"z" * 1000)
        assert response.json()["size"] == 1000

        async def chunks() -> AsyncIterator[bytes]:
            yield b"ab"
            yield b"cd"

        response = await http.post("http://www.test/z", content=chunks())
        assert response.json()["size"] == 4
        async with http.stream("GET", "http://www.default.svc/s") as streamed:
            assert b"".join([c async for c in streamed.aiter_bytes()]).startswith(b"{")
        with pytest.raises(httpx.ConnectError, match="Service default/nothing not found"):
            await http.get("http://nothing.default.svc/")
        with pytest.raises(httpx.ConnectError, match="no route"):
            await http.get("http://nobody.test/")
    assert sum(p.hits for p in pods[0]) == 9  # every request once, none lost to .53
    await router.transport.aclose()  # type: ignore[union-attr]

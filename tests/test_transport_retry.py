"""Retries on another endpoint, only when safe, within a budget; TLS to endpoints."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Sequence

import anyio
import anyio.abc
import pytest
import trustme

from kroute.errors import NoHealthyEndpoint, UpstreamClosed, UpstreamConnectError, UpstreamError
from kroute.transport.base import ForwardRequest, Target
from kroute.transport.conformance import Backend, get
from kroute.transport.pooled import PooledTransport
from kroute.transport.proxy import RetryBudget
from kroute.transport.retry import send_with_retries
from kroute.transport.retry_policy import RetryPolicy

pytestmark = pytest.mark.anyio


@pytest.fixture
async def backends() -> AsyncIterator[list[Backend]]:
    servers = [Backend("127.0.0.2"), Backend("127.0.0.3")]
    async with anyio.create_task_group() as group:
        for server in servers:
            await group.start(server.serve)
        yield servers
        group.cancel_scope.cancel()


def picker(targets: list[Target]):  # type: ignore[no-untyped-def]
    def pick(tried: Sequence[Target]) -> Target | None:
        return next((t for t in targets if t not in tried), None)

    return pick


async def test_retry_lands_on_another_endpoint(backends: list[Backend]) -> None:
    transport = PooledTransport()
    dead = Target("127.0.0.4", backends[0].port)  # nothing listens there
    seen: list[tuple[str, bool]] = []
    response, target = await send_with_retries(
        transport, get("/fixed?size=2"), picker([dead, backends[1].target]),
        policy=RetryPolicy(), now=anyio.current_time,
        report=lambda t, error: seen.append((str(t), error is None)),
    )  # fmt: skip
    assert await response.read() == b"xx"
    assert target == backends[1].target
    assert seen == [(str(dead), False), (str(backends[1].target), True)]
    await transport.aclose()


async def test_a_post_whose_bytes_were_sent_is_not_retried(backends: list[Backend]) -> None:
    transport = PooledTransport()
    post = ForwardRequest("POST", "/drop-request", [(b"Host", b"h")], body=b"pay=10")
    with pytest.raises(UpstreamClosed):
        await send_with_retries(transport, post, picker([b.target for b in backends]),
                                policy=RetryPolicy(), now=anyio.current_time)  # fmt: skip
    assert [b.hits.get("/drop-request", 0) for b in backends] == [1, 0]
    # The same failure on a GET is retried on the other endpoint.
    with pytest.raises(UpstreamError):
        await send_with_retries(transport, get("/drop-request"), picker([b.target for b in backends]),
                                policy=RetryPolicy(), now=anyio.current_time)  # fmt: skip
    assert [b.hits.get("/drop-request", 0) for b in backends] == [2, 1]
    await transport.aclose()


async def test_budget_and_no_endpoint(backends: list[Backend]) -> None:
    transport = PooledTransport()
    dead = [Target("127.0.0.4", 1), Target("127.0.0.5", 1), backends[0].target]
    spent = RetryPolicy(budget=RetryBudget(minimum=0, ratio=0.0))
    with pytest.raises(UpstreamConnectError):
        await send_with_retries(
            transport, get("/"), picker(dead), policy=spent, now=anyio.current_time
        )
    with pytest.raises(NoHealthyEndpoint):
        await send_with_retries(
            transport, get("/"), picker([]), policy=RetryPolicy(), now=anyio.current_time
        )
    await transport.aclose()


async def test_tls_to_endpoints_with_verification() -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("backend.test").configure_cert(server_context)

    async def handle(stream: anyio.abc.ByteStream) -> None:
        try:
            async with stream:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += await stream.receive()
                await stream.send(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecure")
                await stream.receive()  # until the client goes
        except (ssl.SSLError, anyio.EndOfStream, anyio.BrokenResourceError):
            pass

    from anyio.streams.tls import TLSListener

    tcp = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = tcp.extra(anyio.abc.SocketAttribute.local_port)
    listener = TLSListener(tcp, server_context)
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    async with anyio.create_task_group() as group:
        group.start_soon(listener.serve, handle)
        transport = PooledTransport()
        good = Target("127.0.0.1", port, tls=trusting, server_name="backend.test")
        assert await (await transport.send(good, get("/"))).read() == b"secure"
        untrusting = Target(
            "127.0.0.1", port, tls=ssl.create_default_context(), server_name="backend.test"
        )
        with pytest.raises(UpstreamConnectError):
            await transport.send(untrusting, get("/"))
        wrong_name = Target("127.0.0.1", port, tls=trusting, server_name="other.test")
        with pytest.raises(UpstreamConnectError):
            await transport.send(wrong_name, get("/"))
        await transport.aclose()
        group.cancel_scope.cancel()
    await listener.aclose()

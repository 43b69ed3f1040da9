"""The traffic Middlewares (retry, forwardAuth, circuitBreaker) through every front (HttpServer
on asyncio and trio, FastGateway, the ASGI gateway on asyncio and trio), against real servers on
loopback: the same behaviour on each, because each asks the same policy and runs the same
steps."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.abc
import pytest

from kroute.gateway.router import Router
from kroute.transport.proxy import RetryBudget
from kroute.transport.retry_policy import RetryPolicy
from kroute.watch.sources import MemorySource
from tests.fronts import FrontClient, serving
from tests.pods import endpoint_slice, service, start_pods
from tests.test_middlewares_e2e import middleware, using

pytestmark = pytest.mark.anyio


class Dropper:
    """An endpoint that accepts each connection and closes it at once, counting them: a
    backend that fails every try before a response head."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.hits = 0

    async def start(self, group: anyio.abc.TaskGroup, port: int) -> int:
        listener = await anyio.create_tcp_listener(local_host=self.address, local_port=port)
        await group.start(self._serve, listener)
        return int(listener.extra(anyio.abc.SocketAttribute.local_port))

    async def _serve(self, listener: anyio.abc.SocketListener, *,
                     task_status: anyio.abc.TaskStatus[None]) -> None:  # fmt: skip
        async with listener:
            task_status.started()
            await listener.serve(self._drop)

    async def _drop(self, stream: anyio.abc.SocketStream) -> None:
        self.hits += 1
        await stream.aclose()


def retrying(host: str, attempts: int, service_name: str) -> list[dict[str, Any]]:
    name = f"retry-{host.split('.')[0]}"
    route = using(host, name)
    route["spec"]["routes"][0]["services"] = [{"name": service_name, "port": 80}]
    return [middleware(name, {"retry": {"attempts": attempts, "initialInterval": "1ms"}}), route]


@pytest.fixture
async def failing(every_front: str) -> AsyncIterator[tuple[FrontClient, list[Dropper], Any]]:
    """Service `down`: six endpoints that drop every connection; Service `mixed`: five such
    and one pod that answers."""
    async with anyio.create_task_group() as group:
        droppers = [Dropper(f"127.0.0.{20 + i}") for i in range(6)]
        port = 0
        for dropper in droppers:
            port = await dropper.start(group, port)
        pods, _ = await start_pods(group, "ok", ["127.0.0.30"], port)
        addresses = [d.address for d in droppers]
        objects = [
            service("down"), endpoint_slice("down", port, [(a, "ready") for a in addresses]),
            service("mixed"), endpoint_slice("mixed", port, [(a, "ready") for a in
                                                              [*addresses[:5], "127.0.0.30"]]),
            *retrying("four.local", 4, "down"), *retrying("one.local", 1, "down"),
            *retrying("six.local", 6, "mixed"),
        ]  # fmt: skip
        # (a budget that never runs out here: the attempt counts are the policy's)
        router = Router([MemorySource(objects=objects)],
                        retry=RetryPolicy(budget=RetryBudget(minimum=1000)))  # fmt: skip
        async with serving(router, every_front) as client:
            yield client, droppers, pods
        group.cancel_scope.cancel()


@pytest.mark.parametrize(("host", "body", "hits"), [
    ("four.local", None, 4),  # attempts: 4, a different endpoint each time
    ("one.local", None, 1),
    ("four.local", b"once", 1),  # a request with a body is never sent twice
])  # fmt: skip
async def test_retry_tries_as_many_endpoints_as_attempts_on_every_front(
    failing: tuple[FrontClient, list[Dropper], Any], host: str, body: bytes | None, hits: int
) -> None:
    client, droppers, _ = failing
    method = "GET" if body is None else "POST"
    status, _, _ = await client.request(host, "/", method=method, body=body or b"")
    assert status == 502
    assert sum(d.hits for d in droppers) == hits
    assert max(d.hits for d in droppers) == 1


async def test_retry_reaches_the_endpoint_that_answers(
    failing: tuple[FrontClient, list[Dropper], Any],
) -> None:
    client, droppers, pods = failing
    status, _, _ = await client.request("six.local", "/")
    assert status == 200
    assert pods[0].hits == 1
    assert sum(d.hits for d in droppers) <= 5

"""The conformance suite against PooledTransport, on each engine (asyncio Protocols; anyio
streams on asyncio and trio), plus pool specifics."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest

from kroute.errors import UpstreamTimeout
from kroute.transport.base import Timeouts
from kroute.transport.conformance import *  # noqa: F403
from kroute.transport.conformance import SLOW_TIMEOUTS, Backend, get
from kroute.transport.pooled import PooledTransport

pytestmark = pytest.mark.anyio


def make(engine: str, **options: object) -> PooledTransport:
    return PooledTransport(fast_path=engine == "protocols", **options)  # type: ignore[arg-type]


@pytest.fixture
async def transport(engine: str) -> AsyncIterator[PooledTransport]:
    t = make(engine)
    yield t
    await t.aclose()


@pytest.fixture
async def slow_transport(engine: str) -> AsyncIterator[PooledTransport]:
    t = make(engine, timeouts=SLOW_TIMEOUTS)
    yield t
    await t.aclose()


async def test_pool_timeout_when_every_slot_is_busy(backend: Backend, engine: str) -> None:
    transport = make(engine, max_connections=2, timeouts=Timeouts(read=5.0, pool=0.2))
    busy = [await transport.send(backend.target, get("/slow-body")) for _ in range(2)]
    with pytest.raises(UpstreamTimeout) as info:
        await transport.send(backend.target, get("/fixed?size=1"))
    assert info.value.phase == "pool"
    assert info.value.status_hint == 503
    for response in busy:
        await response.aclose()
    assert await (await transport.send(backend.target, get("/fixed?size=1"))).read() == b"x"
    await transport.aclose()


async def test_waiters_get_slots_first_come_first_served(backend: Backend, engine: str) -> None:
    transport = make(engine, max_connections=1, timeouts=Timeouts(pool=5.0))
    busy = await transport.send(backend.target, get("/fixed?size=1"))
    order: list[int] = []

    async def waiter(n: int) -> None:
        response = await transport.send(backend.target, get("/fixed?size=1"))
        order.append(n)
        await response.read()

    async with anyio.create_task_group() as group:
        for n in range(3):
            group.start_soon(waiter, n)
            await anyio.sleep(0.01)  # they queue in this order
        assert order == []  # every one waits for the busy slot
        await busy.read()
    assert order == [0, 1, 2]
    assert backend.connections == 1  # the one connection passed from request to request
    await transport.aclose()


async def test_idle_connections_are_reused_most_recent_first(backend: Backend, engine: str) -> None:
    transport = make(engine)
    first = await transport.send(backend.target, get("/fixed?size=1"))
    second = await transport.send(backend.target, get("/fixed?size=1"))
    await first.read()
    await second.read()  # released last: on top of the stack
    before = transport.idle_connections(backend.target)
    assert len(before) == 2
    await (await transport.send(backend.target, get("/fixed?size=1"))).read()
    assert transport.idle_connections(backend.target) == before  # the top one went and came back
    assert backend.connections == 2
    await transport.aclose()
    await anyio.sleep(0)


async def test_idle_stack_is_capped(backend: Backend, engine: str) -> None:
    transport = make(engine, max_idle=2)
    responses = [await transport.send(backend.target, get("/fixed?size=1")) for _ in range(5)]
    for response in responses:
        assert await response.read() == b"x"
    assert len(transport.idle_connections(backend.target)) == 2  # the 3 least recent closed
    assert backend.connections == 5
    await transport.aclose()


async def test_a_cancelled_waiter_gives_up_its_place(backend: Backend, engine: str) -> None:
    transport = make(engine, max_connections=1, timeouts=Timeouts(pool=5.0))
    busy = await transport.send(backend.target, get("/fixed?size=1"))
    with anyio.move_on_after(0.05):
        await transport.send(backend.target, get("/fixed?size=1"))  # waits, then cancelled
    await busy.read()  # the slot goes to nobody who left...
    for _ in range(3):  # ...and is free again, every time
        assert await (await transport.send(backend.target, get("/fixed?size=2"))).read() == b"xx"
    await transport.aclose()


async def test_read_timeout_counts_only_while_waiting(backend: Backend, engine: str) -> None:
    transport = make(engine, timeouts=Timeouts(read=0.2))
    assert await (await transport.send(backend.target, get("/fixed?size=1"))).read() == b"x"
    await anyio.sleep(0.3)  # idle longer than the read timeout: not a timeout
    response = await transport.send(backend.target, get("/fixed?size=1"))
    await anyio.sleep(0.3)  # the caller takes its time between head and body: not one either
    assert await response.read() == b"x"
    assert backend.connections == 1
    with pytest.raises(UpstreamTimeout) as info:  # on the reused connection: a timeout, no retry
        await transport.send(backend.target, get("/slow-head"))
    assert info.value.phase == "read"
    assert backend.hits["/slow-head"] == 1
    await transport.aclose()

"""The conformance suite against PooledTransport, on asyncio and trio, plus pool specifics."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest

from kroute.errors import UpstreamTimeout
from kroute.transport.base import Timeouts
from kroute.transport.conformance import *  # noqa: F403
from kroute.transport.conformance import Backend, get
from kroute.transport.pooled import PooledTransport

pytestmark = pytest.mark.anyio


@pytest.fixture
async def transport() -> AsyncIterator[PooledTransport]:
    t = PooledTransport()
    yield t
    await t.aclose()


@pytest.fixture
async def slow_transport() -> AsyncIterator[PooledTransport]:
    t = PooledTransport(timeouts=Timeouts(connect=1.0, write=1.0, read=0.2, pool=0.2))
    yield t
    await t.aclose()


async def test_pool_timeout_when_every_slot_is_busy(backend: Backend) -> None:
    transport = PooledTransport(max_connections=2, timeouts=Timeouts(read=5.0, pool=0.2))
    busy = [await transport.send(backend.target, get("/slow-body")) for _ in range(2)]
    with pytest.raises(UpstreamTimeout) as info:
        await transport.send(backend.target, get("/fixed?size=1"))
    assert info.value.phase == "pool"
    assert info.value.status_hint == 503
    for response in busy:
        await response.aclose()
    assert await (await transport.send(backend.target, get("/fixed?size=1"))).read() == b"x"
    await transport.aclose()


async def test_idle_connections_are_reused_most_recent_first(backend: Backend) -> None:
    transport = PooledTransport()
    first, second = (
        (await transport.send(backend.target, get("/fixed?size=1")) for _ in range(2))
        if False
        else (
            await transport.send(backend.target, get("/fixed?size=1")),
            await transport.send(backend.target, get("/fixed?size=1")),
        )
    )
    await first.read()
    await second.read()  # released last: on top of the stack
    slot = transport._slots[backend.target]
    top = slot.idle[-1]
    await (await transport.send(backend.target, get("/fixed?size=1"))).read()
    assert slot.idle[-1] is top
    await transport.aclose()
    await anyio.sleep(0)


async def test_idle_stack_is_capped(backend: Backend) -> None:
    transport = PooledTransport(max_idle=2)
    responses = [await transport.send(backend.target, get("/fixed?size=1")) for _ in range(5)]
    for response in responses:
        assert await response.read() == b"x"
    slot = transport._slots[backend.target]
    assert len(slot.idle) == 2  # the three least recently used were closed
    assert backend.connections == 5
    await transport.aclose()

"""The conformance suite against HttpcoreTransport, on asyncio and trio."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from kroute.transport.base import Timeouts
from kroute.transport.conformance import *  # noqa: F403
from kroute.transport.httpcore_transport import HttpcoreTransport

pytestmark = pytest.mark.anyio


@pytest.fixture
async def transport() -> AsyncIterator[HttpcoreTransport]:
    t = HttpcoreTransport()
    yield t
    await t.aclose()


@pytest.fixture
async def slow_transport() -> AsyncIterator[HttpcoreTransport]:
    t = HttpcoreTransport(timeouts=Timeouts(connect=1.0, write=1.0, read=0.2, pool=0.2))
    yield t
    await t.aclose()

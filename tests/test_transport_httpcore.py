"""The conformance suite against HttpcoreTransport, on asyncio and trio."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from kroute.transport.conformance import *  # noqa: F403
from kroute.transport.conformance import SLOW_TIMEOUTS
from kroute.transport.httpcore_transport import HttpcoreTransport

pytestmark = pytest.mark.anyio


@pytest.fixture
async def transport() -> AsyncIterator[HttpcoreTransport]:
    t = HttpcoreTransport()
    yield t
    await t.aclose()


@pytest.fixture
async def slow_transport() -> AsyncIterator[HttpcoreTransport]:
    t = HttpcoreTransport(timeouts=SLOW_TIMEOUTS)
    yield t
    await t.aclose()

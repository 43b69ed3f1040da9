"""Worker threads for the blocking work of steps (`UpstreamRequest.offload`), bounded.

A step that must block (basicAuth's bcrypt check, tens of milliseconds by design) would stall
every connection of the front whose event loop ran it. `Workers.run` runs it in a worker
thread instead (anyio's, on asyncio and trio alike) while the loop serves other requests. At
most `threads` such functions run at once, the Router's for every front: the rest wait their
turn, so a flood of wrong passwords takes that many threads, never anyio's whole default pool
(which file I/O and others share), and the waiting requests are bounded by the connections
that sent them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.to_thread
import sniffio

T = TypeVar("T")
#: Worker threads for steps' blocking work at once, by default (bcrypt releases the GIL, so
#: two use two cores).
THREADS = 2


class Workers:
    """`run(function)`: `function()` in a worker thread, at most `threads` at once."""

    __slots__ = ("_limiter", "threads")

    def __init__(self, threads: int = THREADS) -> None:
        self.threads = threads
        #: The limiter, made on first use for the async library running then (anyio's limiter
        #: belongs to one; a Router may serve on asyncio in one test and on trio in the next).
        self._limiter: tuple[str, anyio.CapacityLimiter] | None = None

    async def run(self, function: Callable[[], T]) -> T:
        library = sniffio.current_async_library()
        if self._limiter is None or self._limiter[0] != library:
            self._limiter = (library, anyio.CapacityLimiter(self.threads))
        return await anyio.to_thread.run_sync(function, limiter=self._limiter[1])

    @property
    def busy(self) -> int:
        """Functions running in worker threads now."""
        return 0 if self._limiter is None else int(self._limiter[1].borrowed_tokens)

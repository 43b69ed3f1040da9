"""RequestMirror's I/O shell: copies queued without waiting, sent by a bounded set of workers.

A route's `Mirror` steps record copies of the request (`kroute.pipeline.Mirror`); once the
request steps have let the request through, the front hands them to `Router.mirror`, which
offers them here. Issue 17 and HTTPRequestMirrorFilter ("responses from that destination are
ignored") ask for fire and forget: a copy never delays or fails the request it copies.

- `offer` never waits: it draws each copy's share (`Share.takes`, with the Router's `rng`) and
  puts the copy on a bounded queue; a full queue drops it (counted), so a slow mirror backend
  costs at most `queue` copies of memory;
- `run` (started by `Router.run`) sends from `concurrency` workers, each copy to one endpoint of
  the mirror backend's pool (the spec: "a single destination endpoint"), without retries; the
  response is read and discarded; a failure is counted and logged at debug level, never raised;
- a request with a body (or an upgrade) is not copied (counted as skipped): its body streams
  once, to the request's own backend, and keeping a copy would cost memory nothing bounds.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING

import anyio
import attrs

from kroute.pipeline.filters import MirrorCopy
from kroute.transport.base import Transport
from kroute.transport.pooled import PooledTransport

if TYPE_CHECKING:
    from kroute.gateway.tracing import Propagation

_log = logging.getLogger(__name__)

#: Sends a copy through a transport, in the trace of the request it copies (when traced).
Send = Callable[[MirrorCopy, Transport, "Propagation | None"], Awaitable[None]]


@attrs.frozen
class MirrorStatistics:
    """What became of the copies RequestMirror steps made (the admin API's /api/services)."""

    #: Sent, and answered (any status).
    mirrored: int = 0
    #: Not queued: the queue was full (the mirror backend is slow, or `Router.run` is not
    #: running to send them).
    dropped: int = 0
    #: Sent but not answered: no usable endpoint, a connection error, a timeout.
    failed: int = 0
    #: Not copied: the request had a body (or asked for an upgrade).
    skipped: int = 0
    #: Waiting in the queue now.
    queued: int = 0


class Mirrors:
    """The queue of copies and its workers (see the module docstring)."""

    def __init__(self, *, queue: int = 256, concurrency: int = 8) -> None:
        self.limit = queue
        self.concurrency = concurrency
        #: Copies waiting, each with the trace of its request (None: not traced).
        self._queue: collections.deque[tuple[MirrorCopy, Propagation | None]] = collections.deque()
        #: Set when a copy is queued; idle workers wait on it (made by `run`, in its loop).
        self._queued: anyio.Event | None = None
        self.mirrored = self.dropped = self.failed = self.skipped = 0

    def offer(self, copies: Iterable[MirrorCopy], *, body: bool, draw: Callable[[], float],
              trace: Propagation | None = None) -> None:  # fmt: skip
        """Queue the copies whose share takes this request, without waiting (`trace`: the
        request's, when the Router traces: each copy is sent in it)."""
        for copy in copies:
            if not copy.step.share.takes(draw()):
                continue
            if body:
                self.skipped += 1
                continue
            if len(self._queue) >= self.limit:
                self.dropped += 1
                continue
            self._queue.append((copy, trace))
            if self._queued is not None:
                self._queued.set()

    async def run(self, send: Send, transport: Callable[[], Transport | None]) -> None:
        """Send queued copies until cancelled, through `transport()` or, when that is None (a
        Router without a transport: FastGateway forwards itself), a PooledTransport of its
        own."""
        own = PooledTransport()
        self._queued = anyio.Event()
        try:
            async with anyio.create_task_group() as group:
                for _ in range(self.concurrency):
                    group.start_soon(self._work, send, lambda: transport() or own)
        finally:
            self._queued = None  # (an event of this loop: `offer` no longer sets it)
            with anyio.CancelScope(shield=True):
                await own.aclose()

    async def _work(self, send: Send, transport: Callable[[], Transport]) -> None:
        while True:
            while not self._queue:
                assert self._queued is not None
                if self._queued.is_set():  # (another idle worker may have made a new one)
                    self._queued = anyio.Event()
                await self._queued.wait()
            copy, trace = self._queue.popleft()
            try:
                await send(copy, transport(), trace)
            except Exception as exc:  # never the request's business
                self.failed += 1
                _log.debug("%s: the copy of %s %s failed: %s", copy.step.label, copy.method,
                           copy.target, exc)  # fmt: skip
            else:
                self.mirrored += 1

    def statistics(self) -> MirrorStatistics:
        return MirrorStatistics(self.mirrored, self.dropped, self.failed, self.skipped,
                                len(self._queue))  # fmt: skip

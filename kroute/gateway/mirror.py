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
- a request with a body is copied only by a step that copies bodies (`Mirror.body_limit`:
  Traefik's mirroring `maxBodySize`): the front passes the body on as it streams and gives
  each piece to a `Tee` too, which keeps it up to the largest limit of the copies waiting and
  queues them once the body is complete (`completed`); a body over a copy's limit is not
  copied (counted as skipped), nor is any body for an HTTPRoute RequestMirror, nor an upgrade.
  The body bytes held, queued and still being read, are bounded together (`body_bytes`):
  past it, copies are dropped (counted).
"""

from __future__ import annotations

import collections
import logging
import weakref
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
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
    #: Not copied: the request had a body the step does not copy (none, or larger than its
    #: maxBodySize), or asked for an upgrade.
    skipped: int = 0
    #: Waiting in the queue now.
    queued: int = 0


class Mirrors:
    """The queue of copies and its workers (see the module docstring)."""

    def __init__(self, *, queue: int = 256, concurrency: int = 8,
                 body_bytes: int = 16 << 20) -> None:  # fmt: skip
        self.limit = queue
        self.concurrency = concurrency
        #: The most request body bytes the queued copies may hold together.
        self.body_bytes = body_bytes
        self._held = 0
        #: Copies waiting, each with the trace of its request (None: not traced).
        self._queue: collections.deque[tuple[MirrorCopy, Propagation | None]] = collections.deque()
        #: Set when a copy is queued; idle workers wait on it (made by `run`, in its loop).
        self._queued: anyio.Event | None = None
        self.mirrored = self.dropped = self.failed = self.skipped = 0

    def offer(self, copies: Iterable[MirrorCopy], *, body: bool, draw: Callable[[], float],
              upgrade: bool = False, trace: Propagation | None = None
              ) -> list[MirrorCopy]:  # fmt: skip
        """Queue the copies whose share takes this request, without waiting (`trace`: the
        request's, when the Router traces: each copy is sent in it); those that wait for the
        request's `body` (to be given to a `tee`) are returned."""
        waiting = []
        for copy in copies:
            if not copy.step.share.takes(draw()):
                continue
            if upgrade or (body and not copy.step.body_limit):
                self.skipped += 1
            elif body:
                waiting.append(copy)
            else:
                self._put(copy, trace)
        return waiting

    def reserve(self, size: int) -> bool:
        """Whether `size` more body bytes fit in `body_bytes` (then they are counted held)."""
        if self._held + size > self.body_bytes:
            return False
        self._held += size
        return True

    def release(self, kept: list[int]) -> None:
        """Give back the bytes a `Tee` reserved (`kept[0]`, then 0)."""
        self._held -= kept[0]
        kept[0] = 0

    def _put(self, copy: MirrorCopy, trace: Propagation | None) -> None:
        size = len(copy.body)
        if len(self._queue) >= self.limit or self._held + size > self.body_bytes:
            self.dropped += 1
            return
        self._held += size
        self._queue.append((copy, trace))
        if self._queued is not None:
            self._queued.set()

    def completed(self, copies: Iterable[MirrorCopy], body: bytes,
                  trace: Propagation | None = None) -> None:  # fmt: skip
        """The request's whole `body` for the copies waiting for it: queued with it, unless it
        is over their limit (skipped)."""
        for copy in copies:
            if len(body) > copy.step.body_limit:
                self.skipped += 1
            else:
                self._put(attrs.evolve(copy, body=body), trace)

    def tee(self, copies: list[MirrorCopy], trace: Propagation | None = None) -> Tee:
        """A `Tee` for the body the `copies` wait for (sent in `trace`, as `offer` says)."""
        return Tee(self, copies, trace)

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
            self._held -= len(copy.body)
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


class Tee:
    """A request body kept for the copies waiting for it, as the front passes it on: pieces
    kept up to the largest limit of the copies, `done` at its end (those over it skipped).
    The bytes kept are reserved in the queue's `body_bytes` as they come, so the bodies
    being read and those queued are bounded together: past it the copies are dropped. A body
    that does not end (the client went away, a 413) queues nothing and its bytes are given
    back when the tee goes (`weakref.finalize`)."""

    __slots__ = ("__weakref__", "copies", "kept", "limit", "mirrors", "parts", "size", "trace")

    def __init__(self, mirrors: Mirrors, copies: list[MirrorCopy],
                 trace: Propagation | None) -> None:  # fmt: skip
        self.mirrors = mirrors
        self.copies = copies
        self.trace = trace
        self.limit = max(copy.step.body_limit for copy in copies)
        #: None once given up (over every copy's limit, or over the queue's budget).
        self.parts: list[bytes] | None = []
        self.size = 0
        #: The bytes reserved for `parts` (in a list: what the finalizer gives back).
        self.kept = [0]
        weakref.finalize(self, mirrors.release, self.kept)

    def add(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.parts is None:
            return
        if self.size > self.limit or not self.mirrors.reserve(len(chunk)):
            self.parts = None
            self.mirrors.release(self.kept)
        else:
            self.parts.append(chunk)
            self.kept[0] += len(chunk)

    def done(self) -> None:
        if self.size > self.limit:
            self.mirrors.skipped += len(self.copies)
        elif self.parts is None:
            self.mirrors.dropped += len(self.copies)
        else:
            body = b"".join(self.parts)
            self.parts = None
            self.mirrors.release(self.kept)
            self.mirrors.completed(self.copies, body, self.trace)

    async def passing(self, body: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
        """`body` as it streams, each piece kept too; `done` once it has all gone through."""
        async for chunk in body:
            self.add(chunk)
            yield chunk
        self.done()

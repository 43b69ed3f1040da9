"""LeaderElection: one holder at a time of a coordination.k8s.io/v1 Lease, on anyio.

The decisions are kroute.watch.lease's (client-go's semantics); this shell does the I/O and
keeps the promise that matters: work run through `run_as_leader` stops the moment leadership
ends. Its cancel scope's deadline is the renew deadline of the last successful write, moved on
by each renewal, so a holder that cannot renew (API server gone, process stalled on a slow
request) stops on the event loop's own clock, whatever the election task is doing; a Lease
found taken by someone else cancels it at once; so does `run()` ending.

Each round reads the Lease (a holder first tries to renew blindly with the resourceVersion of
its last write, client-go's fast path: one request per renewal instead of two) and writes a
claim with the resourceVersion read: the API server's optimistic concurrency makes one of two
simultaneous candidates fail with a 409 (`Conflict`): that one lost the round and reads again
next time. When `run()` ends, leader work is cancelled and waited for, then the Lease is
released (holder emptied, client-go's ReleaseOnCancel) so a successor takes over at once
instead of after a lease duration.
"""

from __future__ import annotations

import datetime
import logging
import math
import os
import random
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from kroute.watch import lease as decisions
from kroute.watch.api import ApiClient, ApiError, Conflict, NotFound
from kroute.watch.kinds import LEASE
from kroute.watch.lease import Action, Elector, LeaseRecord, Timing

_log = logging.getLogger(__name__)

#: The spec fields the election owns; any others a Lease has (strategy...) are kept.
_ELECTION_FIELDS = ("holderIdentity", "leaseDurationSeconds", "acquireTime", "renewTime",
                    "leaseTransitions")  # fmt: skip


def default_identity() -> str:
    """Host name and process id, as client-go's examples and kube-controller-manager do."""
    return f"{socket.gethostname()}_{os.getpid()}"


class LeaderElection:
    """Elect one leader among the processes sharing the Lease `namespace/name`.

    Run `run()` in a task group for as long as the process takes part; use `is_leader`,
    `wait_leader()`, or `run_as_leader(work)` for work only the leader may do. Identities must
    be unique among the candidates.
    """

    def __init__(
        self,
        api: ApiClient,
        *,
        name: str = "kroute-status",
        namespace: str = "default",
        identity: str | None = None,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        release_on_cancel: bool = True,
        rng: random.Random | None = None,
    ) -> None:
        self.api = api
        self.name = name
        self.namespace = namespace
        self.identity = identity or default_identity()
        self.timing = Timing(lease_duration, renew_deadline, retry_period)
        self.release_on_cancel = release_on_cancel
        self._rng = rng or random.Random()
        self._state = Elector(self.identity)
        self._lease: dict[str, Any] | None = None  # the Lease as last read or written
        self._scopes: set[anyio.CancelScope] = set()
        self._changed: anyio.Event | None = None
        self._running = False

    # -- what applications use ----------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        """Whether this instance holds the Lease now (within its renew deadline)."""
        return self._state.leading(anyio.current_time(), self.timing)

    @property
    def holder(self) -> str | None:
        """The holder last seen ("" when released; None before the first read)."""
        return None if self._state.observed is None else self._state.observed.holder

    async def wait_leader(self) -> None:
        """Return once this instance leads (at once if it does)."""
        while not self.is_leader:
            await self._event().wait()

    async def run_as_leader(self, work: Callable[[], Awaitable[object]]) -> None:
        """Await `work()` each time this instance leads, cancelled the moment leadership ends;
        return when `work()` returns while leading (its exceptions propagate)."""
        while True:
            await self.wait_leader()
            with anyio.CancelScope(deadline=self._state.valid_until(self.timing)) as scope:
                self._scopes.add(scope)
                try:
                    await work()
                finally:
                    self._scopes.discard(scope)
                    self._notify()
            if not scope.cancelled_caught:
                return

    async def run(self) -> None:
        """Take part in the election until cancelled; then stop leader work and release."""
        if self._running:
            raise RuntimeError(f"{self._describe()}: run() is already running")
        self._running = True
        try:
            while True:
                await self._round()
                now = anyio.current_time()
                delay = decisions.next_round(self._state, now, self.timing, self._rng.random())
                if self._state.renewed_at is not None:  # wake in time to notice the deadline
                    delay = min(delay, self._state.valid_until(self.timing) - now)
                await anyio.sleep(max(delay, 0.0))
        finally:
            self._running = False
            with anyio.CancelScope(shield=True):
                await self._step_down()

    # -- one round --------------------------------------------------------------------------

    async def _round(self) -> None:
        started = anyio.current_time()
        # A holder's round cannot outlive its leadership: past the deadline it has lost,
        # whatever answer is still on its way.
        leading = self._state.renewed_at is not None
        deadline = self._state.valid_until(self.timing) if leading else math.inf
        with anyio.CancelScope(deadline=deadline) as bound:
            try:
                if self._state.renewed_at is not None and self._lease is not None:
                    try:  # the fast path: renew what we wrote last
                        await self._act(self._state.observed, self._lease, started)
                        return
                    except Conflict:
                        pass  # changed since: read it and decide on what is there
                lease = await self._get()
                record = None if lease is None else LeaseRecord.from_lease(lease)
                await self._act(record, lease, started)
            except Conflict as exc:
                _log.debug("%s: someone else wrote first (%s)", self._describe(), exc)
            except ApiError as exc:
                _log.warning("%s: %s", self._describe(), exc)
        if bound.cancelled_caught:
            self._lose("could not renew within the renew deadline")

    async def _get(self) -> dict[str, Any] | None:
        try:
            lease = await self.api.get(LEASE, self.namespace, self.name)
        except NotFound:
            lease = None
        self._lease = lease
        return lease

    async def _act(
        self, record: LeaseRecord | None, lease: dict[str, Any] | None, started: float
    ) -> None:
        action, self._state = decisions.decide(self._state, record, started, self.timing)
        if action is Action.LOST:
            holder = record.holder if record else None
            self._lose(f"the Lease is held by {holder!r} now" if holder else "the Lease is gone")
        elif action in (Action.ACQUIRE, Action.RENEW):
            wall = datetime.datetime.now(datetime.UTC)
            await self._write(
                decisions.claim(record, self.identity, wall, self.timing), lease, started
            )

    async def _write(
        self, record: LeaseRecord, lease: dict[str, Any] | None, started: float
    ) -> None:
        """Create the Lease, or replace it at the resourceVersion read; on success we hold it."""
        if lease is None:
            answer = await self.api.create(LEASE, {
                "apiVersion": LEASE.api_version, "kind": LEASE.kind,
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": record.to_spec(),
            })  # fmt: skip
        else:
            spec = {k: v for k, v in (lease.get("spec") or {}).items() if k not in _ELECTION_FIELDS}
            answer = await self.api.replace(LEASE, {**lease, "spec": {**spec, **record.to_spec()}})
        was_leading = self._state.renewed_at is not None
        self._lease = answer
        self._state = decisions.succeeded(self._state, LeaseRecord.from_lease(answer), started)
        for scope in self._scopes:
            scope.deadline = self._state.valid_until(self.timing)
        if not was_leading and self._state.renewed_at is not None:
            _log.info("%s: %s leads now", self._describe(), self.identity)
            self._notify()

    def _lose(self, reason: str, level: int = logging.WARNING) -> None:
        was_leading = self._state.renewed_at is not None or bool(self._scopes)
        self._state = self._state.resign()
        for scope in self._scopes:
            scope.cancel()
        if was_leading:
            _log.log(level, "%s: %s stopped leading: %s", self._describe(), self.identity, reason)
        self._notify()

    async def _step_down(self) -> None:
        """Stop leader work, wait for it to finish, then release the Lease if we may hold it.
        Work that does not finish within the renew deadline keeps the Lease unreleased: a
        successor then waits for it to expire rather than overlap with that work."""
        self._lose("leader election stopped", logging.INFO)
        last = self._state.observed
        with anyio.move_on_after(self.timing.renew_deadline) as bound:
            while self._scopes:
                await self._event().wait()
            if self.release_on_cancel and last is not None and last.holder == self.identity:
                await self._release()
        if bound.cancelled_caught:
            _log.warning("%s: not released within %g s; it expires by itself",
                         self._describe(), self.timing.renew_deadline)  # fmt: skip

    async def _release(self) -> None:
        """Empty the holder of a Lease that still names us (retried on conflict, as client-go
        does: a renewal in flight when cancelled may have landed)."""
        while True:
            try:
                lease = await self._get()
                if lease is None or LeaseRecord.from_lease(lease).holder != self.identity:
                    return
                wall = datetime.datetime.now(datetime.UTC)
                record = decisions.release(LeaseRecord.from_lease(lease), wall)
                await self._write(record, lease, anyio.current_time())
                _log.info("%s: released by %s", self._describe(), self.identity)
                return
            except Conflict:
                continue
            except ApiError as exc:
                _log.warning("%s: not released: %s", self._describe(), exc)
                return

    # -- plumbing -----------------------------------------------------------------------------

    def _describe(self) -> str:
        return f"Lease {self.namespace}/{self.name}"

    def _event(self) -> anyio.Event:
        if self._changed is None:
            self._changed = anyio.Event()
        return self._changed

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None


async def while_leading(
    election: LeaderElection | None, work: Callable[[], Awaitable[object]]
) -> None:
    """`work()` as `election.run_as_leader` runs it; without an election (one replica), just
    `work()`: what each piece of leader-only work (status, ACME) starts with."""
    if election is None:
        await work()
    else:
        await election.run_as_leader(work)

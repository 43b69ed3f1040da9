"""Leader election's decisions on a coordination.k8s.io/v1 Lease. Pure: the Lease read, the
local clock and the wall clock come in; what to do and what to write go out.

The semantics are client-go's `tools/leaderelection` (tryAcquireOrRenew, release):
- A candidate takes the Lease when there is none (create), when nobody holds it
  (`holderIdentity` empty: released), or when the record has not changed for
  `leaseDurationSeconds` of the candidate's *own* clock, counted from the moment it first saw
  the record as it is (`Elector.observed_at`). The holder's `renewTime` is never compared with
  the local clock: clocks of different machines may disagree by any amount; only their rates
  must roughly agree (client-go's doc.go: tolerant to skew, not to skew rate).
- The holder renews every retry period. It counts as leader until `renew_deadline` after the
  start of its last successful write: everyone else waits `lease_duration` (longer) after
  *seeing* that write, which came after the start, so the holder stops before a successor
  starts (`Timing` refuses settings where that does not hold).
- Every write carries the resourceVersion it read (kroute.watch.leader), so of two candidates
  deciding on the same record one write fails with a conflict: that one lost the round.
- Every claim changes the record (`renewTime` moves forward at least a microsecond): a write
  that changed nothing would keep the resourceVersion and the observers' clocks running.
- Release (client-go ReleaseOnCancel) empties `holderIdentity` with a one-second duration, so
  a successor need not wait out the term; `leaseTransitions` counts changes of holder.
"""

from __future__ import annotations

import datetime
import enum
import math
from typing import Any

import attrs

from kroute.errors import ConfigError

#: client-go's JitterFactor: a candidate waits between 1 and 2.2 retry periods.
JITTER_FACTOR = 1.2
_TICK = datetime.timedelta(microseconds=1)


@attrs.frozen
class Timing:
    """Lease duration, renew deadline and retry period (seconds); client-go's defaults, and
    its checks: lease_duration > renew_deadline > JITTER_FACTOR * retry_period > 0."""

    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __attrs_post_init__(self) -> None:
        if not self.retry_period > 0:
            raise ConfigError(f"retry_period must be > 0, not {self.retry_period}")
        if not self.renew_deadline > JITTER_FACTOR * self.retry_period:
            raise ConfigError(f"renew_deadline ({self.renew_deadline}) must be greater than "
                              f"{JITTER_FACTOR} x retry_period ({self.retry_period})")  # fmt: skip
        if not self.lease_duration > self.renew_deadline:
            raise ConfigError(f"lease_duration ({self.lease_duration}) must be greater than "
                              f"renew_deadline ({self.renew_deadline})")  # fmt: skip

    @property
    def lease_seconds(self) -> int:
        """`leaseDurationSeconds` is whole seconds: rounded up, never below what we wait."""
        return math.ceil(self.lease_duration)


@attrs.frozen
class LeaseRecord:
    """The election fields of a Lease's spec (`holder` "" when nobody holds it)."""

    holder: str = ""
    duration: int = 0
    acquire_time: datetime.datetime | None = None
    renew_time: datetime.datetime | None = None
    transitions: int = 0

    @classmethod
    def from_lease(cls, lease: dict[str, Any]) -> LeaseRecord:
        """Read leniently, as client-go does: a missing or malformed field is empty (a duration
        of 0 has expired; such a Lease is taken over and rewritten whole)."""
        spec = lease.get("spec")
        spec = spec if isinstance(spec, dict) else {}
        holder = spec.get("holderIdentity")
        return cls(
            holder if isinstance(holder, str) else "",
            _count(spec.get("leaseDurationSeconds")),
            _time(spec.get("acquireTime")),
            _time(spec.get("renewTime")),
            _count(spec.get("leaseTransitions")),
        )

    def to_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"leaseDurationSeconds": self.duration,
                                "leaseTransitions": self.transitions}  # fmt: skip
        if self.holder:
            spec["holderIdentity"] = self.holder
        for key, value in (("acquireTime", self.acquire_time), ("renewTime", self.renew_time)):
            if value is not None:  # MicroTime: RFC 3339 with microseconds, UTC
                spec[key] = value.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return spec


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _time(value: object) -> datetime.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)


class Action(enum.Enum):
    """What one round does: write a claim (ACQUIRE: create or take over; RENEW: as holder),
    nothing (WAIT: someone else holds a live lease), or stop leading at once (LOST)."""

    ACQUIRE = "acquire"
    RENEW = "renew"
    WAIT = "wait"
    LOST = "lost"


@attrs.frozen
class Elector:
    """One candidate's memory between rounds. Times are the local monotonic clock."""

    identity: str
    #: the record last seen (or written), and when it was first seen as it is
    observed: LeaseRecord | None = None
    observed_at: float = -math.inf
    #: when our last successful claim started; None while not leading
    renewed_at: float | None = None

    def leading(self, now: float, timing: Timing) -> bool:
        return self.renewed_at is not None and now < self.valid_until(timing)

    def valid_until(self, timing: Timing) -> float:
        """When leadership ends unless renewed (-inf while not leading)."""
        return -math.inf if self.renewed_at is None else self.renewed_at + timing.renew_deadline

    def expires_at(self) -> float:
        """When the observed holder's term ends by our clock (-inf: free now)."""
        if self.observed is None or not self.observed.holder:
            return -math.inf
        return self.observed_at + self.observed.duration

    def resign(self) -> Elector:
        """Not leading any more (lost, or stopping)."""
        return attrs.evolve(self, renewed_at=None)

    def observe(self, record: LeaseRecord | None, now: float) -> Elector:
        """The record just read: the clock restarts only when it changed (client-go compares
        the whole record; `renewTime` moves on every renewal)."""
        if record == self.observed:
            return self
        return attrs.evolve(self, observed=record, observed_at=now)


def decide(
    state: Elector, record: LeaseRecord | None, now: float, timing: Timing
) -> tuple[Action, Elector]:
    """One round: `record` is the Lease as just read (None: there is none), `now` the local
    clock when the round started."""
    state = state.observe(record, now)
    if state.renewed_at is not None:
        if now >= state.valid_until(timing) or record is None or record.holder != state.identity:
            # Too late to renew, or somebody else wrote the Lease: stop at once.
            return Action.LOST, state.resign()
        return Action.RENEW, state
    if record is None or record.holder in ("", state.identity) or now >= state.expires_at():
        return Action.ACQUIRE, state
    return Action.WAIT, state


def claim(
    record: LeaseRecord | None, identity: str, wall: datetime.datetime, timing: Timing
) -> LeaseRecord:
    """The record to write to take or keep the Lease: a holder keeps its `acquireTime` and the
    count of transitions; a new holder starts a term and adds one (0 on a new Lease)."""
    renew = _after(wall, record.renew_time if record else None)
    if record is not None and record.holder == identity:
        return LeaseRecord(identity, timing.lease_seconds, record.acquire_time or renew, renew,
                           record.transitions)  # fmt: skip
    transitions = record.transitions + 1 if record is not None else 0
    return LeaseRecord(identity, timing.lease_seconds, renew, renew, transitions)


def release(record: LeaseRecord, wall: datetime.datetime) -> LeaseRecord:
    """The record that gives the Lease up: no holder, a one-second term (client-go)."""
    at = _after(wall, record.renew_time)
    return LeaseRecord("", 1, at, at, record.transitions)


def succeeded(state: Elector, written: LeaseRecord, started: float) -> Elector:
    """After a successful write started at `started`: we hold what we wrote since then."""
    leading = written.holder == state.identity
    return attrs.evolve(state, observed=written, observed_at=started,
                        renewed_at=started if leading else None)  # fmt: skip


def next_round(state: Elector, now: float, timing: Timing, jitter: float) -> float:
    """Seconds until the next round: a retry period for the holder; for a candidate, a
    retry period stretched by `jitter` (0..1, drawn by the caller) times JITTER_FACTOR
    (client-go's JitterUntil), but no later than the moment a live observed term ends."""
    if state.renewed_at is not None:
        return timing.retry_period
    wait = timing.retry_period * (1.0 + JITTER_FACTOR * jitter)
    until_expiry = state.expires_at() - now
    return min(wait, until_expiry) if until_expiry > 0 else wait


def _after(wall: datetime.datetime, previous: datetime.datetime | None) -> datetime.datetime:
    return wall if previous is None or wall > previous else previous + _TICK

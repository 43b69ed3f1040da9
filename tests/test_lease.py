"""Leader election's decisions (kroute.watch.lease), offline: the table of cases, hostile
Leases, and a simulated API server on which any interleaving of two candidates' reads, writes,
releases and clock steps never has two leaders at once."""

from __future__ import annotations

import datetime
from typing import Any

import attrs
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from kroute.errors import ConfigError
from kroute.watch.lease import (
    JITTER_FACTOR,
    Action,
    Elector,
    LeaseRecord,
    Timing,
    claim,
    decide,
    next_round,
    release,
    succeeded,
)

T = Timing(lease_duration=15, renew_deadline=10, retry_period=2)
EPOCH = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
LONG_AGO = datetime.datetime(2001, 1, 1, tzinfo=datetime.UTC)


def held(holder: str, renewed: datetime.datetime = EPOCH, transitions: int = 3) -> LeaseRecord:
    return LeaseRecord(holder, 15, LONG_AGO, renewed, transitions)


def leader(me: str = "me", at: float = 100.0) -> Elector:
    """An elector that wrote its claim successfully at `at`."""
    return succeeded(Elector(me), held(me), at)


# -- the table --------------------------------------------------------------------------------


def test_no_lease_is_created_with_no_transitions() -> None:
    action, state = decide(Elector("me"), None, 5.0, T)
    assert action is Action.ACQUIRE
    written = claim(None, "me", EPOCH, T)
    assert written == LeaseRecord("me", 15, EPOCH, EPOCH, 0)
    assert succeeded(state, written, 5.0).leading(5.0 + 9.9, T)


def test_a_released_lease_is_taken_at_once_and_counts_a_transition() -> None:
    freed = release(held("old"), EPOCH)
    assert (freed.holder, freed.duration, freed.transitions) == ("", 1, 3)
    action, _ = decide(Elector("me", observed=freed, observed_at=0.0), freed, 0.0, T)
    assert action is Action.ACQUIRE
    assert claim(freed, "me", EPOCH, T).transitions == 4


def test_a_live_lease_of_another_is_waited_for_a_full_duration_from_when_it_was_seen() -> None:
    record = held("other")
    action, state = decide(Elector("me"), record, 50.0, T)
    assert action is Action.WAIT
    assert state.observed_at == 50.0
    assert decide(state, record, 64.9, T)[0] is Action.WAIT
    action, state = decide(state, record, 65.0, T)
    assert action is Action.ACQUIRE
    later = EPOCH + datetime.timedelta(seconds=15)
    taken = claim(record, "me", later, T)
    assert (taken.holder, taken.transitions, taken.acquire_time) == ("me", 4, later)


def test_a_renewal_restarts_the_wait() -> None:
    _, state = decide(Elector("me"), held("other"), 50.0, T)
    renewed = held("other", EPOCH + datetime.timedelta(seconds=2))
    action, state = decide(state, renewed, 64.0, T)
    assert action is Action.WAIT
    assert state.observed_at == 64.0
    assert decide(state, renewed, 78.9, T)[0] is Action.WAIT


def test_the_holders_clock_is_never_trusted() -> None:
    """A renewTime decades old (a holder with a wrong clock) is still a live lease when it
    has just changed; one in the future does not extend it."""
    assert decide(Elector("me"), held("other", LONG_AGO), 0.0, T)[0] is Action.WAIT
    future = held("other", datetime.datetime(2999, 1, 1, tzinfo=datetime.UTC))
    _, state = decide(Elector("me"), future, 0.0, T)
    assert decide(state, future, 15.0, T)[0] is Action.ACQUIRE


def test_the_holder_renews_keeping_its_term() -> None:
    state = leader()
    action, state = decide(state, state.observed, 102.0, T)
    assert action is Action.RENEW
    renewed = claim(state.observed, "me", EPOCH + datetime.timedelta(seconds=2), T)
    assert (renewed.acquire_time, renewed.transitions) == (LONG_AGO, 3)
    assert renewed.renew_time == EPOCH + datetime.timedelta(seconds=2)


@pytest.mark.parametrize("found", [held("other"), LeaseRecord(), None], ids=["taken", "released", "deleted"])  # fmt: skip
def test_a_holder_whose_lease_was_written_by_another_has_lost(found: LeaseRecord | None) -> None:
    action, state = decide(leader(), found, 101.0, T)
    assert action is Action.LOST
    assert not state.leading(101.0, T)


def test_a_holder_past_its_renew_deadline_has_lost() -> None:
    state = leader(at=100.0)
    assert state.leading(109.9, T)
    assert not state.leading(110.0, T)
    action, state = decide(state, state.observed, 110.0, T)
    assert action is Action.LOST
    assert state.renewed_at is None


def test_a_lease_still_naming_us_is_taken_back_keeping_its_term() -> None:
    """After losing by the deadline (or a restart with the same identity): the record names
    us, nobody wrote since, so nobody else led; the write's resourceVersion guards the rest."""
    mine = held("me")
    assert decide(Elector("me"), mine, 0.0, T)[0] is Action.ACQUIRE
    assert claim(mine, "me", EPOCH, T).transitions == 3


def test_every_claim_changes_the_record_even_when_the_wall_clock_does_not_move() -> None:
    """Else the API server keeps the resourceVersion, observers keep their clocks running
    and take over from a live holder."""
    first = claim(None, "me", EPOCH, T)
    again = claim(first, "me", EPOCH, T)
    assert again != first
    assert again.renew_time > first.renew_time  # type: ignore[operator]
    backwards = claim(again, "me", EPOCH - datetime.timedelta(hours=1), T)
    assert backwards.renew_time > again.renew_time  # type: ignore[operator]
    assert release(backwards, EPOCH).renew_time > backwards.renew_time  # type: ignore[operator]


def test_next_round() -> None:
    assert next_round(leader(), 100.0, T, 0.7) == 2.0
    candidate = Elector("me")
    assert next_round(candidate, 0.0, T, 0.0) == 2.0
    assert next_round(candidate, 0.0, T, 1.0) == pytest.approx(2.0 * (1 + JITTER_FACTOR))
    waiting = Elector("me", observed=held("other"), observed_at=0.0)
    assert next_round(waiting, 14.5, T, 1.0) == 0.5  # wakes as the term ends
    assert next_round(waiting, 20.0, T, 0.0) == 2.0  # expired: the usual pace


@pytest.mark.parametrize(
    ("lease", "renew", "retry"), [(15, 15, 2), (10, 15, 2), (15, 2.4, 2), (15, 10, 0), (15, 10, -1)]
)
def test_timing_refuses_settings_that_allow_two_leaders(lease: float, renew: float, retry: float) -> None:  # fmt: skip
    with pytest.raises(ConfigError, match="must be"):
        Timing(lease, renew, retry)


def test_lease_seconds_round_up() -> None:
    assert Timing(2.5, 2, 0.5).lease_seconds == 3


# -- the Lease's spec ---------------------------------------------------------------------------


def test_spec_round_trip() -> None:
    record = LeaseRecord("me", 15, EPOCH, EPOCH + datetime.timedelta(microseconds=7), 2)
    spec = record.to_spec()
    assert spec == {"holderIdentity": "me", "leaseDurationSeconds": 15, "leaseTransitions": 2,
                    "acquireTime": "2030-01-01T00:00:00.000000Z",
                    "renewTime": "2030-01-01T00:00:00.000007Z"}  # fmt: skip
    assert LeaseRecord.from_lease({"spec": spec}) == record
    assert "holderIdentity" not in LeaseRecord().to_spec()


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
    max_leaves=10,
)
SPEC_KEYS = st.sampled_from(["holderIdentity", "leaseDurationSeconds", "acquireTime",
                             "renewTime", "leaseTransitions"])  # fmt: skip


@given(st.one_of(JSON, st.dictionaries(st.just("spec"), st.dictionaries(SPEC_KEYS, JSON))))
def test_any_lease_reads_without_error_and_writes_back_valid(lease: Any) -> None:
    """A Lease written by anything else is read leniently; a malformed one counts as expired
    (duration 0) and claiming it writes a valid record."""
    record = LeaseRecord.from_lease(lease if isinstance(lease, dict) else {"spec": lease})
    assert record.duration >= 0
    assert record.transitions >= 0
    taken = claim(record, "me", EPOCH, T)
    assert taken.duration == 15
    assert taken.holder == "me"
    assert LeaseRecord.from_lease({"spec": taken.to_spec()}) == taken


# -- two candidates on a simulated API server ---------------------------------------------------


@attrs.define
class Server:
    record: LeaseRecord | None = None
    version: int = 0

    def write(self, record: LeaseRecord, version: int) -> bool:
        """A write at the resourceVersion read: refused (409) when the Lease changed since;
        one that changes nothing keeps the resourceVersion (as the API server does)."""
        if version != self.version:
            return False
        if record != self.record:
            self.record, self.version = record, self.version + 1
        return True


@attrs.define
class Candidate:
    state: Elector
    #: a round in flight: (started, record read, version read)
    pending: tuple[float, LeaseRecord | None, int] | None = None
    #: the resourceVersion of its last successful write (the fast path writes at it)
    written: int = -1
    #: its wall clock minus the shared monotonic one (NTP may step it any way)
    skew: float = 0.0

    def wall(self, now: float) -> datetime.datetime:
        return EPOCH + datetime.timedelta(seconds=now + self.skew)


#: (what, who, then how far the clock moves); whole rounds most often.
STEPS = st.lists(
    st.tuples(
        st.sampled_from(["round", "round", "round", "read", "write", "fast", "release", "skew"]),
        st.sampled_from([0, 1]),
        st.sampled_from([0.0, 0.5, 1.0, 2.0]),
    ),
    max_size=60,
)


def finish_round(me: Candidate, server: Server, now: float, timing: Timing) -> None:
    """The answer to a candidate's read arrives: decide on it, write the claim at the version
    read. A holder whose answer came after its renew deadline has given up meanwhile (its
    round was cancelled), though the server applied the write."""
    assert me.pending is not None
    (started, record, version), me.pending = me.pending, None
    was_leading = me.state.renewed_at is not None
    action, me.state = decide(me.state, record, started, timing)
    if action not in (Action.ACQUIRE, Action.RENEW):
        return
    written = claim(record, me.state.identity, me.wall(now), timing)
    if not server.write(written, version):
        return  # 409: someone else wrote first
    me.written = server.version
    if was_leading and now >= me.state.valid_until(timing):
        me.state = me.state.resign()
    else:
        me.state = succeeded(me.state, written, started)


TIGHT = Timing(2, 1.5, 1)


@settings(max_examples=1000)
@given(STEPS, st.sampled_from([T, Timing(3, 2, 0.5), TIGHT]))
# a's wall clock stepped back to its last renewTime: the renewal must still change the record
@example([("round", 0, 0.0), ("round", 1, 0.0), ("skew", 0, 1.0), ("round", 0, 1.0),
          ("round", 1, 0.0)], TIGHT)  # fmt: skip
# b takes over the moment a's term ends by b's clock, not a moment earlier
@example([("round", 0, 0.0), ("round", 1, 1.0), ("round", 1, 0.5), ("round", 1, 0.0)], TIGHT)
# a's renewal is read before its deadline and answered after it, while b takes over
@example([("round", 0, 0.0), ("round", 1, 1.0), ("read", 0, 1.0), ("round", 1, 0.0),
          ("write", 0, 0.0)], TIGHT)  # fmt: skip
def test_never_two_leaders(steps: list[tuple[str, int, float]], timing: Timing) -> None:
    """Each candidate's round is a read, then later a write decided on what it read, with
    any number of the other's steps and of clock steps in between (a slow request; "round"
    is both at once). A holder may also renew blindly (the fast path) or release; wall clocks
    may be stepped back ("skew"). At every instant at most one candidate believes it leads."""
    server = Server()
    now = 0.0
    people = [Candidate(Elector("a")), Candidate(Elector("b"))]
    for step, who, dt in steps:
        me = people[who]
        if step in ("read", "round"):
            me.pending = (now, server.record, server.version)
        if step == "fast" and me.state.renewed_at is not None:
            me.pending = (now, me.state.observed, me.written)
        if step in ("write", "round") and me.pending is not None:
            finish_round(me, server, now, timing)
        if step == "release":
            me.state = me.state.resign()
            if server.record is not None and server.record.holder == me.state.identity:
                server.write(release(server.record, me.wall(now)), server.version)
        if step == "skew":
            me.skew -= dt
        leading = [p.state.identity for p in people if p.state.leading(now, timing)]
        assert len(leading) <= 1, (now, leading, server)
        now += dt
        leading = [p.state.identity for p in people if p.state.leading(now, timing)]
        assert len(leading) <= 1, (now, leading, server)

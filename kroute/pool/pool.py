"""Pool: the endpoints of one backend, their health, and the balancer that picks among them.

Pure and synchronous: endpoints come in as values (from `ServiceEndpoints` deltas, or from
anywhere), requests' outcomes and probe results are reported with the time they happened, and
`pick` takes the time and the random source. Health, balancer membership and in-flight counts are
kept per endpoint key across every update: an EndpointSlice change or a route-table rebuild never
resets them (Traefik's complaint: health lost on every reload).
"""

from __future__ import annotations

import hashlib
import heapq
import logging
import random
from collections.abc import Callable, Collection, Iterable

import attrs

from kroute.pool.balance import Balancer, RoundRobin
from kroute.pool.endpoints import Delta, Endpoint, EndpointKey
from kroute.pool.health import EndpointHealth, HealthConfig, Outcome

_log = logging.getLogger(__name__)

#: Called with (added keys, removed keys) whenever endpoints join or leave the pool.
Listener = Callable[[tuple[EndpointKey, ...], tuple[EndpointKey, ...]], None]


def sticky_value(key: EndpointKey) -> str:
    """The sticky-cookie value for an endpoint: a hash, so addresses are not disclosed."""
    return hashlib.blake2b(f"{key[0]}|{key[1]}".encode(), digest_size=8).hexdigest()


@attrs.frozen
class Pick:
    """The endpoint for one request; `panic` when health was ignored because none is healthy."""

    endpoint: Endpoint
    panic: bool = False

    @property
    def sticky(self) -> str:
        """The value of a sticky cookie that brings the next request back here."""
        return sticky_value(self.endpoint.key)


@attrs.frozen
class EndpointStatistics:
    """One endpoint as the admin API shows it."""

    endpoint: str
    state: str
    reason: str
    since: float
    in_flight: int
    ejections: int
    last_probe: str
    recent_failures: tuple[tuple[float, str], ...]
    #: Leaving or rejoining the rotation, oldest first: (when, state after, reason).
    transitions: tuple[tuple[float, str, str], ...] = ()


@attrs.frozen
class PoolStatistics:
    """A pool as the admin API shows it."""

    name: str
    endpoints: tuple[EndpointStatistics, ...]
    in_rotation: int
    panic: bool
    picks: int
    unavailable: int


@attrs.define(eq=False)
class _Member:
    endpoint: Endpoint
    health: EndpointHealth
    in_flight: int = 0
    #: The answer `Pool.pick` gives for this endpoint (immutable, so made once, not per pick).
    pick: Pick = attrs.field(init=False)

    @pick.default
    def _pick(self) -> Pick:
        return Pick(self.endpoint)


class Pool:
    """The endpoints of one backend (a Service port, or anything a user feeds it)."""

    def __init__(
        self,
        name: str,
        *,
        balancer: Balancer | None = None,
        health: HealthConfig = HealthConfig(),
    ) -> None:
        self.name = name
        self.health = health
        self._balancer: Balancer = balancer if balancer is not None else RoundRobin()
        self._members: dict[EndpointKey, _Member] = {}
        self._all: list[EndpointKey] = []
        self._position: dict[EndpointKey, int] = {}
        self._sticky: dict[str, EndpointKey] = {}
        self._ejections: list[tuple[float, EndpointKey]] = []
        self._ejected = 0
        self._listeners: list[Listener] = []
        self._picks = 0
        self._unavailable = 0
        self._panic = False

    # -- membership ---------------------------------------------------------------------

    def subscribe(self, listener: Listener) -> None:
        """Be told when endpoints join or leave (the active prober uses this)."""
        self._listeners.append(listener)

    def apply(self, delta: Delta, *, now: float) -> None:
        """Apply a change: cost proportional to the change, not to the pool."""
        for key in delta.removed:
            self._drop(key)
        added = []
        for endpoint in delta.added:
            member = self._members.get(endpoint.key)
            if member is not None:
                member.endpoint = endpoint  # conditions changed; state is kept
                member.pick = Pick(endpoint)
                continue
            self._members[endpoint.key] = _Member(endpoint, EndpointHealth(since=now))
            self._position[endpoint.key] = len(self._all)
            self._all.append(endpoint.key)
            self._sticky[sticky_value(endpoint.key)] = endpoint.key
            self._balancer.add(endpoint.key)
            added.append(endpoint.key)
        if delta.removed:
            self._readmit(now, over_cap=True)
        if added or delta.removed:
            for listener in self._listeners:
                listener(tuple(added), tuple(delta.removed))

    def replace(self, endpoints: Iterable[Endpoint], *, now: float) -> None:
        """Make the pool hold exactly `endpoints` (a full diff, for users without deltas)."""
        wanted = {e.key: e for e in endpoints}
        removed = tuple(k for k in self._members if k not in wanted)
        added = tuple(e for k, e in wanted.items() if self._members.get(k, None) is None
                      or self._members[k].endpoint != e)  # fmt: skip
        self.apply(Delta(added, removed), now=now)

    def _drop(self, key: EndpointKey) -> None:
        member = self._members.pop(key, None)
        if member is None:
            return
        if member.health.ejected_until is not None:
            self._ejected -= 1
        self._balancer.remove(key)
        i = self._position.pop(key)
        last = self._all.pop()
        if i < len(self._all):
            self._all[i] = last
            self._position[last] = i
        del self._sticky[sticky_value(key)]

    def endpoints(self) -> tuple[Endpoint, ...]:
        return tuple(m.endpoint for m in self._members.values())

    def __len__(self) -> int:
        return len(self._members)

    # -- picking ------------------------------------------------------------------------

    def _readmit(self, now: float, *, over_cap: bool = False) -> None:
        """Readmit endpoints whose ejection is over (or, `over_cap`, the longest-ejected ones
        while a shrunken pool holds more ejected endpoints than its cap allows)."""
        heap = self._ejections
        while heap and (
            heap[0][0] <= now
            or (over_cap and self._ejected > self.health.passive.cap(len(self._members)))
        ):
            until, key = heapq.heappop(heap)
            member = self._members.get(key)
            if member is None or member.health.ejected_until != until:
                continue
            expired = until <= now
            member.health.readmit(now, "ejection time over" if expired else "ejection cap")
            self._ejected -= 1
            if member.health.in_rotation:
                self._balancer.add(key)
                self._transition(key, member)

    def pick(
        self,
        *,
        now: float,
        rng: random.Random,
        hash_key: int | None = None,
        exclude: Collection[EndpointKey] = (),
        sticky: str | None = None,
    ) -> Pick | None:
        """The endpoint for the next request, or None when there is none to give (a 503).

        `exclude` lists endpoints a retry must avoid; `sticky` is the value of the request's
        sticky cookie, honoured while that endpoint is in rotation.
        """
        if self._ejections:
            self._readmit(now)
        self._picks += 1
        if sticky is not None:
            key = self._sticky.get(sticky)
            if key is not None and key not in exclude and self._members[key].health.in_rotation:
                return self._members[key].pick
        key = self._balancer.pick(rng, hash_key=hash_key, exclude=exclude, load=self._load)
        if key is not None:
            self._panic = False
            return self._members[key].pick
        if len(self._balancer):
            self._panic = False
        elif self._all and self.health.panic:
            # Panic routing (Envoy): nothing is in rotation, so ignore health rather than fail.
            self._panic = True
            for _ in range(4):
                key = self._all[rng.randrange(len(self._all))]
                if key not in exclude:
                    return Pick(self._members[key].endpoint, panic=True)
            rest = [k for k in self._all if k not in exclude]
            if rest:
                return Pick(self._members[rng.choice(rest)].endpoint, panic=True)
        self._unavailable += 1
        return None

    def _load(self, key: EndpointKey) -> int:
        return self._members[key].in_flight

    # -- outcomes -----------------------------------------------------------------------

    def begin(self, key: EndpointKey) -> None:
        """A request was sent to `key` (counts towards in-flight)."""
        member = self._members.get(key)
        if member is not None:
            member.in_flight += 1

    def abandon(self, key: EndpointKey) -> None:
        """A request to `key` ended with no verdict on the endpoint (the client went away)."""
        member = self._members.get(key)
        if member is not None:
            member.in_flight = max(0, member.in_flight - 1)

    def end(self, key: EndpointKey, outcome: Outcome, *, now: float) -> None:
        """A request to `key` ended; passive health learns from how."""
        member = self._members.get(key)
        if member is None:
            return  # removed while the request was in flight
        member.in_flight = max(0, member.in_flight - 1)
        if outcome is Outcome.SUCCESS and not member.health.streak_5xx:
            return  # (the usual case: no failure streak for a success to end)
        may_eject = outcome is not Outcome.SUCCESS and (
            self._ejected < self.health.passive.cap(len(self._members))
        )
        if member.health.outcome(outcome, now, self.health.passive, may_eject=may_eject):
            self._ejected += 1
            assert member.health.ejected_until is not None
            heapq.heappush(self._ejections, (member.health.ejected_until, key))
            self._balancer.remove(key)
            self._transition(key, member)

    def probed(self, key: EndpointKey, ok: bool, detail: str, *, now: float) -> None:
        """An active probe of `key` finished."""
        member = self._members.get(key)
        if member is None or self.health.active is None:
            return
        if member.health.probe(ok, detail, now, self.health.active):
            if member.health.in_rotation:
                self._balancer.add(key)
            else:
                self._balancer.remove(key)
            self._transition(key, member)

    def _transition(self, key: EndpointKey, member: _Member) -> None:
        """Log an endpoint leaving or rejoining the rotation, with the reason, and keep it
        among the endpoint's recent transitions (health transitions are what an operator looks
        for when a backend misbehaves). Every caller has just set the reason and its time."""
        health = member.health
        health.transitions.append((health.since, health.state, health.reason))
        level = logging.INFO if health.in_rotation else logging.WARNING
        state = "back in rotation" if health.in_rotation else "out of rotation"
        _log.log(level, "%s: endpoint %s:%d %s: %s", self.name, key[0], key[1], state,
                 health.reason)  # fmt: skip

    # -- reporting ----------------------------------------------------------------------

    def statistics(self, *, now: float) -> PoolStatistics:
        self._readmit(now)
        rows = []
        for member in self._members.values():
            health = member.health
            rows.append(
                EndpointStatistics(
                    endpoint=str(member.endpoint),
                    state=health.state,
                    reason=health.reason,
                    since=health.since,
                    in_flight=member.in_flight,
                    ejections=health.ejections,
                    last_probe=health.last_probe,
                    recent_failures=tuple(health.recent_failures),
                    transitions=tuple(health.transitions),
                )
            )
        return PoolStatistics(
            name=self.name,
            endpoints=tuple(rows),
            in_rotation=len(self._balancer),
            panic=self._panic,
            picks=self._picks,
            unavailable=self._unavailable,
        )

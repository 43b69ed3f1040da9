"""Balancers: which endpoint takes the next request. Pure; the random source is passed in.

Every balancer holds the endpoints currently in rotation (the pool adds and removes them as
health changes) and supports `add`, `remove` and `pick` in time that does not grow with the
number of endpoints (RoundRobin, LeastRequest: O(1); WeightedRoundRobin, RingHash: O(log n) or
better). `exclude` names endpoints a retry must avoid (the one that just failed).
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
import itertools
import random
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Protocol

import attrs

from kroute.pool.endpoints import EndpointKey

Load = Callable[[EndpointKey], int]

_NONE: frozenset[EndpointKey] = frozenset()


class Balancer(Protocol):
    """The seam between a pool and its balancing policy."""

    def add(self, key: EndpointKey, weight: int = 1) -> None: ...

    def remove(self, key: EndpointKey) -> None: ...

    def __len__(self) -> int: ...

    def pick(
        self,
        rng: random.Random,
        *,
        hash_key: int | None = None,
        exclude: Collection[EndpointKey] = _NONE,
        load: Load | None = None,
    ) -> EndpointKey | None: ...


class _IndexedSet:
    """Keys in a list with O(1) add, remove (swap with last) and random access."""

    def __init__(self) -> None:
        self.keys: list[EndpointKey] = []
        self.index: dict[EndpointKey, int] = {}

    def add(self, key: EndpointKey) -> bool:
        if key in self.index:
            return False
        self.index[key] = len(self.keys)
        self.keys.append(key)
        return True

    def remove(self, key: EndpointKey) -> bool:
        i = self.index.pop(key, None)
        if i is None:
            return False
        last = self.keys.pop()
        if i < len(self.keys):
            self.keys[i] = last
            self.index[last] = i
        return True

    def __len__(self) -> int:
        return len(self.keys)


class RoundRobin:
    """Each endpoint in turn; weights are ignored."""

    def __init__(self) -> None:
        self._set = _IndexedSet()
        self._cursor = -1

    def add(self, key: EndpointKey, weight: int = 1) -> None:
        self._set.add(key)

    def remove(self, key: EndpointKey) -> None:
        self._set.remove(key)

    def __len__(self) -> int:
        return len(self._set)

    def pick(
        self,
        rng: random.Random,
        *,
        hash_key: int | None = None,
        exclude: Collection[EndpointKey] = _NONE,
        load: Load | None = None,
    ) -> EndpointKey | None:
        keys = self._set.keys
        if keys and not exclude:  # (the first attempt: no endpoint to avoid)
            self._cursor = cursor = (self._cursor + 1) % len(keys)
            return keys[cursor]
        for _ in range(len(keys)):
            self._cursor = (self._cursor + 1) % len(keys)
            key = keys[self._cursor]
            if key not in exclude:
                return key
        return None


class WeightedRoundRobin:
    """Smooth weighted round robin, scheduled as WF2Q (worst-case fair weighted fair queueing).

    Each endpoint's turns are spaced 1/weight apart in virtual time; of the endpoints whose
    next turn has started (start <= virtual time), the one whose turn ends first goes next, and
    virtual time moves on by 1/total weight per pick. Like nginx's smooth weighted round robin,
    after any N picks each endpoint has had N * weight / total turns give or take less than one,
    so turns interleave rather than come in bursts (weights 5:1:1 give a b a a c a a); unlike
    nginx's, a pick costs O(log n), not O(n).
    """

    def __init__(self) -> None:
        self._eligible: list[tuple[float, int, EndpointKey]] = []  # (finish, seq, key)
        self._waiting: list[tuple[float, int, EndpointKey]] = []  # (start, seq, key)
        self._live: dict[EndpointKey, tuple[int, int]] = {}  # key -> (seq, weight)
        self._total = 0
        self._now = 0.0
        self._seq = itertools.count()

    def add(self, key: EndpointKey, weight: int = 1) -> None:
        self.remove(key)
        if weight <= 0:
            return
        seq = next(self._seq)
        self._live[key] = (seq, weight)
        self._total += weight
        heapq.heappush(self._eligible, (self._now + 1.0 / weight, seq, key))

    def remove(self, key: EndpointKey) -> None:
        live = self._live.pop(key, None)
        if live is None:
            return
        self._total -= live[1]
        if len(self._eligible) + len(self._waiting) > 2 * len(self._live) + 16:
            self._eligible = [e for e in self._eligible if self._valid(e)]
            self._waiting = [e for e in self._waiting if self._valid(e)]
            heapq.heapify(self._eligible)
            heapq.heapify(self._waiting)

    def _valid(self, entry: tuple[float, int, EndpointKey]) -> bool:
        live = self._live.get(entry[2])
        return live is not None and live[0] == entry[1]

    def __len__(self) -> int:
        return len(self._live)

    def pick(
        self,
        rng: random.Random,
        *,
        hash_key: int | None = None,
        exclude: Collection[EndpointKey] = _NONE,
        load: Load | None = None,
    ) -> EndpointKey | None:
        eligible, waiting = self._eligible, self._waiting
        held: list[tuple[float, int, EndpointKey]] = []
        chosen = None
        while True:
            while waiting and waiting[0][0] <= self._now + 1e-9:
                start, seq, key = heapq.heappop(waiting)
                if self._valid((start, seq, key)):
                    heapq.heappush(eligible, (start + 1.0 / self._live[key][1], seq, key))
            while eligible and not self._valid(eligible[0]):
                heapq.heappop(eligible)
            if not eligible:
                while waiting and not self._valid(waiting[0]):
                    heapq.heappop(waiting)
                if not waiting:
                    break
                self._now = waiting[0][0]  # nothing has started: jump to the next start
                continue
            entry = heapq.heappop(eligible)
            if entry[2] not in exclude:
                chosen = entry
                break
            held.append(entry)
        for entry in held:
            heapq.heappush(eligible, entry)
        if chosen is None:
            return None
        finish, seq, key = chosen
        heapq.heappush(waiting, (finish, seq, key))
        self._now += 1.0 / self._total
        return key


class LeastRequest:
    """Power of two choices: of two endpoints drawn at random (by weight), the less loaded one.

    Load is in-flight requests divided by weight (Envoy's least-request with the power-of-two
    choice), so a heavier endpoint is both drawn more often and allowed more in flight.
    """

    def __init__(self) -> None:
        self._set = _IndexedSet()
        self._weights: dict[EndpointKey, int] = {}
        self._weight_counts: Counter[int] = Counter()
        self._cumulative: list[int] | None = None

    def add(self, key: EndpointKey, weight: int = 1) -> None:
        if self._set.add(key):
            self._weights[key] = weight
            self._weight_counts[weight] += 1
            self._cumulative = None

    def remove(self, key: EndpointKey) -> None:
        if self._set.remove(key):
            weight = self._weights.pop(key)
            self._weight_counts[weight] -= 1
            if not self._weight_counts[weight]:
                del self._weight_counts[weight]
            self._cumulative = None

    def __len__(self) -> int:
        return len(self._set)

    def _draw(self, rng: random.Random) -> EndpointKey:
        keys = self._set.keys
        if len(self._weight_counts) == 1:
            return keys[rng.randrange(len(keys))]
        if self._cumulative is None:
            self._cumulative = list(itertools.accumulate(self._weights[k] for k in keys))
        point = rng.randrange(self._cumulative[-1])
        return keys[bisect.bisect_right(self._cumulative, point)]

    def pick(
        self,
        rng: random.Random,
        *,
        hash_key: int | None = None,
        exclude: Collection[EndpointKey] = _NONE,
        load: Load | None = None,
    ) -> EndpointKey | None:
        keys = self._set.keys
        if not keys:
            return None
        candidates = []
        for _ in range(8):
            key = self._draw(rng)
            if key not in exclude and key not in candidates:
                candidates.append(key)
                if len(candidates) == 2 or len(candidates) == len(keys):
                    break
        if not candidates:
            candidates = [k for k in keys if k not in exclude][:2]
            if not candidates:
                return None
        if len(candidates) == 1 or load is None:
            return candidates[0]
        a, b = candidates
        score_a = (load(a) + 1) / self._weights[a]
        score_b = (load(b) + 1) / self._weights[b]
        return b if score_b < score_a else a


def hash64(text: str) -> int:
    """A stable 64-bit hash (the same in every process, unlike `hash()`)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


class RingHash:
    """Consistent hashing on a ring of virtual nodes (Ketama-style, as Envoy's ring_hash).

    Each endpoint owns `replicas * weight` points; a request key goes to the owner of the next
    point clockwise. When one of n endpoints comes or goes only about 1/n of the keys move.
    The ring is cut into 4,096 fixed arcs, each a small sorted list, so adding or removing an
    endpoint costs its own points, not the size of the ring.
    """

    ARC_BITS = 12

    def __init__(self, replicas: int = 100) -> None:
        self.replicas = replicas
        self._arcs: list[list[tuple[int, EndpointKey]]] = [[] for _ in range(1 << self.ARC_BITS)]
        self._points: dict[EndpointKey, list[int]] = {}

    def _arc(self, point: int) -> list[tuple[int, EndpointKey]]:
        return self._arcs[point >> (64 - self.ARC_BITS)]

    def add(self, key: EndpointKey, weight: int = 1) -> None:
        if key in self._points:
            return
        host = f"[{key[0]}]" if ":" in key[0] else key[0]
        points = [hash64(f"{host}:{key[1]}#{i}") for i in range(self.replicas * max(weight, 1))]
        self._points[key] = points
        for point in points:
            bisect.insort(self._arc(point), (point, key))

    def remove(self, key: EndpointKey) -> None:
        for point in self._points.pop(key, []):
            arc = self._arc(point)
            arc.pop(bisect.bisect_left(arc, (point, key)))

    def __len__(self) -> int:
        return len(self._points)

    def pick(
        self,
        rng: random.Random,
        *,
        hash_key: int | None = None,
        exclude: Collection[EndpointKey] = _NONE,
        load: Load | None = None,
    ) -> EndpointKey | None:
        if not self._points:
            return None
        point = rng.getrandbits(64) if hash_key is None else hash_key
        arcs = self._arcs
        first = point >> (64 - self.ARC_BITS)
        seen: set[EndpointKey] = set()
        for step in range(len(arcs) + 1):
            arc = arcs[(first + step) % len(arcs)]
            start = bisect.bisect_left(arc, (point, ("", -1))) if step == 0 else 0
            for _, key in arc[start:]:
                if key not in exclude:
                    return key
                seen.add(key)
                if len(seen) == len(self._points):
                    return None
        return None


@attrs.frozen
class HashOn:
    """Where the key for consistent hashing comes from: a header, a cookie or the client IP."""

    header: str | None = None
    cookie: str | None = None
    client_ip: bool = False

    def key(self, headers: Mapping[str, Sequence[str]], client_ip: str | None) -> int | None:
        """The hash of the request's key, or None (then the ring picks at random)."""
        if self.header is not None:
            values = headers.get(self.header.lower())
            return hash64(values[0]) if values else None
        if self.cookie is not None:
            value = cookie_value(headers, self.cookie)
            return None if value is None else hash64(value)
        if self.client_ip and client_ip:
            return hash64(client_ip)
        return None


def cookie_value(headers: Mapping[str, Sequence[str]], name: str) -> str | None:
    """The value of cookie `name` in the request's Cookie headers (RFC 6265 section 5.4)."""
    for header in headers.get("cookie", ()):
        for part in header.split(";"):
            key, sep, value = part.strip().partition("=")
            if sep and key == name:
                return value.strip('"')
    return None


BALANCERS: dict[str, Callable[[], Balancer]] = {
    "round-robin": RoundRobin,
    "weighted-round-robin": WeightedRoundRobin,
    "least-request": LeastRequest,
    "ring-hash": RingHash,
}


class WeightedSplit:
    """A traffic split across backends by weight (HTTPRoute backendRefs, IngressRoute services).

    Smooth and exact over time (weighted round robin), so a 90/10 canary gets 9 of every 10
    requests on the first backend, not 90% on average. Weight 0 takes nothing.
    """

    def __init__(self, weights: Sequence[int]) -> None:
        self._wrr = WeightedRoundRobin()
        for index, weight in enumerate(weights):
            if weight > 0:
                self._wrr.add(("", index), weight)

    def pick(self, rng: random.Random) -> int | None:
        """The index of the backend for the next request, None when every weight is 0."""
        key = self._wrr.pick(rng)
        return None if key is None else key[1]

"""Traffic: request rate, 5xx errors and latency per route and per Service over the last
minutes, for the dashboard's charts (`GET /api/traffic`).

Why not from Metrics: Prometheus counters are totals since the start, which a Prometheus server
turns into rates over time; the dashboard has to show the last minutes by itself, with no
server and no prometheus-client. So this observer keeps a rolling window of time buckets (10 s
each, 90 of them: 15 minutes by default) per (route, Service): in each, the requests, the 5xx
answers, the total seconds and a histogram of durations (Metrics' buckets), from which a read
adds up routes and Services and estimates percentiles as Prometheus' histogram_quantile does.

Cheap on the hot path: `forwarded` finds the current bucket by the identities of the decision's
route and backend (as Metrics does), and increments four numbers; the rest (a new bucket every
10 s, the labels) happens once per bucket. The AdminHandler adds one to the Router's observers,
so a gateway without an admin app pays nothing. Memory is bounded whatever the traffic: at most
`buckets` per series and `max_series` series (routes and Services come from configuration,
not requests; once full, series idle for the whole window make room, and new pairs are counted
under `OTHER`).

Time: a clock is passed in (`time.monotonic` by default) and reads take `now`.
"""

from __future__ import annotations

import bisect
import collections
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from kroute.gateway.metrics import DURATION_BUCKETS

if TYPE_CHECKING:
    from kroute.gateway.router import Decision

__all__ = ["OTHER", "Traffic", "quantile"]

#: The series counting (route, Service) pairs that came once `max_series` were full.
OTHER = "(other)"


class _Bucket:
    """One time bucket of one series."""

    __slots__ = ("durations", "errors", "requests", "seconds", "tick")

    def __init__(self, tick: int) -> None:
        self.tick = tick  # the bucket's number: its start time divided by the bucket width
        self.requests = 0
        self.errors = 0  # answered 5xx
        self.seconds = 0.0
        self.durations = [0] * (len(DURATION_BUCKETS) + 1)

    def add(self, other: _Bucket) -> None:
        """Count `other`'s requests in this one (a read adding series up)."""
        self.requests += other.requests
        self.errors += other.errors
        self.seconds += other.seconds
        self.durations = [a + b for a, b in zip(self.durations, other.durations, strict=True)]


class Traffic:
    """A Router observer keeping the last minutes of traffic per route and Service (module
    docstring); `to_json(now)` is the `/api/traffic` answer."""

    def __init__(
        self,
        *,
        bucket_seconds: float = 10.0,
        buckets: int = 90,
        max_series: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if bucket_seconds <= 0 or buckets < 1 or max_series < 1:
            raise ValueError("Traffic needs bucket_seconds > 0, buckets >= 1, max_series >= 1")
        self.bucket_seconds = bucket_seconds
        self.buckets = buckets
        self.max_series = max_series
        self.clock = clock
        #: The buckets of each series, oldest first, by (route name, Service).
        self._series: dict[tuple[str, str], collections.deque[_Bucket]] = {}
        #: The bucket being filled, by the identities of (route, backend) (cleared on rebuilds:
        #: identities of dropped routes may be reused).
        self._current: dict[tuple[int, int], _Bucket] = {}

    def forwarded(self, decision: Decision, status: int, seconds: float) -> None:
        tick = int(self.clock() // self.bucket_seconds)
        key = (id(decision.route), id(decision.backend))
        bucket = self._current.get(key)
        if bucket is None or bucket.tick != tick:
            bucket = self._start(key, decision, tick)
        bucket.requests += 1
        if status >= 500:
            bucket.errors += 1
        bucket.seconds += seconds
        bucket.durations[bisect.bisect_left(DURATION_BUCKETS, seconds)] += 1

    def rebuilt(self, seconds: float) -> None:
        self._current.clear()

    def _start(self, key: tuple[int, int], decision: Decision, tick: int) -> _Bucket:
        """The bucket of `tick` for the decision's series, made (once per series and bucket)."""
        route = decision.route.name if decision.route is not None else ""
        service = str(decision.backend) if decision.backend is not None else ""
        ring = self._ring((route, service), tick)
        if not ring or ring[-1].tick != tick:  # (a clock going back keeps the newest bucket)
            ring.append(_Bucket(tick))
        if len(self._current) >= 2 * self.max_series:  # identities of routes rebuilt away
            self._current.clear()
        bucket = self._current[key] = ring[-1]
        return bucket

    def _ring(self, labels: tuple[str, str], tick: int) -> collections.deque[_Bucket]:
        ring = self._series.get(labels)
        if ring is not None:
            return ring
        if len(self._series) >= self.max_series:
            oldest = tick - self.buckets
            for idle in [k for k, r in self._series.items() if r[-1].tick <= oldest]:
                del self._series[idle]
            if len(self._series) >= self.max_series:
                labels = (OTHER, OTHER)
                ring = self._series.get(labels)
                if ring is not None:
                    return ring
        ring = self._series[labels] = collections.deque(maxlen=self.buckets)
        return ring

    # -- reading ------------------------------------------------------------------------

    def to_json(self, now: float) -> dict[str, Any]:
        """The window ending at `now`, oldest bucket first, per route and per Service: requests
        per second, 5xx per second, mean and 95th percentile latency in ms (None in buckets
        without requests), the window's totals, and the rates over the last minute. The bucket
        under way is rated over the time it has run (a second at least)."""
        tick = int(now // self.bucket_seconds)
        first = tick - self.buckets + 1
        elapsed = max(now - tick * self.bucket_seconds, 1.0)
        widths = [self.bucket_seconds] * (self.buckets - 1) + [min(elapsed, self.bucket_seconds)]
        routes: dict[str, list[_Bucket]] = {}
        services: dict[str, list[_Bucket]] = {}
        for (route, service), ring in self._series.items():
            if ring[-1].tick < first:
                continue  # nothing in the window
            for name, sums in ((route, routes), (service, services)):
                _add(sums.setdefault(name, _window(first, self.buckets)), ring, first)
        return {
            "bucket_seconds": self.bucket_seconds,
            "buckets": self.buckets,
            "routes": [_row("route", name, sums, widths) for name, sums in sorted(routes.items())],
            "services": [_row("service", n, sums, widths) for n, sums in sorted(services.items())],
        }


def _window(first: int, count: int) -> list[_Bucket]:
    return [_Bucket(first + i) for i in range(count)]


def _add(sums: list[_Bucket], ring: Iterable[_Bucket], first: int) -> None:
    for bucket in ring:
        if 0 <= bucket.tick - first < len(sums):
            sums[bucket.tick - first].add(bucket)


def _row(kind: str, name: str, sums: list[_Bucket], widths: list[float]) -> dict[str, Any]:
    total = _Bucket(0)
    for bucket in sums:
        total.add(bucket)
    # The last minute (or the buckets that cover it), for a number beside the charts: the
    # bucket under way alone swings from one request to none.
    recent = max(1, min(len(sums), round(60 / widths[0])))
    seconds = sum(widths[-recent:])
    return {
        kind: name,
        "requests": total.requests,
        "errors": total.errors,
        "latency_p95_ms": _ms(quantile(total.durations, 0.95)),
        "last_minute_rate": round(sum(b.requests for b in sums[-recent:]) / seconds, 3),
        "last_minute_error_rate": round(sum(b.errors for b in sums[-recent:]) / seconds, 3),
        "rate": [round(b.requests / w, 3) for b, w in zip(sums, widths, strict=True)],
        "error_rate": [round(b.errors / w, 3) for b, w in zip(sums, widths, strict=True)],
        "latency_ms": [_ms(b.seconds / b.requests) if b.requests else None for b in sums],
        "p95_ms": [_ms(quantile(b.durations, 0.95)) for b in sums],
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def quantile(counts: list[int], q: float) -> float | None:
    """The `q` quantile (0 to 1) of durations counted in DURATION_BUCKETS' buckets (and one
    above the last), interpolated linearly inside its bucket as Prometheus'
    histogram_quantile; the last bound when it falls above it; None when nothing is counted."""
    total = sum(counts)
    if not total:
        return None
    rank = q * total
    below = 0
    for index, count in enumerate(counts):
        if below + count >= rank and count:
            if index == len(DURATION_BUCKETS):
                return DURATION_BUCKETS[-1]
            lower = DURATION_BUCKETS[index - 1] if index else 0.0
            return lower + (DURATION_BUCKETS[index] - lower) * (rank - below) / count
        below += count
    return DURATION_BUCKETS[-1]

"""Traffic: request rate, 5xx errors and latency per route and per Service over the last
minutes, for the dashboard's charts (`GET /api/traffic`).

Why from the Router's `RequestCounts`: counting is what a request pays for, on FastGateway's
hot path, and Metrics counts the same things. So Traffic adds nothing per request: it takes the
difference of the shared counts between two moments (`sample`), every `bucket_seconds` (10 s:
`run`, a task) and when read, into a rolling window of time buckets (90: 15 minutes by default)
per (route, Service). A bucket holds requests, 5xx answers, total seconds and the duration
histogram's counts, from which a read adds up routes and Services and estimates percentiles as
Prometheus' histogram_quantile does. Without `run`, what happened between two reads lands in the
bucket of the second (the dashboard reads every 2 s while it is open).

Memory is bounded whatever the traffic: at most `buckets` per series (only buckets that saw
requests are kept) and `max_series` series; once full, series idle for the whole window make
room, and new pairs are counted under `OTHER`.

Time is passed in (`sample(now)`, `to_json(now)`); `run` reads the clock given.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterable
from typing import Any

import anyio

from kroute.gateway.counts import DURATION_BUCKETS, RequestCounts

__all__ = ["OTHER", "Traffic", "quantile"]

#: The series counting (route, Service) pairs that came once `max_series` were full.
OTHER = "(other)"

Labels = tuple[str, str]


class _Bucket:
    """One time bucket of one series (or a sum of them)."""

    __slots__ = ("durations", "errors", "requests", "seconds", "tick")

    def __init__(self, tick: int) -> None:
        self.tick = tick  # the bucket's number: its start time divided by the bucket width
        self.requests = 0
        self.errors = 0  # answered 5xx
        self.seconds = 0.0
        self.durations = [0] * (len(DURATION_BUCKETS) + 1)

    def add(self, other: _Bucket) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.seconds += other.seconds
        self.durations = [a + b for a, b in zip(self.durations, other.durations, strict=True)]


class Traffic:
    """The last minutes of `counts` per route and Service (module docstring); `to_json(now)`
    is the `/api/traffic` answer."""

    def __init__(
        self,
        counts: RequestCounts,
        *,
        bucket_seconds: float = 10.0,
        buckets: int = 90,
        max_series: int = 500,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if bucket_seconds <= 0 or buckets < 1 or max_series < 1:
            raise ValueError("Traffic needs bucket_seconds > 0, buckets >= 1, max_series >= 1")
        self.counts = counts
        self.bucket_seconds = bucket_seconds
        self.buckets = buckets
        self.max_series = max_series
        self.clock = clock
        #: The buckets of each series that saw requests, oldest first, by (route, Service).
        self._series: dict[Labels, collections.deque[_Bucket]] = {}
        #: The counts as of the last sample: requests by (route, Service, status), and the
        #: durations' (buckets, total) by (route, Service).
        self._seen: dict[tuple[str, str, str], int] = {}
        self._seen_durations: dict[Labels, tuple[list[int], float]] = {}

    async def run(self) -> None:
        """Sample at the end of every bucket, until cancelled."""
        while True:
            now = self.clock()
            await anyio.sleep(self.bucket_seconds - now % self.bucket_seconds + 0.001)
            self.sample(self.clock())

    def sample(self, now: float) -> None:
        """Put what was counted since the last sample in the bucket of `now`."""
        tick = int(now // self.bucket_seconds)
        new: dict[Labels, _Bucket] = {}
        for (route, service, code), series in self.counts.series.items():
            before = self._seen.get((route, service, code), 0)
            if series.count == before:
                continue
            self._seen[(route, service, code)] = series.count
            bucket = new.get((route, service))
            if bucket is None:
                bucket = new[(route, service)] = _Bucket(tick)
            bucket.requests += series.count - before
            if int(code) >= 500:
                bucket.errors += series.count - before
        for labels, bucket in new.items():
            durations = self.counts.durations[labels]
            seen, total = self._seen_durations.get(labels, (None, 0.0))
            counted = list(durations.buckets)
            bucket.durations = counted if seen is None else [
                a - b for a, b in zip(counted, seen, strict=True)]  # fmt: skip
            bucket.seconds = durations.total - total
            self._seen_durations[labels] = (counted, durations.total)
            ring = self._ring(labels, tick)
            if ring and ring[-1].tick == tick:
                ring[-1].add(bucket)
            else:
                ring.append(bucket)

    def _ring(self, labels: Labels, tick: int) -> collections.deque[_Bucket]:
        """The buckets of `labels`' series (made, or OTHER's when `max_series` are full)."""
        ring = self._series.get(labels)
        if ring is not None:
            return ring
        if len(self._series) >= self.max_series:
            oldest = tick - self.buckets
            for idle in [k for k, r in self._series.items() if r[-1].tick <= oldest]:
                del self._series[idle]
            if len(self._series) >= self.max_series:
                labels = (OTHER, OTHER)
        return self._series.setdefault(labels, collections.deque(maxlen=self.buckets))

    # -- reading ------------------------------------------------------------------------

    def to_json(self, now: float) -> dict[str, Any]:
        """The window ending at `now` (sampled first), oldest bucket first, per route and per
        Service: requests per second, 5xx per second, mean and 95th percentile latency in ms
        (None in buckets without requests), the window's totals, and the rates over the last
        minute. The bucket under way is rated over the time it has run (a second at least)."""
        self.sample(now)
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

"""Traefik's rateLimit middleware as a step (Traefik v3 docs, "HTTP Middlewares" > RateLimit;
traefik `pkg/middlewares/ratelimiter`).

A token bucket per source (`sourceCriterion`, `kroute.rules.middlewares.sources`: the peer
address by default): it holds at most `burst` tokens (default 1) and refills at
`average / period` tokens a second (`period` defaults to 1s); a request takes one token, and
when none is left it is answered 429 with `Retry-After` (whole seconds, rounded up) and
`X-Retry-In` (the wait, Go's duration form), as Traefik does, and never forwarded.
`average: 0` means no limit, as in Traefik.

Time comes from the front (`UpstreamRequest.clock`, the Router's monotonic clock), so the
buckets are pure state a test drives with its own clock.

Memory is bounded however many sources appear: at most `MAX_SOURCES` buckets (65,536, Traefik's
`maxSources`) are kept, least recently used first out, each under its source's 16-byte digest
(`Source.digest`), never the value itself (a header value may be tens of KiB). A source
evicted comes back with a full bucket, which is also what it would have after idling long
enough; a bucket that has refilled completely is worth nothing and is the first to go in
practice. Traefik evicts by time to live instead (about 1/rate seconds idle) within the same
bound.

Differences from Traefik: Traefik holds a request that finds the bucket empty for up to
1/(2·rate) seconds (at most 0.5 s) when a token will come by then, and forwards it late; kroute
answers 429 at once (a step does not wait: holding requests would hold connections and memory
under exactly the load the limit is for). The buckets belong to the Middleware object and last
while it is unchanged, shared by every route that names it (Traefik builds one limiter per
router, and a new one on every configuration change).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, ClassVar

import attrs

from kroute.objects import as_int
from kroute.pipeline.steps import Answer, Step, UpstreamRequest
from kroute.rules.middlewares.durations import duration
from kroute.rules.middlewares.paths import options_of
from kroute.rules.middlewares.sources import Source, source_criterion

MAX_SOURCES = 65_536
_BODY = b"Too Many Requests"
#: A token, less what floating-point refills lose (a clock stepping by 1/rate must not come
#: short of a token by 1e-16).
_ONE = 1.0 - 1e-9


class Buckets:
    """Token buckets by source, at most `limit` of them (least recently used evicted).

    Each holds (tokens, when they were counted); tokens refill at `rate` a second up to
    `burst`."""

    def __init__(self, rate: float, burst: int, limit: int = MAX_SOURCES) -> None:
        self.rate, self.burst, self.limit = rate, burst, limit
        self._buckets: OrderedDict[bytes, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, source: bytes, now: float) -> float:
        """Take a token for `source` at `now`: 0.0 when it had one, else the seconds until
        it will have one (nothing is taken then)."""
        buckets = self._buckets
        found = buckets.pop(source, None)
        if found is None:
            tokens = float(self.burst)
            if len(buckets) >= self.limit:
                buckets.popitem(last=False)
        else:
            tokens, since = found
            tokens = min(float(self.burst), tokens + max(0.0, now - since) * self.rate)
        if tokens >= _ONE:
            buckets[source] = (max(0.0, tokens - 1.0), now)
            return 0.0
        buckets[source] = (tokens, now)
        return (1.0 - tokens) / self.rate


@attrs.frozen
class RateLimit(Step):
    offline: ClassVar[bool] = False
    source: Source = attrs.field(kw_only=True)
    buckets: Buckets = attrs.field(kw_only=True, eq=False, repr=False)

    @property
    def touches(self) -> frozenset[bytes]:
        return self.source.touches

    def request(self, request: UpstreamRequest) -> Answer | None:
        clock = request.clock
        if clock is None:
            raise RuntimeError("rateLimit needs the front's clock (UpstreamRequest.clock)")
        wait = self.buckets.take(self.source.digest(request), clock())
        if not wait:
            return None
        headers = ((b"Retry-After", b"%d" % math.ceil(wait)),
                   (b"X-Retry-In", go_duration(wait).encode()))  # fmt: skip
        return Answer(429, f"rate limited: next token in {wait:.3f}s", headers=headers,
                      body=_BODY)  # fmt: skip


def go_duration(seconds: float) -> str:
    """A duration as Go's `Duration.String` writes it, to the millisecond ("1.5s", "250ms",
    "1m30s")."""
    millis = round(seconds * 1000)
    if millis < 1000:
        return f"{millis}ms"
    minutes, rest = divmod(millis, 60_000)
    hours, minutes = divmod(minutes, 60)
    text = f"{rest / 1000:.3f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{text}"
    return f"{minutes}m{text}" if minutes else text


def rate_limit(spec: Any, field: str) -> Step:
    options = options_of(spec, field, ("average", "period", "burst", "sourceCriterion"))
    average = as_int(options.get("average"), f"{field}.average", default=0, low=0,
                     high=1 << 62)  # fmt: skip
    period = 1.0
    if options.get("period") is not None:
        # (at most ten years, `durations`: the rate is never 0, and 1/rate never overflows)
        period = duration(options["period"], f"{field}.period") or 1.0
    burst = max(1, as_int(options.get("burst"), f"{field}.burst", default=1, low=0,
                          high=1 << 62))  # fmt: skip
    source = source_criterion(options.get("sourceCriterion"), f"{field}.sourceCriterion")
    if not average:
        return NoLimit(field)
    return RateLimit(field, source=source, buckets=Buckets(average / period, burst))


@attrs.frozen
class NoLimit(Step):
    """`average: 0`: no limit (Traefik's documented meaning); shown in explain, lets every
    request through."""

    declarative: ClassVar[bool] = True

    @property
    def label(self) -> str:
        return f"RateLimit without a limit (average 0, {self.field})"

    @property
    def touches(self) -> frozenset[bytes]:
        return frozenset()

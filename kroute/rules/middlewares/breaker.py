"""Traefik's circuitBreaker middleware (Traefik v3 docs, "HTTP Middlewares" > CircuitBreaker;
vulcand/oxy `cbreaker`, which Traefik runs) as a step and a pure state machine.

- Closed: requests go through and their outcomes are counted over the last ten seconds
  (`Window`: ten one-second slices, as oxy's rolling metrics). At most every `checkPeriod`
  (100 ms), after an outcome, the `expression` (`breaker_expr`) is evaluated on them; when it
  holds, the breaker opens and the counts start afresh.
- Open: for `fallbackDuration` (10 s) every request is answered `responseCode` (503) by the
  gateway; none reaches the backend.
- Recovering: for `recoveryDuration` (10 s) a growing share of requests goes through (oxy's
  ratio controller: the share let through approaches half by the end), the rest answered as
  when open; then closed again. As in oxy, the expression is checked only while closed.

The outcome of a request is its response status and the time until its response head (or the
status the gateway answered when the backend failed: 502 and 504 are the network errors, as
oxy counts them). Fronts report it through the pipeline's outcome hook (`Step.outcome`, run by
`run_outcome`); only requests the breaker let through are counted. Differences from Traefik:
the latency is measured to the response head (Traefik: until the handler returns, body
included); the quantiles come from a histogram with 5 % wide buckets; a route keeps its
breaker's state over a rebuild while the route and the settings are unchanged (`per_route`;
Traefik starts afresh on every configuration change, so a busy cluster's unrelated changes
would reset every breaker). Each route has its own breaker (`per_route`), as each Traefik
router has its own middleware. Time is the front's clock (`UpstreamRequest.clock`).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import attrs

from kroute.objects import FieldError, as_int, req_str
from kroute.pipeline.steps import Answer, Chain, Step, UpstreamRequest
from kroute.rules.middlewares.breaker_expr import Expression, parse
from kroute.rules.middlewares.durations import duration
from kroute.rules.middlewares.paths import options_of
from kroute.rules.route import Route

_SLICES = 10
_SLICE = 1.0  # seconds
_GROWTH = math.log(1.05)  # the latency histogram's buckets: 5 % wide


class State(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    RECOVERING = "recovering"


@attrs.define
class _Slice:
    at: int = -1
    total: int = 0
    codes: dict[int, int] = attrs.Factory(dict)
    latencies: dict[int, int] = attrs.Factory(dict)  # histogram bucket -> count


class Window:
    """Outcomes of the last ten seconds (`breaker_expr.Metrics`): memory bounded by the number
    of distinct statuses and latency buckets, whatever the rate."""

    def __init__(self) -> None:
        self._slices = [_Slice() for _ in range(_SLICES)]
        self._newest = 0  # the slice of the latest outcome

    def record(self, status: int, seconds: float, now: float) -> None:
        index = int(now // _SLICE)
        part = self._slices[index % _SLICES]
        if part.at != index:
            part.at, part.total, part.codes, part.latencies = index, 0, {}, {}
        part.total += 1
        part.codes[status] = part.codes.get(status, 0) + 1
        bucket = int(math.log1p(max(seconds, 0.0) * 1000) / _GROWTH)
        part.latencies[bucket] = part.latencies.get(bucket, 0) + 1
        self._newest = index

    def _live(self) -> list[_Slice]:
        return [s for s in self._slices if 0 <= self._newest - s.at < _SLICES]

    def network_error_ratio(self) -> float:
        live = self._live()
        total = sum(s.total for s in live)
        errors = sum(s.codes.get(502, 0) + s.codes.get(504, 0) for s in live)
        return errors / total if total else 0.0

    def response_code_ratio(self, a: int, b: int, c: int, d: int) -> float:
        """Responses with a status in [a, b) over those in [c, d) (0 when none is)."""
        upper = lower = 0
        for part in self._live():
            for code, count in part.codes.items():
                upper += count if a <= code < b else 0
                lower += count if c <= code < d else 0
        return upper / lower if lower else 0.0

    def latency_at_quantile_ms(self, quantile: float) -> float:
        """The latency (ms) below which `quantile` percent of the outcomes are."""
        counts: dict[int, int] = {}
        for part in self._live():
            for bucket, count in part.latencies.items():
                counts[bucket] = counts.get(bucket, 0) + count
        total = sum(counts.values())
        if not total:
            return 0.0
        wanted, seen = total * min(max(quantile, 0.0), 100.0) / 100.0, 0
        for bucket in sorted(counts):
            seen += counts[bucket]
            if seen >= wanted:
                return math.expm1((bucket + 1) * _GROWTH)
        return math.expm1((max(counts) + 1) * _GROWTH)


@attrs.frozen
class Settings:
    expression: Expression
    check_period: float = 0.1
    fallback: float = 10.0
    recovery: float = 10.0
    status: int = 503


class Breaker:
    """One breaker's state; every method takes the time (`now`, seconds), so it is pure."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.state = State.CLOSED
        self.window = Window()
        self._until = 0.0  # the end of the open or recovering state
        self._next_check = 0.0
        self._since = 0.0  # recovering since
        self._allowed = self._denied = 0

    def allows(self, now: float) -> bool:
        """Whether a request goes through now (else it is answered `settings.status`)."""
        if self.state is State.OPEN:
            if now < self._until:
                return False
            self.state, self._since = State.RECOVERING, now
            self._until, self._allowed, self._denied = now + self.settings.recovery, 0, 0
        if self.state is State.RECOVERING:
            if now >= self._until:
                self.state = State.CLOSED
                return True
            target = (
                0.5 * (now - self._since) / self.settings.recovery
                if self.settings.recovery
                else 1.0
            )
            if (self._allowed + 1) / (self._allowed + self._denied + 1) < target:
                self._allowed += 1
                return True
            self._denied += 1
            return False
        return True

    def outcome(self, status: int, seconds: float, now: float) -> None:
        """A request the breaker let through ended with `status` after `seconds`."""
        self.window.record(status, seconds, now)
        if self.state is not State.CLOSED or now < self._next_check:
            return
        self._next_check = now + self.settings.check_period
        if self.settings.expression.holds(self.window):
            self.state, self._until = State.OPEN, now + self.settings.fallback
            self.window = Window()


@attrs.frozen
class CircuitBreaker(Step):
    on_response = False
    #: The breaker depends on earlier requests: explain does not run it.
    offline = False
    settings: Settings = attrs.field(kw_only=True)
    #: The route's own state (`per_route` gives each route one); not part of the value.
    breaker: Breaker = attrs.field(kw_only=True, eq=False)
    on_outcome = True

    @property
    def touches(self) -> frozenset[bytes]:
        return frozenset()

    def request(self, request: UpstreamRequest) -> Answer | None:
        if self.breaker.allows(_now(request)):
            request.notes[self.field] = True  # counted when its outcome is known
            return None
        # (no body: the front writes the status and its reason phrase, as Traefik's fallback)
        return Answer(self.settings.status, f"the circuit breaker is {self.breaker.state.value}")

    def outcome(self, request: UpstreamRequest, status: int, seconds: float) -> None:
        if request.notes.get(self.field):
            self.breaker.outcome(status, seconds, _now(request))


def _now(request: UpstreamRequest) -> float:
    """The front's clock (the Router's, `UpstreamRequest.clock`), as rateLimit reads it."""
    if request.clock is None:
        raise RuntimeError("circuitBreaker needs the front's clock (UpstreamRequest.clock)")
    return request.clock()


def circuit_breaker(spec: Any, field: str) -> Step:
    options = options_of(spec, field, ("expression", "checkPeriod", "fallbackDuration",
                                       "recoveryDuration", "responseCode"))  # fmt: skip
    text = req_str(options.get("expression"), f"{field}.expression")
    try:
        expression = parse(text)
    except ValueError as exc:
        raise FieldError(f"{field}.expression", f"{text[:80]!r}: {exc}") from None
    periods = {}
    for name, default in (("checkPeriod", 0.1), ("fallbackDuration", 10.0),
                          ("recoveryDuration", 10.0)):  # fmt: skip
        given = options.get(name)
        periods[name] = default if given is None else duration(given, f"{field}.{name}")
    status = as_int(options.get("responseCode"), f"{field}.responseCode", default=503, low=100,
                    high=599)  # fmt: skip
    settings = Settings(expression, periods["checkPeriod"], periods["fallbackDuration"],
                        periods["recoveryDuration"], status)  # fmt: skip
    return CircuitBreaker(field, settings=settings, breaker=Breaker(settings))


#: Where a breaker is kept across rebuilds (`CompileCache.keep`), None for a fresh one each time.
Keep = Callable[[Hashable, Callable[[], Breaker]], Breaker] | None


def per_route(routes: Sequence[Route], keep: Keep = None) -> list[Route]:
    """The routes, each CircuitBreaker step given a state of its own (alternatives of one rule,
    which share their chain, share it). With `keep` (`CompileCache.keep`: state kept while
    each compile asks for it) a route gets the breaker it had at the last rebuild, state and
    all, when its name (each backend's chain apart), the step's field and its settings are
    unchanged."""
    done: dict[int, Chain] = {}
    kept: list[Chain] = []  # (the ids stay valid while the chains are alive)

    def breaker(step: CircuitBreaker, route: str) -> Breaker:
        def make() -> Breaker:
            return Breaker(step.settings)

        return make() if keep is None else keep(("breaker", route, step.field, step.settings),
                                                  make)  # fmt: skip

    def own(chain: Chain, route: str) -> Chain:
        if not any(isinstance(s, CircuitBreaker) for s in chain.steps):
            return chain
        found = done.get(id(chain))
        if found is None:
            kept.append(chain)
            found = done[id(chain)] = Chain(tuple(
                attrs.evolve(s, breaker=breaker(s, route)) if isinstance(s, CircuitBreaker)
                else s for s in chain.steps))  # fmt: skip
        return found

    out = []
    for route in routes:
        chain = own(route.chain, route.name)
        backends = tuple(own(c, f"{route.name} backend {i}")
                         for i, c in enumerate(route.backend_chains))  # fmt: skip
        if chain is not route.chain or any(
            a is not b for a, b in zip(backends, route.backend_chains, strict=True)
        ):
            route = attrs.evolve(route, chain=chain, backend_chains=backends)
        out.append(route)
    return out

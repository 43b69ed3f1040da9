"""RequestCounts: requests counted by route, Service and status, with their durations, for
Metrics (Prometheus' totals) and Traffic (the dashboard's last minutes) alike.

Why one observer for both: counting is the part paid per request, on FastGateway's hot path.
Metrics and the dashboard need the same counts, read differently (Prometheus wants totals since
the start; the dashboard's charts, the difference between two moments), so they share one
`RequestCounts` per Router (`RequestCounts.of`) and a gateway with both pays one call per
request, as with Metrics alone.

Counts are plain numbers on objects found by the identities of the decision's route and backend
(`_Series`): prometheus-client's own labelled children take a lock and about ten Python calls
per update (docs/benchmarks.md). Route and service labels come from configuration, not from
requests: a client cannot grow them (unmatched requests count under route="" service="").
"""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kroute.gateway.router import Decision, Router

__all__ = ["DURATION_BUCKETS", "Durations", "RequestCounts", "Series"]

#: Request durations: 1 ms to 10 s, as a proxy's latencies spread.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: The most (route, backend, status) identities remembered between rebuilds.
IDENTITIES = 10_000


class Durations:
    """A duration histogram's counts: one per bucket of DURATION_BUCKETS, and one above."""

    __slots__ = ("buckets", "total")

    def __init__(self) -> None:
        self.buckets = [0] * (len(DURATION_BUCKETS) + 1)
        self.total = 0.0


class Series:
    """Requests answered with one route, service and status (and their route's durations)."""

    __slots__ = ("count", "durations")

    def __init__(self, durations: Durations) -> None:
        self.count = 0
        self.durations = durations


class RequestCounts:
    """A Router observer counting requests (module docstring); totals only grow."""

    def __init__(self) -> None:
        #: Series by (route, backend, status) identity; cleared when routes change (the series
        #: themselves are kept by their labels, so counts never go back).
        self._by_identity: dict[tuple[int, int, int], tuple[object, object, Series]] = {}
        #: By (route, service, status code) labels, and durations by (route, service).
        self.series: dict[tuple[str, str, str], Series] = {}
        self.durations: dict[tuple[str, str], Durations] = {}

    @classmethod
    def of(cls, router: Router) -> RequestCounts:
        """The Router's counts: the observer it has, or one added to it."""
        found = next((o for o in router.observers if isinstance(o, RequestCounts)), None)
        if found is None:
            found = cls()
            router.observers.append(found)
        return found

    def forwarded(self, decision: Decision, status: int, seconds: float) -> None:
        key = (id(decision.route), id(decision.backend), status)
        found = self._by_identity.get(key)
        # Labels are made once per route, service and status; the objects are kept with their
        # series and compared, so an id reused by a new object is never taken for the old one
        # (`Router.route_service` makes a BackendRef per call: those are bounded by the limit).
        if found is None or found[0] is not decision.route or found[1] is not decision.backend:
            if len(self._by_identity) >= IDENTITIES:
                self._by_identity.clear()
            found = self._by_identity[key] = (decision.route, decision.backend,
                                              self._labelled(decision, status))  # fmt: skip
        series = found[2]
        series.count += 1
        durations = series.durations
        durations.buckets[bisect.bisect_left(DURATION_BUCKETS, seconds)] += 1
        durations.total += seconds

    def _labelled(self, decision: Decision, status: int) -> Series:
        route = decision.route.name if decision.route is not None else ""
        service = str(decision.backend) if decision.backend is not None else ""
        series = self.series.get((route, service, str(status)))
        if series is None:
            durations = self.durations.get((route, service))
            if durations is None:
                durations = self.durations[(route, service)] = Durations()
            series = self.series[(route, service, str(status))] = Series(durations)
        return series

    def rebuilt(self, seconds: float) -> None:
        self._by_identity.clear()

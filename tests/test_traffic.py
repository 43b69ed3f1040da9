"""Traffic, the dashboard's rolling window over the Router's RequestCounts: what it shows, how it
slides, and that its memory stays bounded whatever routes appear (time is a fake clock)."""

from __future__ import annotations

from typing import Any, cast

import anyio
import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kroute.gateway.admin import AdminHandler
from kroute.gateway.counts import DURATION_BUCKETS, RequestCounts
from kroute.gateway.metrics import Metrics
from kroute.gateway.router import Router
from kroute.gateway.traffic import OTHER, Traffic, quantile
from kroute.rules.request import RequestHead
from kroute.watch.sources import MemorySource
from tests.builders import ingress
from tests.pods import endpoint_slice, service


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@attrs.frozen
class Named:
    name: str


@attrs.frozen
class FakeDecision:
    route: Named | None
    backend: str | None


#: Decisions by route and service, kept alive as a Router's routes are (RequestCounts finds a
#: decision's series by the identities of its route and backend).
_DECISIONS: dict[tuple[str, str], Any] = {}


def decision(route: str, service: str = "default/www:80") -> Any:
    made = FakeDecision(Named(route) if route else None, service or None)
    return _DECISIONS.setdefault((route, service), cast(Any, made))


def traffic_of(clock: Clock, **settings: Any) -> tuple[RequestCounts, Traffic]:
    counts = RequestCounts()
    return counts, Traffic(counts, clock=clock, **settings)


def rows(traffic: Traffic, kind: str) -> dict[str, dict[str, Any]]:
    key = "routes" if kind == "route" else "services"
    return {row[kind]: row for row in traffic.to_json(traffic.clock())[key]}


def test_objects_made_per_request_are_never_counted_under_another_ones_labels() -> None:
    """`Router.route_service` makes a BackendRef per call: once one is freed, its id may be
    the next one's (found in review: counts went to the wrong Service)."""
    counts = RequestCounts()
    sent = {"default/s0:80": 0, "default/s1:80": 0}
    for i in range(2_000):
        service = f"default/s{(i * 7919) % 5 // 3}:80"  # (a new str each time, freed after)
        counts.forwarded(cast(Any, FakeDecision(None, service)), 200, 0.001)
        sent[service] += 1
        del service
    assert {k[1]: v.count for k, v in counts.series.items()} == sent


def test_rate_errors_and_latency_per_route_and_per_service() -> None:
    clock = Clock()
    counts, traffic = traffic_of(clock, bucket_seconds=10, buckets=6)
    a, b = decision("a"), decision("b", "default/api:80")
    for _ in range(20):
        counts.forwarded(a, 200, 0.004)
    counts.forwarded(a, 503, 0.5)  # a 5xx: an error
    counts.forwarded(a, 404, 0.001)  # a 4xx is the client's: not an error
    counts.forwarded(b, 200, 0.02)
    traffic.sample(clock.now)  # (as `run` does at the end of each bucket)
    clock.now += 10  # the next bucket
    counts.forwarded(b, 200, 0.02)
    clock.now += 5  # half of it has run
    routes = rows(traffic, "route")
    assert set(routes) == {"a", "b"}
    assert routes["a"]["requests"] == 22
    assert routes["a"]["errors"] == 1
    assert routes["a"]["rate"] == [0, 0, 0, 0, 2.2, 0]  # oldest first, one per bucket
    assert routes["a"]["error_rate"] == [0, 0, 0, 0, 0.1, 0]
    assert routes["a"]["latency_ms"][-2] == pytest.approx((20 * 4 + 500 + 1) / 22, abs=1e-3)
    assert routes["a"]["latency_ms"][-1] is None  # nothing in the bucket under way
    assert routes["a"]["p95_ms"][-2] == pytest.approx(quantile_ms([0.004] * 20 + [0.5, 0.001]))
    assert routes["b"]["rate"][-1] == 0.2  # one request in the 5 s the bucket has run
    assert routes["a"]["last_minute_rate"] == 0.4  # 22 requests in the 55 s the buckets cover
    assert routes["a"]["last_minute_error_rate"] == round(1 / 55, 3)
    services = rows(traffic, "service")
    assert services["default/www:80"]["requests"] == 22
    assert services["default/api:80"]["requests"] == 2
    assert services["default/api:80"]["latency_ms"][-2:] == [20.0, 20.0]
    assert len(services["default/api:80"]["p95_ms"]) == 6


def quantile_ms(durations: list[float]) -> float:
    counts = RequestCounts()
    for seconds in durations:
        counts.forwarded(decision("q"), 200, seconds)
    (histogram,) = counts.durations.values()
    found = quantile(histogram.buckets, 0.95)
    assert found is not None
    return round(found * 1000, 3)


def test_what_was_counted_between_two_samples_lands_in_the_later_bucket() -> None:
    clock = Clock()
    counts, traffic = traffic_of(clock, bucket_seconds=10, buckets=3)
    counts.forwarded(decision("a"), 200, 0.01)
    clock.now += 25  # no sample in between (no `run`): counted now, 5 s into a bucket
    assert rows(traffic, "route")["a"]["rate"] == [0, 0, 0.2]


def test_requests_that_matched_no_route_have_their_own_row() -> None:
    counts, traffic = traffic_of(Clock())
    counts.forwarded(decision("", ""), 404, 0.0001)
    assert rows(traffic, "route")[""]["requests"] == 1
    assert rows(traffic, "service")[""]["requests"] == 1


def test_the_window_slides_and_old_buckets_leave_it() -> None:
    clock = Clock()
    counts, traffic = traffic_of(clock, bucket_seconds=10, buckets=3)
    counts.forwarded(decision("a"), 200, 0.01)
    traffic.sample(clock.now)
    clock.now += 20
    assert rows(traffic, "route")["a"]["rate"] == [0.1, 0, 0]
    clock.now += 10  # the first bucket is out of the window: so is the route
    assert rows(traffic, "route") == {}
    counts.forwarded(decision("a"), 200, 0.01)
    assert rows(traffic, "route")["a"]["requests"] == 1


@pytest.mark.anyio
async def test_run_samples_at_the_end_of_each_bucket() -> None:
    clock = Clock()
    counts, traffic = traffic_of(clock, bucket_seconds=0.05, buckets=4)
    counts.forwarded(decision("a"), 200, 0.01)
    async with anyio.create_task_group() as group:
        group.start_soon(traffic.run)
        while not traffic._series:  # the first sample, at the end of the bucket
            await anyio.sleep(0.01)
        group.cancel_scope.cancel()
    assert rows(traffic, "route")["a"]["requests"] == 1


def test_counts_are_shared_with_metrics_and_survive_rebuilds_of_the_table() -> None:
    www = ingress("www", [("www.test", [("/", "Prefix", "www")])])
    source = MemorySource(objects=[www, service("www"), endpoint_slice("www", 80, [])])
    router = Router([source])
    metrics = Metrics(router)
    traffic = AdminHandler(router).traffic
    assert traffic is not None
    assert traffic.counts is metrics.counts  # one count per request for both
    assert len(router.observers.forwarding) == 1
    router.observe(router.route(RequestHead.build("GET", "www.test", "/")), 200, 0.0)
    source.apply(ingress("api", [("api.test", [("/", "Prefix", "www")])]))  # a rebuild
    router.observe(router.route(RequestHead.build("GET", "www.test", "/")), 502, 0.0)
    (row,) = [r for r in rows(traffic, "route").values() if r["requests"]]
    assert row["route"] == "Ingress default/www spec.rules[0].http.paths[0]"
    assert (row["requests"], row["errors"]) == (2, 1)


def test_series_are_bounded_idle_ones_make_room_and_the_rest_is_counted_as_other() -> None:
    clock = Clock()
    counts, traffic = traffic_of(clock, bucket_seconds=10, buckets=3, max_series=2)
    for name in ("a", "b", "c", "d"):
        counts.forwarded(decision(name), 200, 0.01)
        traffic.sample(clock.now)
    assert {r: v["requests"] for r, v in rows(traffic, "route").items()} == {
        "a": 1, "b": 1, OTHER: 2}  # fmt: skip
    clock.now += 30  # a and b are idle for a whole window
    counts.forwarded(decision("e"), 200, 0.01)
    assert set(rows(traffic, "route")) == {"e"}


def test_quantile_interpolates_inside_its_bucket() -> None:
    counts = [0] * (len(DURATION_BUCKETS) + 1)
    assert quantile(counts, 0.95) is None
    counts[DURATION_BUCKETS.index(0.01)] = 100  # all between 5 ms and 10 ms
    assert quantile(counts, 0.5) == pytest.approx(0.0075)
    counts[-1] = 1000  # most above the last bound: the last bound
    assert quantile(counts, 0.95) == DURATION_BUCKETS[-1]


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="bucket_seconds"):
        Traffic(RequestCounts(), bucket_seconds=0)


#: (seconds since the last, route, status, duration) of requests.
event = st.tuples(st.floats(0, 25), st.sampled_from("abcdefgh"), st.sampled_from([200, 404, 502]),
                  st.floats(0, 20))  # fmt: skip
events = st.lists(event, max_size=200)


@settings(max_examples=150, deadline=None)
@given(events)
def test_the_window_counts_what_happened_in_it_within_bounded_memory(
    happened: list[tuple[float, str, int, float]],
) -> None:
    clock = Clock()
    counts, traffic = traffic_of(clock, bucket_seconds=10, buckets=4, max_series=5)
    seen = []
    for advance, route, status, seconds in happened:
        clock.now += advance
        counts.forwarded(decision(route), status, seconds)
        traffic.sample(clock.now)
        seen.append((clock.now, status))
        assert len(traffic._series) <= 6  # max_series, and OTHER
        assert all(len(ring) <= 4 for ring in traffic._series.values())
    first = (int(clock.now // 10) - 3) * 10  # the window's start
    inside = [status for at, status in seen if at >= first]
    routes = rows(traffic, "route").values()
    assert sum(r["requests"] for r in routes) == len(inside)
    assert sum(r["errors"] for r in routes) == sum(1 for s in inside if s >= 500)
    for row in routes:
        assert all(v is None or 0 <= v <= 10_000 for v in row["p95_ms"])

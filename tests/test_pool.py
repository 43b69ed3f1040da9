"""Pool and health state machines, with an injected clock and random source."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from kroute.pool.balance import LeastRequest, RingHash, WeightedRoundRobin
from kroute.pool.endpoints import Delta, Endpoint
from kroute.pool.health import (
    ActiveHealth,
    HealthConfig,
    Outcome,
    PassiveHealth,
    health_from_annotations,
)
from kroute.pool.pool import Pool

RNG = random.Random(0)


def endpoints(n: int) -> list[Endpoint]:
    return [Endpoint(f"10.0.0.{i}", 8080) for i in range(n)]


def pool_of(n: int, **health: object) -> Pool:
    pool = Pool("web", health=HealthConfig(**health))  # type: ignore[arg-type]
    pool.replace(endpoints(n), now=0.0)
    return pool


def picked(pool: Pool, now: float, count: int = 20, **kw: object) -> set[str]:
    out = set()
    for _ in range(count):
        pick = pool.pick(now=now, rng=RNG, **kw)  # type: ignore[arg-type]
        if pick is not None:
            out.add(pick.endpoint.address)
    return out


def states(pool: Pool, now: float) -> dict[str, str]:
    return {e.endpoint: e.state for e in pool.statistics(now=now).endpoints}


def fail(pool: Pool, address: str, times: int, outcome: Outcome, now: float) -> None:
    for _ in range(times):
        pool.begin((address, 8080))
        pool.end((address, 8080), outcome, now=now)


def test_consecutive_5xx_eject_and_ejection_time_grows() -> None:
    pool = pool_of(3)
    fail(pool, "10.0.0.1", 4, Outcome.HTTP_5XX, now=1.0)
    assert states(pool, 1.0)["10.0.0.1:8080"] == "up"  # 4 < consecutive_5xx (5)
    fail(pool, "10.0.0.1", 1, Outcome.HTTP_5XX, now=2.0)
    stats = {e.endpoint: e for e in pool.statistics(now=2.0).endpoints}
    assert stats["10.0.0.1:8080"].state == "ejected"
    assert stats["10.0.0.1:8080"].reason == "ejected for 30s after 5 consecutive 5xx"
    assert stats["10.0.0.1:8080"].since == 2.0
    assert len(stats["10.0.0.1:8080"].recent_failures) == 5
    assert "10.0.0.1" not in picked(pool, now=31.9)
    assert "10.0.0.1" in picked(pool, now=32.0)  # base_ejection_time (30 s) is up
    assert states(pool, 32.0)["10.0.0.1:8080"] == "up"
    fail(pool, "10.0.0.1", 5, Outcome.HTTP_5XX, now=33.0)  # second ejection: 2 x 30 s
    assert "10.0.0.1" not in picked(pool, now=92.9)
    assert "10.0.0.1" in picked(pool, now=93.0)


def test_ejection_multiplier_decays_while_healthy() -> None:
    pool = pool_of(3)
    fail(pool, "10.0.0.1", 5, Outcome.HTTP_5XX, now=0.0)
    picked(pool, now=30.0)  # readmitted at 30
    fail(pool, "10.0.0.1", 5, Outcome.HTTP_5XX, now=100.0)  # 70 s healthy: decays by 2
    stats = {e.endpoint: e for e in pool.statistics(now=100.0).endpoints}
    assert stats["10.0.0.1:8080"].reason.startswith("ejected for 30s")


def test_gateway_failures_eject_sooner_and_success_resets() -> None:
    pool = pool_of(3)
    fail(pool, "10.0.0.2", 2, Outcome.CONNECT_FAILURE, now=0.0)
    fail(pool, "10.0.0.2", 1, Outcome.SUCCESS, now=0.0)
    fail(pool, "10.0.0.2", 2, Outcome.TIMEOUT, now=0.0)
    assert states(pool, 0.0)["10.0.0.2:8080"] == "up"
    fail(pool, "10.0.0.2", 1, Outcome.RESET, now=0.0)
    assert states(pool, 0.0)["10.0.0.2:8080"] == "ejected"


def test_ejection_cap() -> None:
    pool = pool_of(4, passive=PassiveHealth(max_ejection_percent=50))
    for i in range(4):
        fail(pool, f"10.0.0.{i}", 5, Outcome.HTTP_5XX, now=0.0)
    assert list(states(pool, 0.0).values()).count("ejected") == 2
    single = pool_of(1, passive=PassiveHealth(max_ejection_percent=10))
    fail(single, "10.0.0.0", 5, Outcome.HTTP_5XX, now=0.0)
    assert states(single, 0.0) == {"10.0.0.0:8080": "ejected"}  # at least one may go


def test_panic_routing_or_503_when_nothing_is_healthy() -> None:
    panicky = pool_of(1)
    fail(panicky, "10.0.0.0", 5, Outcome.HTTP_5XX, now=0.0)
    pick = panicky.pick(now=1.0, rng=RNG)
    assert pick is not None
    assert pick.panic
    assert panicky.statistics(now=1.0).panic
    strict = pool_of(1, panic=False)
    fail(strict, "10.0.0.0", 5, Outcome.HTTP_5XX, now=0.0)
    assert strict.pick(now=1.0, rng=RNG) is None
    assert strict.statistics(now=1.0).unavailable == 1
    assert Pool("empty").pick(now=0.0, rng=RNG) is None


def test_active_rise_and_fall_thresholds() -> None:
    pool = pool_of(2, active=ActiveHealth(path="/healthz", rise=2, fall=3))
    web1 = ("10.0.0.1", 8080)
    pool.probed(web1, False, "HTTP 500", now=1.0)
    pool.probed(web1, False, "HTTP 500", now=2.0)
    assert states(pool, 2.0)["10.0.0.1:8080"] == "up"  # one or two failures do not flap
    pool.probed(web1, False, "HTTP 500", now=3.0)
    stats = {e.endpoint: e for e in pool.statistics(now=3.0).endpoints}
    assert stats["10.0.0.1:8080"].state == "unhealthy"
    assert stats["10.0.0.1:8080"].reason == "probe failed 3 time(s): HTTP 500"
    assert picked(pool, now=3.0) == {"10.0.0.0"}
    pool.probed(web1, True, "HTTP 200", now=4.0)
    assert states(pool, 4.0)["10.0.0.1:8080"] == "unhealthy"
    pool.probed(web1, True, "HTTP 200", now=5.0)
    assert states(pool, 5.0)["10.0.0.1:8080"] == "up"
    assert picked(pool, now=5.0) == {"10.0.0.0", "10.0.0.1"}


def test_state_survives_updates_of_the_endpoint_set() -> None:
    pool = pool_of(3, active=ActiveHealth(fall=1))
    pool.probed(("10.0.0.1", 8080), False, "HTTP 503", now=1.0)
    fail(pool, "10.0.0.2", 5, Outcome.HTTP_5XX, now=1.0)
    # An unrelated change (a new endpoint, another one's conditions) and a full replace.
    pool.apply(Delta(added=(Endpoint("10.0.0.9", 8080), Endpoint("10.0.0.1", 8080, zone="b"))),
               now=2.0)  # fmt: skip
    pool.replace([*endpoints(3), Endpoint("10.0.0.9", 8080)], now=3.0)
    assert states(pool, 3.0) == {
        "10.0.0.0:8080": "up",
        "10.0.0.1:8080": "unhealthy",
        "10.0.0.2:8080": "ejected",
        "10.0.0.9:8080": "up",
    }
    assert picked(pool, now=3.0, count=40) == {"10.0.0.0", "10.0.0.9"}


def test_transitions_are_kept_with_their_time_and_reason_in_a_bounded_ring() -> None:
    pool = pool_of(2, active=ActiveHealth(rise=1, fall=1))
    web1 = ("10.0.0.1", 8080)
    fail(pool, "10.0.0.1", 5, Outcome.HTTP_5XX, now=1.0)  # ejected
    picked(pool, now=31.0)  # readmitted: the ejection time is over
    pool.probed(web1, False, "HTTP 503", now=40.0)
    pool.probed(web1, False, "HTTP 503", now=41.0)  # no change of rotation: no transition
    pool.probed(web1, True, "HTTP 200", now=42.0)
    (row,) = [e for e in pool.statistics(now=50.0).endpoints if e.endpoint == "10.0.0.1:8080"]
    assert row.transitions == (
        (1.0, "ejected", "ejected for 30s after 5 consecutive 5xx"),
        (31.0, "up", "ejection time over"),
        (40.0, "unhealthy", "probe failed 1 time(s): HTTP 503"),
        (42.0, "up", "probe passed 1 time(s): HTTP 200"),
    )
    for second in range(100, 130):  # a flapping endpoint keeps only its latest transitions
        pool.probed(web1, second % 2 == 0, "flap", now=float(second))
    (row,) = [e for e in pool.statistics(now=200.0).endpoints if e.endpoint == "10.0.0.1:8080"]
    assert len(row.transitions) == 10
    assert row.transitions[-1][0] == 129.0
    assert all(e.transitions == () for e in pool.statistics(now=200.0).endpoints
               if e.endpoint != "10.0.0.1:8080")  # fmt: skip


def test_retries_exclude_the_endpoint_that_failed() -> None:
    pool = pool_of(3)
    for _ in range(20):
        pick = pool.pick(now=0.0, rng=RNG, exclude={("10.0.0.0", 8080)})
        assert pick is not None
        assert pick.endpoint.address != "10.0.0.0"
    assert pool.pick(now=0.0, rng=RNG, exclude={e.key for e in endpoints(3)}) is None


def test_sticky_cookie_until_the_endpoint_leaves_rotation() -> None:
    pool = pool_of(3)
    first = pool.pick(now=0.0, rng=RNG)
    assert first is not None
    assert len(first.sticky) == 16
    assert first.endpoint.address not in first.sticky
    again = {pool.pick(now=0.0, rng=RNG, sticky=first.sticky).endpoint for _ in range(10)}  # type: ignore[union-attr]
    assert again == {first.endpoint}
    fail(pool, first.endpoint.address, 5, Outcome.HTTP_5XX, now=0.0)
    moved = pool.pick(now=0.0, rng=RNG, sticky=first.sticky)
    assert moved is not None
    assert moved.endpoint != first.endpoint


def test_in_flight_counts_feed_least_request() -> None:
    pool = Pool("web", balancer=LeastRequest())
    pool.replace(endpoints(2), now=0.0)
    for _ in range(5):
        pool.begin(("10.0.0.0", 8080))
    assert {e.endpoint: e.in_flight for e in pool.statistics(now=0.0).endpoints} == {
        "10.0.0.0:8080": 5, "10.0.0.1:8080": 0}  # fmt: skip
    assert picked(pool, now=0.0) == {"10.0.0.1"}


def test_health_from_annotations() -> None:
    config, problems = health_from_annotations({
        "kroute.dev/health-check-path": "/healthz",
        "kroute.dev/health-check-interval": "2.5",
        "kroute.dev/health-check-fall": "2",
        "kroute.dev/health-check-status": "200-299,418",
        "kroute.dev/outlier-max-ejection-percent": "34",
        "kroute.dev/panic-routing": "false",
        "kroute.dev/health-check-rise": "many",
        "kroute.dev/no-such-thing": "1",
        "other.io/ignored": "x",
    })  # fmt: skip
    assert config.active == ActiveHealth(
        path="/healthz", interval=2.5, fall=2, expected=((200, 299), (418, 418))
    )
    assert config.passive.max_ejection_percent == 34
    assert config.panic is False
    assert problems == [
        "kroute.dev/health-check-rise: 'many' is not valid (invalid literal for int() with base 10: 'many')",
        "kroute.dev/no-such-thing: unknown kroute annotation",
    ]
    _, problems = health_from_annotations({"kroute.dev/health-check-interval": "5"})
    assert problems == ["kroute.dev/health-check-path is required for active checks"]


actions = st.lists(
    st.one_of(
        st.tuples(st.just("fail"), st.integers(0, 5), st.sampled_from(list(Outcome))),
        st.tuples(st.just("probe"), st.integers(0, 5), st.booleans()),
        st.tuples(st.just("wait"), st.floats(0, 40), st.none()),
        st.tuples(st.just("remove"), st.integers(0, 5), st.none()),
        st.tuples(st.just("add"), st.integers(0, 5), st.none()),
    ),
    max_size=80,
)


@settings(max_examples=200)
@given(actions, st.sampled_from(["rr", "wrr", "lr", "ring"]), st.integers(0, 2**32))
def test_invariants_under_random_churn(
    steps: list[tuple[str, object, object]], kind: str, seed: int
) -> None:
    balancer = {
        "rr": None,
        "wrr": WeightedRoundRobin(),
        "lr": LeastRequest(),
        "ring": RingHash(10),
    }[kind]
    passive = PassiveHealth(
        consecutive_5xx=2, consecutive_gateway_failures=1, max_ejection_percent=40
    )
    pool = Pool("p", balancer=balancer, health=HealthConfig(
        passive=passive, active=ActiveHealth(rise=1, fall=2), panic=False))  # fmt: skip
    pool.replace(endpoints(6), now=0.0)
    present = {e.key for e in endpoints(6)}
    rng = random.Random(seed)
    now = 0.0
    for action, arg, extra in steps:
        if action == "fail":
            key = (f"10.0.0.{arg}", 8080)
            pool.begin(key)
            pool.end(key, extra, now=now)  # type: ignore[arg-type]
        elif action == "probe":
            pool.probed((f"10.0.0.{arg}", 8080), bool(extra), "probe", now=now)
        elif action == "wait":
            now += float(arg)  # type: ignore[arg-type]
        elif action == "remove":
            pool.apply(Delta(removed=((f"10.0.0.{arg}", 8080),)), now=now)
            present.discard((f"10.0.0.{arg}", 8080))
        else:
            pool.apply(Delta(added=(Endpoint(f"10.0.0.{arg}", 8080),)), now=now)
            present.add((f"10.0.0.{arg}", 8080))
        stats = pool.statistics(now=now)
        by_state = {e.endpoint: e.state for e in stats.endpoints}
        assert len(stats.endpoints) == len(present)
        # The ejection cap holds.
        assert list(by_state.values()).count("ejected") <= passive.cap(len(present))
        # Only endpoints present and in rotation are picked (no panic configured).
        for _ in range(3):
            pick = pool.pick(now=now, rng=rng, hash_key=rng.getrandbits(64))
            if pick is None:
                assert "up" not in by_state.values()
                continue
            assert pick.endpoint.key in present
            assert by_state[str(pick.endpoint)] == "up"

"""Balancers: pure, with the random source passed in; hypothesis holds their invariants."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kroute.pool.balance import (
    Balancer,
    HashOn,
    LeastRequest,
    RingHash,
    RoundRobin,
    WeightedRoundRobin,
    WeightedSplit,
    cookie_value,
    hash64,
)
from kroute.pool.endpoints import EndpointKey

KINDS = [RoundRobin, WeightedRoundRobin, LeastRequest, RingHash]


def key(i: int) -> EndpointKey:
    return (f"10.0.0.{i}", 8080)


def test_round_robin_takes_turns() -> None:
    rr = RoundRobin()
    for i in range(3):
        rr.add(key(i))
    rng = random.Random(0)
    assert [rr.pick(rng) for _ in range(6)] == [key(0), key(1), key(2)] * 2


def test_smooth_weighted_round_robin_interleaves() -> None:
    # nginx's smooth weighted round robin example, weights 5, 1, 1: each cycle of 7 gives
    # a five turns, b and c one each, and b and c come in the middle of a's turns.
    wrr = WeightedRoundRobin()
    wrr.add(("a", 0), 5)
    wrr.add(("b", 0), 1)
    wrr.add(("c", 0), 1)
    picks = "".join(k[0] for k in (wrr.pick(random.Random(0)) for _ in range(14)) if k)
    assert Counter(picks[:7]) == Counter(picks[7:]) == {"a": 5, "b": 1, "c": 1}
    assert picks == "abaacaa" * 2
    assert "aaaa" not in picks


@settings(max_examples=200)
@given(st.lists(st.integers(1, 20), min_size=1, max_size=8), st.integers(1, 400))
def test_weighted_picks_follow_the_weights_within_the_stated_bound(
    weights: list[int], picks: int
) -> None:
    wrr = WeightedRoundRobin()
    for i, w in enumerate(weights):
        wrr.add(key(i), w)
    counts = Counter(wrr.pick(random.Random(0)) for _ in range(picks))
    total = sum(weights)
    for i, w in enumerate(weights):
        assert abs(counts[key(i)] - picks * w / total) < 1.0


def test_weighted_split_is_exact_per_cycle_and_skips_zero() -> None:
    split = WeightedSplit([90, 10, 0])
    picks = Counter(split.pick(random.Random(0)) for _ in range(100))
    assert picks == {0: 90, 1: 10}
    assert WeightedSplit([0, 0]).pick(random.Random(0)) is None


def test_least_request_prefers_the_less_loaded() -> None:
    lr = LeastRequest()
    lr.add(key(0))
    lr.add(key(1))
    load = {key(0): 10, key(1): 0}
    rng = random.Random(1)
    assert all(lr.pick(rng, load=load.__getitem__) == key(1) for _ in range(50))


def test_least_request_honours_weights_under_load() -> None:
    # Requests last 30 picks each: in-flight counts build up, and a weight-3 endpoint should
    # carry about three times the traffic of a weight-1 one.
    lr = LeastRequest()
    for i, weight in enumerate([3, 1, 1]):
        lr.add(key(i), weight)
    rng = random.Random(2)
    in_flight: Counter[EndpointKey] = Counter()
    ending: list[EndpointKey] = []
    counts: Counter[EndpointKey | None] = Counter()
    for _ in range(6000):
        picked = lr.pick(rng, load=in_flight.__getitem__)
        assert picked is not None
        counts[picked] += 1
        in_flight[picked] += 1
        ending.append(picked)
        if len(ending) > 30:
            in_flight[ending.pop(0)] -= 1
    assert 0.55 < counts[key(0)] / 6000 < 0.65  # 3 / 5 of the traffic


@pytest.mark.parametrize("kind", KINDS)
def test_exclude_is_honoured(kind: type[Balancer]) -> None:
    b = kind()
    for i in range(3):
        b.add(key(i))
    rng = random.Random(3)
    for _ in range(30):
        assert b.pick(rng, hash_key=hash64("user"), exclude={key(0)}, load=lambda k: 0) != key(0)
    assert b.pick(rng, exclude={key(0), key(1), key(2)}, load=lambda k: 0) is None


operations = st.lists(
    st.tuples(st.sampled_from(["add", "remove", "pick"]), st.integers(0, 9), st.integers(1, 5)),
    max_size=60,
)


@settings(max_examples=150)
@given(st.sampled_from(KINDS), operations, st.integers(0, 2**32))
def test_only_present_endpoints_are_picked(
    kind: type[Balancer], ops: list[tuple[str, int, int]], seed: int
) -> None:
    b = kind()
    present: set[EndpointKey] = set()
    rng = random.Random(seed)
    for op, i, weight in ops:
        if op == "add":
            b.add(key(i), weight)
            present.add(key(i))
        elif op == "remove":
            b.remove(key(i))
            present.discard(key(i))
        else:
            picked = b.pick(rng, hash_key=hash64(str(i)), load=lambda k: 0)
            assert len(b) == len(present)
            assert (picked is None) == (not present)
            assert picked is None or picked in present


def ring_owners(ring: RingHash, keys: list[int]) -> list[EndpointKey | None]:
    return [ring.pick(random.Random(0), hash_key=k) for k in keys]


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 40), st.integers(0, 2**32))
def test_consistent_hashing_moves_about_one_nth_of_keys(n: int, seed: int) -> None:
    rng = random.Random(seed)
    keys = [rng.getrandbits(64) for _ in range(3000)]
    ring = RingHash()
    for i in range(n):
        ring.add(key(i))
    before = ring_owners(ring, keys)
    ring.add(key(n))
    after = ring_owners(ring, keys)
    moved = [b for b, a in zip(before, after, strict=True) if b != a]
    # Only keys taken by the newcomer move, and about 1/(n+1) of them.
    assert all(a == key(n) for b, a in zip(before, after, strict=True) if b != a)
    assert len(moved) / len(keys) <= 1.6 / (n + 1) + 0.02
    ring.remove(key(n))
    assert ring_owners(ring, keys) == before
    ring.remove(key(0))
    again = ring_owners(ring, keys)
    assert all(a == b for b, a in zip(before, again, strict=True) if b != key(0))


def test_hash_on_header_cookie_or_client_ip() -> None:
    headers = {"x-user": ("alice",), "cookie": ("a=1; session=s3cr3t; b=2",)}
    assert HashOn(header="X-User").key(headers, None) == hash64("alice")
    assert HashOn(cookie="session").key(headers, None) == hash64("s3cr3t")
    assert HashOn(client_ip=True).key(headers, "10.0.0.7") == hash64("10.0.0.7")
    assert HashOn(header="x-missing").key(headers, None) is None
    assert cookie_value(headers, "nope") is None

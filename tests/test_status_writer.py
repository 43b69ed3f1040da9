"""StatusWriter's pure parts: the token bucket that spaces its writes, and the stand-in for its
own writes until their watch events arrive (the behaviour against a real API server is
tests/test_status_writer_real.py)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kroute.gateway.status_writer import TokenBucket, _Pending, _Withdrawals
from kroute.objects import ObjectRef
from kroute.status import Desired


def test_token_bucket_spends_its_burst_then_spaces_by_rate() -> None:
    bucket = TokenBucket(rate=10.0, burst=3)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    waits = [bucket.take(0.0) for _ in range(3)]  # callers waiting together: 0.1 s apart
    assert waits == pytest.approx([0.1, 0.2, 0.3])
    assert bucket.take(10.0) == 0.0  # refilled, up to the burst only:
    assert [bucket.take(10.0) for _ in range(3)][-1] == pytest.approx(0.1)
    assert TokenBucket(math.inf, 1).take(0.0) == 0.0
    with pytest.raises(ValueError, match="rate > 0"):
        TokenBucket(0.0, 5)


@given(rate=st.floats(0.5, 100.0), burst=st.integers(1, 20),
       gaps=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=60))  # fmt: skip
def test_token_bucket_never_exceeds_rate_and_burst(
    rate: float, burst: int, gaps: list[float]
) -> None:
    """However the writes come, those released within any window of T seconds number at most
    burst + rate * T."""
    bucket, now, released = TokenBucket(rate, burst), 0.0, []
    for gap in gaps:
        now += gap
        released.append(now + bucket.take(now))
    released.sort()
    for i, start in enumerate(released):
        for j in range(i, len(released)):
            assert j - i + 1 <= burst + rate * (released[j] - start) + 1e-6


def route(version: str, status: str | None = None) -> dict[str, object]:
    obj: dict[str, object] = {
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "r", "namespace": "n", "resourceVersion": version},
    }  # fmt: skip
    if status is not None:
        obj["status"] = {"parents": [status]}
    return obj


def test_own_writes_stand_in_until_the_store_moves_on() -> None:
    pending = _Pending()
    pending.wrote("HTTPRoute", "1", route("2", "ours"))
    assert pending.overlay([route("1")]) == [route("2", "ours")]  # the event is on its way
    assert pending.overlay([route("2", "ours")]) == [route("2", "ours")]  # it arrived: dropped
    assert pending.overlay([route("1")]) == [route("1")]  # (and not used again)
    pending.wrote("HTTPRoute", "1", route("2", "ours"))
    assert pending.overlay([]) == []  # deleted: forgotten
    assert pending.overlay([route("1")]) == [route("1")]


def test_addresses_taken_back_by_another_writer_are_left_to_it() -> None:
    """kroute takes its addresses from an Ingress it stopped serving, once; if they come back
    (another installation publishes the same ones there), it does not fight for them, until it
    serves that Ingress again."""
    ref = ObjectRef("Ingress", "default", "www")
    gone, served = Desired({}, ref, None), Desired({}, ref, {"loadBalancer": {}})
    withdrawals = _Withdrawals()
    withdrawals.note(gone)
    assert withdrawals.allows(gone)
    withdrawals.wrote(gone)
    withdrawals.note(gone)
    assert not withdrawals.allows(gone)  # they came back: someone else's
    assert not withdrawals.allows(gone)
    withdrawals.note(served)  # served again: kroute's to write, and later to take back
    assert withdrawals.allows(served)
    withdrawals.note(gone)
    assert withdrawals.allows(gone)
    route = Desired({}, ObjectRef("HTTPRoute", "default", "r"), None)
    withdrawals.wrote(route)
    assert withdrawals.allows(route)  # (parents entries are per controller: no such fight)

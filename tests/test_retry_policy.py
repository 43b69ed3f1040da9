"""RetryPolicy: the one retry decision, pure, and the same number of attempts on every front.

The fronts had drifted: one GET to a Service whose 8 endpoints all refused connections was
tried on 8 endpoints by FastGateway and on 3 by HttpServer and the ASGI gateway.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kroute.gateway.router import Router
from kroute.transport.proxy import IDEMPOTENT, RetryBudget
from kroute.transport.retry_policy import RetryPolicy
from kroute.watch.sources import MemorySource
from tests.builders import ingress
from tests.fronts import serving
from tests.pods import endpoint_slice, service

# -- the decision (pure) -----------------------------------------------------------------------

METHODS = st.sampled_from(["GET", "HEAD", "PUT", "DELETE", "POST", "PATCH", "get"])


@given(
    attempts=st.integers(1, 6),
    failures=st.lists(st.tuples(METHODS, st.booleans(), st.booleans()), max_size=12),
)
def test_a_retry_only_when_safe_under_the_cap_and_within_the_budget(
    attempts: int, failures: list[tuple[str, bool, bool]]
) -> None:
    """Whatever fails, a request gets at most `attempts` tries; bytes that may have reached
    an endpoint go again only for an idempotent method with a body that can be resent; each
    yes takes one retry from the budget, and no yes is given once it is spent."""
    budget = RetryBudget(ratio=0.0, minimum=4)  # 4 retries per window, whatever the requests
    policy = RetryPolicy(attempts=attempts, budget=budget)
    granted = 0
    for method, replayable, sent in failures:  # one request each, failing on every try
        budget.request(0.0)
        tried = 1
        while policy.again(method, replayable=replayable, sent=sent, tried=tried, now=0.0):
            assert not sent or (method in IDEMPOTENT and replayable)
            granted += 1
            tried += 1
        assert tried <= attempts
    assert granted <= 4
    assert not budget.try_retry(0.0) or granted < 4


def test_a_policy_names_a_bad_attempt_count() -> None:
    with pytest.raises(ValueError, match="'attempts' must be >= 1"):
        RetryPolicy(attempts=0)
    assert RetryPolicy(attempts=2) == RetryPolicy(attempts=2)  # the shared budget aside


# -- every front: the same attempts --------------------------------------------------------------

ADDRESSES = [f"127.0.0.{n}" for n in range(71, 79)]  # 8 endpoints


@contextlib.contextmanager
def refusing(addresses: list[str]) -> Iterator[int]:
    """A port on which every address refuses connections: bound (so nothing else listens
    there meanwhile) and never listening."""
    sockets: list[socket.socket] = []
    try:
        port = 0
        for address in addresses:
            sock = socket.socket()
            sockets.append(sock)
            sock.bind((address, port))
            port = sock.getsockname()[1]
        yield port
    finally:
        for sock in sockets:
            sock.close()


def refused_router(port: int, attempts: int | None) -> Router:
    """A Router over the 8 endpoints, with its default policy (None) or `attempts`."""
    source = MemorySource(objects=[
        ingress("www", [("www.test", [("/", "Prefix", "www")])]), service("www"),
        endpoint_slice("www", port, [(address, "ready") for address in ADDRESSES]),
    ])  # fmt: skip
    return Router([source], retry=None if attempts is None else RetryPolicy(attempts=attempts))


def failures_per_endpoint(router: Router) -> list[int]:
    """What passive health heard from each endpoint: one failure per attempt."""
    (pool,) = router.statistics().pools
    return [len(endpoint.recent_failures) for endpoint in pool.endpoints]


#: (attempts the policy is given, attempts expected): the default policy, and another.
POLICIES = pytest.mark.parametrize(("given", "attempts"), [(None, 3), (5, 5)], ids=["default", "5"])


@pytest.mark.anyio
@POLICIES
async def test_every_front_makes_the_same_attempts(
    every_front: str, given: int | None, attempts: int
) -> None:
    with refusing(ADDRESSES) as port:
        router = refused_router(port, given)
        async with serving(router, every_front) as client:
            status, _, _ = await client.request("www.test")
    assert status == 502
    assert sorted(failures_per_endpoint(router)) == [0] * (8 - attempts) + [1] * attempts

"""HTTPRoute rule `timeouts` and `retry` (Gateway API v1.6): parsed into a RoutePolicy (pure),
turned into the route's RetryPolicy by the Router, and applied the same way by every front."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.abc
import pytest
from hypothesis import given
from hypothesis import strategies as st

import kroute
from kroute.gateway.router import Router
from kroute.gateway.server import IncomingRequest, OutgoingResponse
from kroute.objects import FieldError
from kroute.rules.policy import RoutePolicy, parse_duration, rule_policy
from kroute.transport.proxy import RetryBudget
from kroute.transport.retry_policy import RetryPolicy
from kroute.watch.sources import MemorySource
from tests.builders import gateway, httproute, to
from tests.fronts import serving
from tests.pods import Pod, endpoint_slice, service

# -- durations and fields (pure) ---------------------------------------------------------------

SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


@pytest.mark.parametrize(("text", "seconds"), [
    ("0s", 0.0), ("10s", 10.0), ("500ms", 0.5), ("1m30s", 90.0), ("1h", 3600.0),
    ("1h2m3s4ms", 3723.004), ("99999ms", 99.999), ("1s1s", 2.0),
])  # fmt: skip
def test_gateway_api_durations(text: str, seconds: float) -> None:
    assert parse_duration(text, "f") == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text", ["", "1", "1.5s", "1d", "-1s", "123456s", "1s1s1s1s1s", " 1s", "1S", 5, None]
)
def test_malformed_durations_are_named(text: Any) -> None:
    with pytest.raises(FieldError, match=r"spec\.x: .* is not a Gateway API Duration"):
        parse_duration(text, "spec.x")


@given(st.lists(st.tuples(st.integers(0, 99_999), st.sampled_from(list(SECONDS))), min_size=1,
                max_size=4))  # fmt: skip
def test_a_duration_is_the_sum_of_its_parts(parts: list[tuple[int, str]]) -> None:
    text = "".join(f"{number}{unit}" for number, unit in parts)
    expected = sum(number * SECONDS[unit] for number, unit in parts)
    assert parse_duration(text, "f") == pytest.approx(expected)


def policy_of(rule: dict[str, Any]) -> RoutePolicy | None:
    policy, refused = rule_policy(rule, "spec.rules[0]")
    assert not refused
    return policy


def test_rule_fields_make_a_policy() -> None:
    assert policy_of({}) is None
    assert policy_of({
        "timeouts": {"request": "2s", "backendRequest": "500ms"},
        "retry": {"attempts": 2, "codes": [503, 502, 503], "backoff": "100ms"},
    }) == RoutePolicy(2.0, 0.5, 2, frozenset({502, 503}), 0.1)  # fmt: skip
    # "0s" disables a timeout; then backendRequest may be anything.
    assert policy_of({"timeouts": {"request": "0s", "backendRequest": "10s"}}) == RoutePolicy(
        None, 10.0
    )
    assert policy_of({"retry": {}}) == RoutePolicy()  # a stanza with the Router's numbers


@pytest.mark.parametrize(("rule", "field", "message"), [
    ({"timeouts": {"request": "1s", "backendRequest": "2s"}}, "timeouts.backendRequest",
     "longer than timeouts.request"),
    ({"timeouts": {"request": "1.5s"}}, "timeouts.request", "Gateway API Duration"),
    ({"timeouts": "1s"}, "timeouts", "expected an object"),
    ({"retry": {"attempts": -1}}, "retry.attempts", "out of range"),
    ({"retry": {"attempts": "2"}}, "retry.attempts", "expected an integer"),
    ({"retry": {"codes": [503, 600]}}, "retry.codes[1]", "out of range"),
    ({"retry": {"codes": [399]}}, "retry.codes[0]", "out of range"),
    ({"retry": {"backoff": "soon"}}, "retry.backoff", "Gateway API Duration"),
])  # fmt: skip
def test_malformed_fields_are_field_errors(rule: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(FieldError, match=message) as error:
        rule_policy(rule, "spec.rules[0]")
    assert error.value.field == f"spec.rules[0].{field}"


def test_unknown_fields_under_timeouts_or_retry_fail_closed() -> None:
    _, refused = rule_policy({"timeouts": {"idle": "1s"}, "retry": {"budget": 20}}, "r")
    assert [step.field for step in refused.steps] == ["r.timeouts.idle", "r.retry.budget"]


def test_compiled_routes_carry_the_policy_and_are_not_refused() -> None:
    result = kroute.compile_objects([gateway(), httproute("r", [
        {"timeouts": {"request": "1s"}, "retry": {"attempts": 1, "codes": [503]},
         "backendRefs": [to("a")]},
        {"matches": [{"path": {"value": "/bad"}}], "timeouts": {"request": "1"},
         "backendRefs": [to("a")]},
    ])])  # fmt: skip
    assert not result.refused
    (error,) = result.errors  # the object is rejected whole, naming the field
    assert error.field == "spec.rules[1].timeouts.request"
    result = kroute.compile_objects([gateway(), httproute("r", [
        {"timeouts": {"request": "1s"}, "retry": {"attempts": 1, "codes": [503]},
         "backendRefs": [to("a")]}])])  # fmt: skip
    (route,) = result.table.routes
    assert route.policy == RoutePolicy(1.0, None, 1, frozenset({503}))
    assert route.to_json()["policy"]["codes"] == [503]


# -- the decision (pure) -----------------------------------------------------------------------


def test_a_status_is_retried_when_listed_safe_under_the_cap_and_within_the_budget() -> None:
    policy = RetryPolicy(attempts=2, codes=frozenset({503}))
    assert policy.again_on_status(503, "GET", replayable=True, tried=1, now=0.0)
    assert not policy.again_on_status(500, "GET", replayable=True, tried=1, now=0.0)
    assert not policy.again_on_status(503, "GET", replayable=True, tried=2, now=0.0)
    assert not policy.again_on_status(503, "POST", replayable=True, tried=1, now=0.0)
    assert not policy.again_on_status(503, "PUT", replayable=False, tried=1, now=0.0)
    spent = RetryPolicy(
        attempts=2, codes=frozenset({503}), budget=RetryBudget(ratio=0.0, minimum=0)
    )
    assert not spent.again_on_status(503, "GET", replayable=True, tried=1, now=0.0)
    with pytest.raises(ValueError, match="backoff"):
        RetryPolicy(backoff=-1.0)


def test_the_router_makes_each_route_its_policy_sharing_the_budget() -> None:
    source = MemorySource(objects=[gateway(), httproute("r", [
        {"matches": [{"path": {"value": "/a"}}], "retry": {"attempts": 4, "codes": [502],
                                                           "backoff": "1s"}},
        {"matches": [{"path": {"value": "/b"}}], "timeouts": {"request": "1s"}},
        {"matches": [{"path": {"value": "/c"}}], "retry": {"codes": [503]}},
    ])])  # fmt: skip
    router = Router([source], retry=RetryPolicy(attempts=2))
    a, b, c = sorted(router.table.routes, key=lambda route: route.field)
    assert router.retry_for(None) is router.retry
    assert router.retry_for(b) is router.retry  # only a timeout: the Router's retries
    assert router.retry_for(a) == RetryPolicy(attempts=5, codes=frozenset({502}), backoff=1.0)
    assert router.retry_for(c) == RetryPolicy(attempts=2, codes=frozenset({503}))
    assert router.retry_for(a).budget is router.retry.budget
    assert router.retry_for(a) is router.retry_for(a)  # made once per policy


# -- every front: the same attempts, the same 504 ----------------------------------------------


class Scripted(Pod):
    """A pod of a Service whose pods share one script: each request (whichever pod takes it)
    gets the script's next status, or waits forever for "hang"; 200 once the script ends."""

    def __init__(self, name: str, address: str, script: list[int | str], log: list[str]) -> None:
        super().__init__(name, address)
        self.script = script
        self.log = log

    async def handle(self, request: IncomingRequest) -> OutgoingResponse:
        async for _ in request.body:
            pass
        self.log.append(request.method)
        answer = self.script.pop(0) if self.script else 200
        if answer == "hang":
            await anyio.sleep_forever()
        assert isinstance(answer, int)
        return OutgoingResponse(answer, [], b"answer %d" % answer)


@contextlib.asynccontextmanager
async def scripted(
    rule: dict[str, Any], script: list[int | str], pods: int = 3
) -> AsyncIterator[tuple[Router, list[str]]]:
    """A Router with one HTTPRoute rule (host policy.test) over `pods` scripted pods, and the
    log of the methods they were asked."""
    log: list[str] = []
    async with anyio.create_task_group() as group:
        started = [Scripted(f"p{i}", f"127.0.0.{81 + i}", script, log) for i in range(pods)]
        port = 0
        for pod in started:
            port = await pod.start(group, port)
        source = MemorySource(objects=[
            gateway(), httproute("r", [{**rule, "backendRefs": [to("web")]}],
                                 hostnames=["policy.test"]),
            service("web"), endpoint_slice("web", port, [(p.address, "ready") for p in started]),
        ])  # fmt: skip
        yield Router([source]), log
        group.cancel_scope.cancel()


RETRY_503 = {"retry": {"attempts": 1, "codes": [503]}}


@pytest.mark.anyio
@pytest.mark.parametrize("backoff", [None, "20ms"])
async def test_a_listed_status_is_retried_elsewhere_on_every_front(
    every_front: str, backoff: str | None
) -> None:
    rule: dict[str, Any] = {"retry": {**RETRY_503["retry"], "backoff": backoff}}
    async with scripted(rule, [503]) as (router, log), serving(router, every_front) as client:
        status, _, body = await client.request("policy.test")
    assert (status, body) == (200, b"answer 200")
    assert log == ["GET", "GET"]
    (pool,) = router.statistics().pools
    assert sum(endpoint.in_flight for endpoint in pool.endpoints) == 0


@pytest.mark.anyio
async def test_retries_stop_at_attempts_on_every_front(every_front: str) -> None:
    async with scripted(RETRY_503, [503, 503, 503]) as (router, log), \
            serving(router, every_front) as client:  # fmt: skip
        status, _, body = await client.request("policy.test")
    assert (status, body) == (503, b"answer 503")  # the last try's answer
    assert log == ["GET", "GET"]


@pytest.mark.anyio
async def test_a_post_with_a_body_is_not_retried_on_a_status(every_front: str) -> None:
    async with scripted(RETRY_503, [503]) as (router, log), serving(router, every_front) as client:
        status, _, _ = await client.request("policy.test", method="POST", body=b"pay=10")
    assert status == 503
    assert log == ["POST"]


@pytest.mark.anyio
async def test_the_request_timeout_answers_504_on_every_front(every_front: str) -> None:
    rule = {"timeouts": {"request": "300ms"}}
    async with scripted(rule, ["hang"]) as (router, log), serving(router, every_front) as client:
        status, _, body = await client.request("policy.test")
        assert (status, body) == (504, b"504 Gateway Timeout: backend request timeout\n")
        assert log == ["GET"]
        (pool,) = router.statistics().pools
        assert sum(endpoint.in_flight for endpoint in pool.endpoints) == 0
        # The route keeps working: the next request gets the pod's answer.
        assert (await client.request("policy.test"))[0] == 200


@pytest.mark.anyio
async def test_a_try_that_times_out_is_retried_on_every_front(every_front: str) -> None:
    rule = {"timeouts": {"request": "10s", "backendRequest": "300ms"}, "retry": {"attempts": 1}}
    async with scripted(rule, ["hang"]) as (router, log), serving(router, every_front) as client:
        status, _, body = await client.request("policy.test")
    assert (status, body) == (200, b"answer 200")
    assert log == ["GET", "GET"]


@pytest.mark.anyio
async def test_without_retries_a_timed_out_try_answers_504(every_front: str) -> None:
    rule = {"timeouts": {"backendRequest": "300ms"}, "retry": {"attempts": 0}}
    async with scripted(rule, ["hang"]) as (router, log), serving(router, every_front) as client:
        status, _, body = await client.request("policy.test")
    assert (status, body) == (504, b"504 Gateway Timeout: backend attempt timeout\n")
    assert log == ["GET"]

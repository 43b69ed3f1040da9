"""The retry Middleware offline: Traefik's fields and durations, the route's retry policy it
becomes (the one every front asks), its precedence under an HTTPRoute rule's own `retry`, and
what fails closed."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import kroute
from kroute.objects import FieldError
from kroute.rules.middlewares.durations import duration
from kroute.rules.route import Route
from kroute.transport.retry_policy import RetryPolicy
from tests.builders import httproute, to
from tests.test_middlewares_e2e import middleware, using
from tests.test_pipeline_e2e import ext

#: Traefik v3's Kubernetes example, field for field.
TEST_RETRY = middleware("test-retry", {"retry": {"attempts": 4, "initialInterval": "100ms"}})


def only_route(*objects: dict[str, Any]) -> tuple[Route, kroute.CompileResult]:
    result = kroute.compile_objects(objects)
    assert not result.errors, [str(e) for e in result.errors]
    (route,) = result.table.routes
    return route, result


def test_the_documented_example_becomes_the_routes_retry_policy() -> None:
    route, result = only_route(TEST_RETRY, using("r.local", "test-retry"))
    assert route.policy is not None
    assert (route.policy.retries, route.policy.backoff) == (3, 0.1)  # 4 tries in all
    assert route.policy.multiplier == pytest.approx(2 ** (1 / 3))
    assert not route.chain.steps  # folded into the policy: nothing runs per request
    assert not result.refused


def test_the_waits_grow_towards_twice_the_first_as_traefik() -> None:
    route, _ = only_route(TEST_RETRY, using("r.local", "test-retry"))
    assert route.policy is not None
    policy = RetryPolicy(attempts=4, backoff=route.policy.backoff,
                         multiplier=route.policy.multiplier)  # fmt: skip
    waits = [policy.wait(tried) for tried in (1, 2, 3)]
    assert waits == pytest.approx([0.1, 0.1 * 2 ** (1 / 3), 0.1 * 2 ** (2 / 3)])  # below 0.2
    assert RetryPolicy(backoff=0.0, multiplier=2.0).wait(3) == 0.0
    assert RetryPolicy(backoff=0.5).wait(3) == 0.5  # HTTPRoute's backoff stays constant


def test_without_interval_and_with_one_attempt() -> None:
    once = middleware("once", {"retry": {"attempts": 1}})
    route, _ = only_route(once, using("r.local", "once"))
    assert route.policy is not None
    assert (route.policy.retries, route.policy.backoff, route.policy.multiplier) == (0, 0.0, 1.0)


def test_the_router_asks_the_policy_made_from_it() -> None:
    from kroute.gateway.router import Router
    from kroute.watch.sources import MemorySource

    router = Router([MemorySource(objects=[TEST_RETRY, using("r.local", "test-retry")])])
    (route,) = router.table.routes
    policy = router.retry_for(route)
    assert (policy.attempts, policy.backoff) == (4, 0.1)
    assert policy.budget is router.retry.budget  # one budget for every route


def test_an_httproute_rules_own_retry_wins_and_the_notes_say_so() -> None:
    rule = {"filters": [ext("test-retry", "traefik.io", "Middleware")], "backendRefs": [to("web")],
            "retry": {"attempts": 1}}  # fmt: skip
    from tests.builders import gateway

    result = kroute.compile_objects([gateway(), TEST_RETRY, httproute("h", [rule])])
    (route,) = result.table.routes
    assert route.policy is not None
    assert route.policy.retries == 1
    assert any("its rule's retry applies, not" in note and "test-retry" in note
               for note in result.notes)  # fmt: skip


def test_a_rule_with_only_timeouts_takes_the_middlewares_retries() -> None:
    from tests.builders import gateway

    rule = {"filters": [ext("test-retry", "traefik.io", "Middleware")], "backendRefs": [to("web")],
            "timeouts": {"request": "5s"}}  # fmt: skip
    result = kroute.compile_objects([gateway(), TEST_RETRY, httproute("h", [rule])])
    (route,) = result.table.routes
    assert route.policy is not None
    assert (route.policy.request, route.policy.retries, route.policy.backoff) == (5.0, 3, 0.1)


def test_two_retries_or_one_on_a_backend_fail_closed() -> None:
    other = middleware("other-retry", {"retry": {"attempts": 2}})
    result = kroute.compile_objects([TEST_RETRY, other,
                                     using("r.local", "test-retry", "other-retry")])  # fmt: skip
    (refused,) = [str(r) for r in result.refused]
    assert "more than one retry Middleware" in refused
    from tests.builders import gateway

    backend = {**to("web"), "filters": [ext("test-retry", "traefik.io", "Middleware")]}
    result = kroute.compile_objects([gateway(), TEST_RETRY,
                                     httproute("h", [{"backendRefs": [backend]}])])  # fmt: skip
    (refused,) = [str(r) for r in result.refused]
    assert "applies to a route, not to one of its backends" in refused


@pytest.mark.parametrize(("spec", "why"), [
    ({"retry": {}}, "spec.retry.attempts: a number of tries above 0 is required"),
    ({"retry": {"attempts": 0}}, "above 0"),
    ({"retry": {"attempts": "4"}}, "above 0"),
    ({"retry": {"attempts": 1000}}, "more than 100"),
    ({"retry": {"attempts": 2, "initialInterval": "soon"}}, "spec.retry.initialInterval"),
    ({"retry": {"attempts": 2, "backoff": "1s"}}, "spec.retry.backoff: unknown option"),
])  # fmt: skip
def test_invalid_retry_is_an_error_naming_the_field(spec: dict[str, Any], why: str) -> None:
    (error,) = kroute.compile_objects([middleware("m", spec)]).errors
    assert why in str(error)


def test_newer_traefik_fields_fail_closed() -> None:
    spec = {"retry": {"attempts": 2, "status": ["500-599"]}}
    result = kroute.compile_objects([middleware("m", spec), using("r.local", "m")])
    (refused,) = [str(r) for r in result.refused]
    assert "retry.status is not supported by kroute yet" in refused


@pytest.mark.parametrize(("value", "seconds"), [
    (2, 2.0), ("3", 3.0), ("100ms", 0.1), ("1.5s", 1.5), ("1h30m", 5400.0), ("250us", 0.00025),
    ("0", 0.0), ("0s", 0.0),
])  # fmt: skip
def test_durations_as_traefik_reads_them(value: Any, seconds: float) -> None:
    assert duration(value, "f") == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["", "-1s", "1d", "s", "1 s", True, 1.5, None, "9" * 30])
def test_bad_durations_name_the_field(value: Any) -> None:
    with pytest.raises(FieldError, match=r"^f: "):
        duration(value, "f")


@given(st.text(max_size=80) | st.integers())
def test_any_input_is_a_duration_or_a_field_error(value: str | int) -> None:
    try:
        seconds = duration(value, "f")
    except FieldError as exc:
        field = exc.field
    else:
        field = "f"
        assert 0 <= seconds <= 10 * 365 * 86400
    assert field == "f"

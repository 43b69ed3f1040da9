"""The circuitBreaker Middleware offline: its expression language on hostile input, the
rolling metrics, and the state machine with the time passed in."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import kroute
from kroute.rules.compile import CompileCache
from kroute.rules.middlewares.breaker import Breaker, CircuitBreaker, Settings, State, Window
from kroute.rules.middlewares.breaker_expr import parse
from tests.test_middlewares_e2e import middleware, using

EXAMPLES = [  # Traefik v3's documentation
    "NetworkErrorRatio() > 0.30",
    "ResponseCodeRatio(500, 600, 0, 600) > 0.25",
    "LatencyAtQuantileMS(50.0) > 100",
    "ResponseCodeRatio(500, 600, 0, 600) > 0.30 || NetworkErrorRatio() > 0.10",
    "LatencyAtQuantileMS(50.0) > 100 && (NetworkErrorRatio() > 0.1 || 1 == 1)",
]


@pytest.mark.parametrize("text", EXAMPLES)
def test_the_documented_expressions_parse(text: str) -> None:
    parse(text)


@pytest.mark.parametrize(("text", "why"), [
    ("", "ends too soon"),
    ("NetworkErrorRatio()", "ends too soon"),
    ("NetworkErrorRatio(1) > 0", "takes 0 arguments"),
    ("Latency() > 1", "unknown function 'Latency'"),
    ("NetworkErrorRatio() > 0.5 &&", "ends too soon"),
    ("(NetworkErrorRatio() > 0.5", "')' expected"),
    ("NetworkErrorRatio() => 1", "unexpected '=' at 20"),
    ("NetworkErrorRatio() > > 1", "a number or a function expected at 22"),
    ("1 > 2 $", "unexpected '$' at 6"),
    ("(" * 40 + "1 > 2" + ")" * 40, "nested deeper"),
    ("ResponseCodeRatio(500, 600, 0, 1" + "0" * 400 + ") > 0.5", "number at 31 is out of range"),
    ("1" + "0" * 400 + " > 1", "number at 0 is out of range"),
    ("ResponseCodeRatio(500.5, 600, 0, 600) > 0", "whole status bounds from 0 to 600, found "
     "500.5 at 18"),
    ("ResponseCodeRatio(500, 601, 0, 600) > 0", "found 601 at 23"),
    ("LatencyAtQuantileMS(100.5) > 1", "percentile from 0 to 100, found 100.5 at 20"),
])  # fmt: skip
def test_bad_expressions_say_what_and_where(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=re.escape(why)):
        parse(text)


def test_a_bad_expression_is_an_error_naming_the_middleware_and_field() -> None:
    spec = {"circuitBreaker": {"expression": "NetworkErrorRatio() >"}}
    (error,) = kroute.compile_objects([middleware("cb", spec)]).errors
    assert str(error).startswith("Middleware default/cb: spec.circuitBreaker.expression: ")


def test_a_number_evaluation_cannot_take_is_refused_at_compile_time() -> None:
    """A thousand-digit bound used to compile and raise OverflowError on every request."""
    spec = {"circuitBreaker": {"expression": "ResponseCodeRatio(500, 600, 0, 1" + "0" * 400
                                             + ") > 0.5"}}  # fmt: skip
    (error,) = kroute.compile_objects([middleware("cb", spec), using("cb.local", "cb")]).errors
    assert "spec.circuitBreaker.expression" in str(error)
    assert "the number at 31 is out of range" in str(error)


_PIECES = st.sampled_from(["NetworkErrorRatio", "ResponseCodeRatio", "LatencyAtQuantileMS",
                           "(", ")", "&&", "||", "<", ">=", "==", "!=", ",", " ", "0.5", "600",
                           "x", "."])  # fmt: skip


@given(st.lists(_PIECES, max_size=40).map("".join) | st.text(max_size=200))
def test_any_text_parses_or_is_a_value_error(text: str) -> None:
    try:
        expression = parse(text)
    except ValueError:
        return
    expression.holds(Window())  # (and a parsed one evaluates)


def test_the_window_ratios_and_quantiles() -> None:
    window = Window()
    for status in (200, 200, 502, 504, 500):
        window.record(status, 0.010, now=100.0)
    window.record(200, 0.500, now=101.0)
    assert window.network_error_ratio() == pytest.approx(2 / 6)
    assert window.response_code_ratio(500, 600, 0, 600) == pytest.approx(3 / 6)
    assert window.response_code_ratio(300, 400, 0, 100) == 0.0  # none below: 0, as oxy
    assert 10 <= window.latency_at_quantile_ms(50.0) <= 10.6
    assert 500 <= window.latency_at_quantile_ms(99.0) <= 530
    window.record(200, 0.001, now=111.5)  # ten seconds later: the old slices are gone
    assert window.network_error_ratio() == 0.0


def test_closed_open_recovering_closed() -> None:
    settings = Settings(parse("NetworkErrorRatio() > 0.5"), check_period=1.0, fallback=10.0,
                        recovery=10.0)  # fmt: skip
    breaker = Breaker(settings)
    assert breaker.allows(0.0)
    breaker.outcome(200, 0.01, now=0.0)
    breaker.outcome(502, 0.01, now=0.1)  # 1/2: not above 0.5, and not checked before 1.0
    breaker.outcome(502, 0.01, now=1.0)
    assert breaker.state.value == "open"
    assert not breaker.allows(5.0)
    assert not breaker.allows(11.0)  # recovering: none let through at its start
    assert breaker.state is State.RECOVERING
    let = [breaker.allows(11.0 + i * 0.01) for i in range(1000)]  # over the ten seconds
    # The share let through so far follows a target growing from 0 to a half (oxy's ramp).
    assert sum(let[:500]) / 500 == pytest.approx(0.25, abs=0.02)
    assert sum(let) / 1000 == pytest.approx(0.5, abs=0.02)
    assert breaker.allows(21.0)
    assert breaker.state.value == "closed"


def test_each_route_has_its_own_breaker() -> None:
    spec = {"circuitBreaker": {"expression": "NetworkErrorRatio() > 0.5"}}
    result = kroute.compile_objects([middleware("cb", spec), using("a.local", "cb"),
                                     using("b.local", "cb")])  # fmt: skip
    steps = [r.chain.steps[0] for r in result.table.routes]
    assert all(isinstance(s, CircuitBreaker) for s in steps)
    first, second = (s.breaker for s in steps if isinstance(s, CircuitBreaker))
    assert first is not second


def test_a_route_keeps_its_breaker_over_a_rebuild() -> None:
    """A rebuild (any routing object changed, or the Middleware written again the same) gives
    each route the breaker it had, state and all; other settings start a new one."""
    spec = {"circuitBreaker": {"expression": "NetworkErrorRatio() > 0.5"}}
    cache = CompileCache()

    def breakers(objects: list[dict[str, Any]]) -> list[Breaker]:
        result = kroute.compile_objects(objects, cache=cache)
        return [s.breaker for r in sorted(result.table.routes, key=lambda r: r.name)
                for s in r.chain.steps if isinstance(s, CircuitBreaker)]  # fmt: skip

    objects = [middleware("cb", spec), using("a.local", "cb"), using("b.local", "cb")]
    a, b = breakers(objects)
    for _ in range(5):
        a.outcome(502, 0.01, now=100.0)
    assert a.state is State.OPEN
    again = copy.deepcopy(objects)  # (every object a new dict: a relist)
    again[1].setdefault("status", {})["x"] = 1
    assert [x is y for x, y in zip(breakers(again), [a, b], strict=True)] == [True, True]
    assert a.state is State.OPEN
    assert not a.allows(100.1)
    (only_a,) = breakers(again[:2])  # b's route is gone: its breaker is forgotten (bounded)
    assert only_a is a
    assert breakers(again)[1] is not b
    changed = [
        middleware("cb", {"circuitBreaker": {**spec["circuitBreaker"], "fallbackDuration": "1m"}}),
        *again[1:],
    ]
    fresh, _ = breakers(changed)
    assert fresh is not a
    assert fresh.state is State.CLOSED


@pytest.mark.parametrize(("options", "why"), [
    ({}, "spec.circuitBreaker.expression"),
    ({"expression": "1 > 0", "responseCode": 700}, "spec.circuitBreaker.responseCode"),
    ({"expression": "1 > 0", "fallbackDuration": "soon"}, "spec.circuitBreaker.fallbackDuration"),
])  # fmt: skip
def test_invalid_options_name_the_field(options: dict[str, Any], why: str) -> None:
    (error,) = kroute.compile_objects([middleware("m", {"circuitBreaker": options})]).errors
    assert why in str(error)

"""The circuitBreaker expression language (Traefik v3 docs, "HTTP Middlewares" >
CircuitBreaker; vulcand/oxy `cbreaker/predicates.go`), parsed once at compile time.

    expression := or
    or         := and ("||" and)*
    and        := compare ("&&" compare)*
    compare    := value ("<" | "<=" | ">" | ">=" | "==" | "!=") value | "(" or ")"
    value      := number | call
    call       := NetworkErrorRatio() | ResponseCodeRatio(n, n, n, n) | LatencyAtQuantileMS(n)

A hand-written tokenizer and recursive descent: linear in the text, nesting bounded (a deep
one is an error, never a RecursionError), every mistake a ValueError saying what and where,
which the compiler reports as a FieldError naming the Middleware's field. `evaluate` takes the
metrics as values (`Metrics`), so deciding is pure.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from typing import Protocol

import attrs

_TOKEN = re.compile(r"\s*(?:(?P<num>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
                    r"|(?P<op>&&|\|\||<=|>=|==|!=|<|>|\(|\)|,))")  # fmt: skip
_LONGEST = 1000
_DEEPEST = 32
_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq,
    "!=": operator.ne,
}  # fmt: skip
#: The functions and how many numbers each takes.
FUNCTIONS = {"NetworkErrorRatio": 0, "ResponseCodeRatio": 4, "LatencyAtQuantileMS": 1}


class Metrics(Protocol):
    """What the functions read (`kroute.rules.middlewares.breaker.Window`)."""

    def network_error_ratio(self) -> float: ...

    def response_code_ratio(self, a: int, b: int, c: int, d: int) -> float: ...

    def latency_at_quantile_ms(self, quantile: float) -> float: ...


@attrs.frozen
class Number:
    value: float

    def number(self, metrics: Metrics) -> float:
        return self.value


@attrs.frozen
class Function:
    name: str
    args: tuple[float, ...]

    def number(self, metrics: Metrics) -> float:
        if self.name == "NetworkErrorRatio":
            return metrics.network_error_ratio()
        if self.name == "ResponseCodeRatio":
            a, b, c, d = (int(x) for x in self.args)
            return metrics.response_code_ratio(a, b, c, d)
        return metrics.latency_at_quantile_ms(self.args[0])


@attrs.frozen
class Compare:
    op: str
    left: Number | Function
    right: Number | Function

    def holds(self, metrics: Metrics) -> bool:
        return _COMPARE[self.op](self.left.number(metrics), self.right.number(metrics))


@attrs.frozen
class Logic:
    op: str  # "&&" or "||"
    left: Expression
    right: Expression

    def holds(self, metrics: Metrics) -> bool:
        if self.op == "&&":
            return self.left.holds(metrics) and self.right.holds(metrics)
        return self.left.holds(metrics) or self.right.holds(metrics)


Expression = Compare | Logic


def parse(text: str) -> Expression:
    """The expression `text`; ValueError saying what is wrong and where."""
    if len(text) > _LONGEST:
        raise ValueError(f"longer than {_LONGEST} characters")
    parser = _Parser(_tokens(text))
    expression = parser.logic("||", 0)
    if parser.at < len(parser.tokens):
        raise ValueError(
            f"unexpected {parser.tokens[parser.at][1]!r} at {parser.tokens[parser.at][0]}"
        )
    return expression


def _tokens(text: str) -> list[tuple[int, str, str]]:
    """(position, text, kind) of each token."""
    out = []
    at = 0
    while text[at:].strip():
        match = _TOKEN.match(text, at)
        if match is None:
            where = at + len(text[at:]) - len(text[at:].lstrip())
            raise ValueError(f"unexpected {text[where]!r} at {where}")
        kind = match.lastgroup or "op"
        out.append((match.start(kind), match.group(kind), kind))
        at = match.end()
    return out


class _Parser:
    def __init__(self, tokens: list[tuple[int, str, str]]) -> None:
        self.tokens = tokens
        self.at = 0

    def peek(self) -> str | None:
        return self.tokens[self.at][1] if self.at < len(self.tokens) else None

    def take(self, expected: str | None = None) -> tuple[int, str, str]:
        if self.at >= len(self.tokens):
            raise ValueError("the expression ends too soon" + (f": {expected!r} expected"
                                                                 if expected else ""))  # fmt: skip
        token = self.tokens[self.at]
        if expected is not None and token[1] != expected:
            raise ValueError(f"{expected!r} expected at {token[0]}, found {token[1]!r}")
        self.at += 1
        return token

    def logic(self, op: str, depth: int) -> Expression:
        if depth > _DEEPEST:
            raise ValueError(f"nested deeper than {_DEEPEST} levels")
        inner = "&&" if op == "||" else None
        left = self.logic(inner, depth + 1) if inner else self.compare(depth + 1)
        while self.peek() == op:
            self.take()
            right = self.logic(inner, depth + 1) if inner else self.compare(depth + 1)
            left = Logic(op, left, right)
        return left

    def compare(self, depth: int) -> Expression:
        if self.peek() == "(":
            self.take()
            inside = self.logic("||", depth + 1)
            self.take(")")
            return inside
        left = self.value()
        position, op, _ = self.take()
        if op not in _COMPARE:
            raise ValueError(f"a comparison (<, <=, >, >=, ==, !=) expected at {position}, "
                             f"found {op!r}")  # fmt: skip
        return Compare(op, left, self.value())

    def value(self) -> Number | Function:
        position, text, kind = self.take()
        if kind == "num":
            return Number(_finite(text, position))
        if kind != "name":
            raise ValueError(f"a number or a function expected at {position}, found {text!r}")
        if text not in FUNCTIONS:
            raise ValueError(f"unknown function {text!r} at {position} (known: "
                             f"{', '.join(FUNCTIONS)})")  # fmt: skip
        self.take("(")
        args: list[float] = []
        while self.peek() != ")":
            if args:
                self.take(",")
            at, number, kind = self.take()
            if kind != "num":
                raise ValueError(f"a number expected at {at}, found {number!r}")
            args.append(_argument(text, _finite(number, at), at))
        self.take(")")
        if len(args) != FUNCTIONS[text]:
            raise ValueError(f"{text} takes {FUNCTIONS[text]} arguments, given {len(args)}")
        return Function(text, tuple(args))


def _finite(text: str, position: int) -> float:
    """A number's value; ValueError for one too large for a float (a thousand digits)."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number at {position} is out of range")
    return value


def _argument(function: str, value: float, position: int) -> float:
    """An argument checked once, at compile time, so that evaluating never fails: statuses
    bounds of ResponseCodeRatio are whole numbers from 0 to 600 (Traefik's documentation
    divides by `0, 600`: every status), LatencyAtQuantileMS's percentile is 0 to 100."""
    if function == "ResponseCodeRatio" and not (value == int(value) and 0 <= value <= 600):
        raise ValueError(f"ResponseCodeRatio takes whole status bounds from 0 to 600, found "
                         f"{value:g} at {position}")  # fmt: skip
    if function == "LatencyAtQuantileMS" and not 0 <= value <= 100:
        raise ValueError(f"LatencyAtQuantileMS takes a percentile from 0 to 100, found "
                         f"{value:g} at {position}")  # fmt: skip
    return value

"""Why a request goes where it goes: the winner, the routes it beat, the ones that did not fit.

The winner comes from the table's index (`RouteTable.match`, which the tests hold equal to the
ordered scan), so that `explain --format json` costs about what a lookup costs however many
routes there are. The routes it was chosen over are worked out only when read (the text form,
users' failed expectations), and only among the routes the index files under the request's host
and for any host (`RouteTable.for_host`): the cost of the text form grows with the routes for
that host, not with the table.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import attrs

from kroute.rules.conditions import Condition, HostIs, HostRegex, HostWildcard
from kroute.rules.preview import Preview, preview
from kroute.rules.request import RequestHead
from kroute.rules.route import Route
from kroute.rules.table import RouteTable

#: How many lines of each kind the text form lists before it summarises.
TEXT_LIMIT = 8


@attrs.frozen
class Candidate:
    """A route that concerned the request; `failed` is the first condition that did not hold."""

    route: Route
    failed: Condition | None

    @property
    def matched(self) -> bool:
        return self.failed is None


@attrs.frozen
class Explanation:
    """The decision for one request (`route`, None for a 404) and what it was chosen over."""

    request: RequestHead
    route: Route | None
    table: RouteTable = attrs.field(eq=False, repr=False)

    @functools.cached_property
    def candidates(self) -> tuple[Candidate, ...]:
        """The routes for the request's host, or for any host, in precedence order: those that
        match (the first is `route`) and those that do not, with the first condition each
        failed. A route whose own host condition fails is not listed (another host's route
        says nothing about this request); one excluded only by a negated host condition
        (listener isolation) is, since it explains a surprise."""
        request = self.request
        candidates = []
        for route in self.table.for_host(request.host):
            first: Condition | None = None
            for condition in route.conditions:
                if not condition.matches(request):
                    if isinstance(condition, _HOST):
                        break
                    if first is None:
                        first = condition
            else:
                candidates.append(Candidate(route, first))
        return tuple(candidates)

    @functools.cached_property
    def outcome(self) -> Preview:
        """What the route's steps make of the request (`kroute.rules.preview`): the request
        the backend receives, or the redirect or answer given instead."""
        return preview(self.route, self.request)

    def to_json(self) -> dict[str, Any]:
        """The stable JSON form printed by `python -m kroute explain --format json`: the one
        place it is built. It reads the decision only, never `candidates`."""
        if self.route is None:
            return {"matched": False, "status": 404}
        return {"matched": True, **self.route.to_json(), **self.outcome.to_json()}

    def text(self) -> str:
        """A few lines for a person: the winner and why, what lost and why."""
        lines = [self.request.describe()]
        if self.route is None:
            lines.append("  -> no route matches: 404")
        else:
            lines.append(f"  -> {self.route.name}")
            backends = ", ".join(
                f"{b} (weight {b.weight}{', ' + b.error if b.error else ''})"
                for b in self.route.backends
            )
            lines.append(f"     backends: {backends or 'none (500)'}")
            lines.append(f"     precedence: {self.route.why}")
            lines.extend(f"     {line}" for line in self.outcome.lines())
        beaten = [c.route for c in self.candidates if c.matched and c.route is not self.route]
        failed = [(c.route, c.failed) for c in self.candidates if c.failed is not None]
        if beaten:
            lines.append("  also matched, ranked lower:")
            lines.extend(_limited(beaten, lambda route: f"{route.name}: {route.why}"))
        if failed:
            lines.append("  did not match:")
            lines.extend(_limited(failed, lambda f: f"{f[0].name}: needs {f[1].describe()}"))
        return "\n".join(lines)


_Item = TypeVar("_Item")


def _limited(items: list[_Item], line: Callable[[_Item], str]) -> list[str]:
    """The lines of the first TEXT_LIMIT items (only those are formatted: a host may have
    thousands of routes), then how many more there are."""
    shown = [f"     {line(item)}" for item in items[:TEXT_LIMIT]]
    if len(items) > TEXT_LIMIT:
        shown.append(f"     ... and {len(items) - TEXT_LIMIT} more")
    return shown


#: Conditions on the host itself (a negated one is not: see `Explanation.candidates`).
_HOST = (HostIs, HostWildcard, HostRegex)


def explain(table: RouteTable, request: RequestHead) -> Explanation:
    """Explain how `table` routes `request`: one index lookup now, the candidates when read."""
    return Explanation(request, table.match(request), table)

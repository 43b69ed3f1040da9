"""Why a request goes where it goes: the winner, the routes it beat, the ones that did not fit.

`explain` walks the table in precedence order (the plain scan, which is also the reference the
index is tested against) and keeps every route that concerns the request's host. It is meant for
people and for users' tests, not for the hot path.
"""

from __future__ import annotations

from typing import Any

import attrs

from kroute.rules.conditions import Condition, HostIs, HostRegex, HostWildcard, Not
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
    """The decision for one request and what it was chosen over."""

    request: RequestHead
    route: Route | None
    candidates: tuple[Candidate, ...]

    def to_json(self) -> dict[str, Any]:
        """The stable JSON form printed by `python -m kroute explain --format json`."""
        if self.route is None:
            return {"matched": False, "status": 404}
        return {"matched": True, **self.route.to_json()}

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
        beaten = [c for c in self.candidates if c.matched and c.route is not self.route]
        failed = [c for c in self.candidates if not c.matched]
        if beaten:
            lines.append("  also matched, ranked lower:")
            lines.extend(_limited([f"{c.route.name}: {c.route.why}" for c in beaten]))
        if failed:
            lines.append("  did not match:")
            lines.extend(
                _limited(
                    [f"{c.route.name}: needs {c.failed.describe()}" for c in failed if c.failed]
                )
            )
        return "\n".join(lines)


def _limited(items: list[str]) -> list[str]:
    shown = [f"     {item}" for item in items[:TEXT_LIMIT]]
    if len(items) > TEXT_LIMIT:
        shown.append(f"     ... and {len(items) - TEXT_LIMIT} more")
    return shown


def _is_host(condition: Condition) -> bool:
    if isinstance(condition, Not):
        return False  # listener isolation: worth showing, it explains a surprise
    return isinstance(condition, HostIs | HostWildcard | HostRegex)


def explain(table: RouteTable, request: RequestHead) -> Explanation:
    """Explain how `table` routes `request`."""
    winner: Route | None = None
    candidates = []
    for route in table.routes:
        failed = next((c for c in route.conditions if not c.matches(request)), None)
        if failed is None:
            winner = winner or route
        elif _is_host(failed):
            continue
        candidates.append(Candidate(route, failed))
    return Explanation(request, winner, tuple(candidates))

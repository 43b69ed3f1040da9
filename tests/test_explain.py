"""`explain` decides as the table does, and reads only the routes for the request's host."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

import kroute
from kroute.rules import conditions as c
from kroute.rules.preview import preview
from kroute.rules.regex import compile_regex
from kroute.rules.route import Route
from tests.test_table import requests, route_of, route_sets

HOST_CONDITIONS = (c.HostIs, c.HostWildcard, c.HostRegex)


@settings(max_examples=400)
@given(route_sets(), st.lists(requests, min_size=1, max_size=20))
def test_explanation_agrees_with_the_ordered_scan(
    routes: list[Route], reqs: list[kroute.RequestHead]
) -> None:
    """The winner is the scan's; the candidates are exactly the routes, in precedence order,
    none of whose host conditions fails, each with the first condition that does."""
    table = kroute.RouteTable(routes)
    for request in reqs:
        explanation = kroute.explain(table, request)
        winner = table.scan(request)
        assert explanation.route is winner is table.match(request)
        assert explanation.to_json() == (
            {"matched": True, **winner.to_json(), **preview(winner, request).to_json()}
            if winner
            else {"matched": False, "status": 404}
        )
        expected = []
        for route in table.routes:
            failed = [cond for cond in route.conditions if not cond.matches(request)]
            if not any(isinstance(cond, HOST_CONDITIONS) for cond in failed):
                expected.append((route, failed[0] if failed else None))
        assert [(k.route, k.failed) for k in explanation.candidates] == expected
        matched = [k.route for k in explanation.candidates if k.matched]
        assert matched[:1] == ([winner] if winner else [])


class Counted:
    """A condition that holds or not as told, and counts how often it was asked."""

    def __init__(self, holds: bool) -> None:
        self.holds = holds
        self.asked = 0

    def matches(self, request: kroute.RequestHead) -> bool:
        self.asked += 1
        return self.holds

    def describe(self) -> str:
        return f"counted ({self.holds})"


def test_json_reads_the_index_and_text_only_the_hosts_routes() -> None:
    """The JSON form checks no more than the lookup does: not a route ranked below the winner,
    nor any other host's route; the text form adds the routes for the request's host only."""
    below, other_host = Counted(False), Counted(True)
    table = kroute.RouteTable([
        route_of("winner", c.HostIs("a.com"), c.PathPrefix("")),
        route_of("below", c.HostIs("a.com"), below, rank=1),
        route_of("other", other_host, c.PathIs("/x"), c.HostIs("b.com")),
        route_of("isolated", c.Not(c.HostIs("a.com")), rank=2),
    ])  # fmt: skip
    explanation = kroute.explain(table, kroute.RequestHead.build("GET", "a.com", "/x"))
    assert explanation.to_json()["route"] == "Test ns/winner spec"
    assert (below.asked, other_host.asked) == (0, 0)
    text = explanation.text()
    assert (below.asked, other_host.asked) == (1, 0)
    assert "needs counted (False)" in text
    assert "Test ns/isolated spec: needs not (host a.com)" in text
    assert "other" not in text
    assert [k.route.source.name for k in explanation.candidates] == ["winner", "below", "isolated"]
    assert below.asked == 1  # worked out once


def test_for_host_reads_exact_wildcard_and_any_host_keys() -> None:
    table = kroute.RouteTable([
        route_of("exact", c.HostIs("x.a.com")),
        route_of("one", c.HostWildcard("a.com", any_depth=False)),
        route_of("deep", c.HostWildcard("com", any_depth=True)),
        route_of("regex", c.HostRegex(compile_regex("^y"))),
        route_of("none", c.PathIs("/")),
        route_of("elsewhere", c.HostIs("b.com")),
        route_of("elsewhere-wild", c.HostWildcard("b.com", any_depth=True)),
    ])  # fmt: skip
    names = [r.source.name for r in table.for_host("x.a.com")]
    assert names == ["exact", "one", "deep", "regex", "none"]
    assert [r.source.name for r in table.for_host("a.com")] == ["deep", "regex", "none"]
    assert [r.source.name for r in table.for_host("")] == ["regex", "none"]

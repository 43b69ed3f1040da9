"""The index must answer exactly what an ordered scan answers (hypothesis), and stay immutable."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

import kroute
from kroute.objects import BackendRef, ObjectRef
from kroute.rules import conditions as c
from kroute.rules.route import Family, Route

HOSTS = ["a.com", "b.a.com", "c.b.a.com", "x.org", "a.comm", ""]
SUFFIXES = ["a.com", "b.a.com", "org", "com"]
PATHS = ["/", "/a", "/a/", "/a/b", "/ab", "/a/b/c", "/b", "/a/bc"]
STEMS = ["", "/a", "/a/b", "/ab", "/b"]
STARTS = ["/", "/a", "/a/", "/ab", "/a/b", "/a/b/", "/b"]

host_conditions = st.one_of(
    st.builds(c.HostIs, st.sampled_from(HOSTS)),
    st.builds(c.HostWildcard, st.sampled_from(SUFFIXES), st.booleans()),
    st.just(c.HostRegex(re.compile(r"^b\."))),
)
path_conditions = st.one_of(
    st.builds(c.PathIs, st.sampled_from(PATHS)),
    st.builds(c.PathPrefix, st.sampled_from(STEMS)),
    st.builds(c.PathStartsWith, st.sampled_from(STARTS)),
    st.just(c.PathRegex(re.compile(r"/a.*c"), full=False)),
)
other_conditions = st.one_of(
    st.builds(c.MethodIs, st.sampled_from(["GET", "POST"])),
    st.builds(c.HeaderIs, st.just("x"), st.sampled_from(["1", "2"])),
    st.builds(c.HeaderPresent, st.just("y")),
    st.builds(c.Not, host_conditions),
    st.builds(c.Not, path_conditions),
)
conjunctions = st.lists(
    st.one_of(host_conditions, path_conditions, other_conditions), max_size=4
).map(tuple)


@st.composite
def route_sets(draw: st.DrawFn) -> list[Route]:
    conjs = draw(st.lists(conjunctions, max_size=30))
    ranks = draw(st.lists(st.integers(0, 5), min_size=len(conjs), max_size=len(conjs)))
    return [
        Route(
            source=ObjectRef("Test", "ns", f"r{i}"),
            field="spec",
            conditions=conj,
            backends=(BackendRef("ns", f"s{i}", 80),),
            precedence=(Family.HTTPROUTE, rank),
            why="",
        )
        for i, (conj, rank) in enumerate(zip(conjs, ranks, strict=True))
    ]


requests = st.builds(
    kroute.RequestHead.build,
    st.sampled_from(["GET", "POST"]),
    st.sampled_from([*HOSTS, "d.a.com", "e.c.b.a.com", "A.COM:80", "x.org.", ".a.com"]),
    st.sampled_from([*PATHS, "/a/b/", "/abc", "/a//b", "/a/./b/../c", "/ab/c", "/bc"]),
    headers=st.dictionaries(st.sampled_from(["x", "y"]), st.sampled_from(["1", "2"])),
)


@settings(max_examples=400)
@given(route_sets(), st.lists(requests, min_size=1, max_size=20))
def test_index_answers_what_the_ordered_scan_answers(
    routes: list[Route], reqs: list[kroute.RequestHead]
) -> None:
    table = kroute.RouteTable(routes)
    for request in reqs:
        assert table.match(request) is table.scan(request)


def test_scan_order_is_precedence_then_input_order() -> None:
    def route(name: str, rank: int) -> Route:
        return Route(ObjectRef("T", "n", name), "f", (), (), (Family.INGRESS, rank), "")

    table = kroute.RouteTable([route("b", 1), route("a", 0), route("c", 1)])
    assert [r.source.name for r in table.routes] == ["a", "b", "c"]
    assert table.match(kroute.RequestHead.build("GET", "h")) is table.routes[0]


def test_statistics_say_how_routes_were_filed() -> None:
    result = kroute.compile_objects(
        kroute.load_text(
            """
apiVersion: traefik.io/v1alpha1
kind: IngressRoute
metadata: {name: r}
spec:
  routes:
    - {match: "Host(`a.com`) && Header(`x`, `1`)", services: [{name: s, port: 80}]}
    - {match: "HostRegexp(`.*`)", services: [{name: s, port: 80}]}
"""
        )
    )
    assert result.table.statistics() == kroute.TableStatistics(
        routes=2, exact_hosts=1, wildcard_suffixes=0, any_host_routes=1,
        routes_with_residual_checks=2,
    )  # fmt: skip

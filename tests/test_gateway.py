"""Gateway API HTTPRoute semantics (SEMANTICS.md section 2); cases name their source."""

from __future__ import annotations

from typing import Any

import pytest

import kroute
from tests.builders import backend_of, compiled, gateway, httproute, route_of, to


def prefix(value: str) -> dict[str, Any]:
    return {"path": {"type": "PathPrefix", "value": value}}


def exact(value: str) -> dict[str, Any]:
    return {"path": {"type": "Exact", "value": value}}


def test_matching_paths_and_headers() -> None:
    # conformance/tests/httproute-matching.yaml
    result = compiled(
        gateway(),
        httproute(
            "matching",
            [
                {"matches": [exact("/")], "backendRefs": [to("infra-backend-v1")]},
                {"matches": [prefix("/v2")], "backendRefs": [to("infra-backend-v2")]},
                {
                    "matches": [{"headers": [{"name": "version", "value": "three"}]}],
                    "backendRefs": [to("infra-backend-v3")],
                },
            ],
        ),
    )
    assert backend_of(result, "x/") == "infra-backend-v1"
    assert backend_of(result, "x/example") is None
    assert backend_of(result, "x/v2") == "infra-backend-v2"
    assert backend_of(result, "x/v2/example") == "infra-backend-v2"
    assert backend_of(result, "x/v2example") is None
    assert backend_of(result, "x/", headers={"Version": "three"}) == "infra-backend-v1"
    assert backend_of(result, "x/other", headers={"version": "three"}) == "infra-backend-v3"
    assert backend_of(result, "x/other") is None


def test_precedence_order_of_the_spec() -> None:
    # httproute_types.go, HTTPRouteRule: Exact path; longest prefix; method; most headers;
    # most query params.
    result = compiled(
        gateway(),
        httproute(
            "p",
            [
                {"matches": [prefix("/")], "backendRefs": [to("root")]},
                {"matches": [prefix("/a")], "backendRefs": [to("a")]},
                {"matches": [prefix("/a/b")], "backendRefs": [to("ab")]},
                {"matches": [exact("/a/b")], "backendRefs": [to("exact")]},
                {"matches": [{**prefix("/a"), "method": "POST"}], "backendRefs": [to("post")]},
                {
                    "matches": [
                        {
                            **prefix("/a"),
                            "headers": [{"name": "x", "value": "1"}, {"name": "y", "value": "1"}],
                        }
                    ],
                    "backendRefs": [to("two-headers")],
                },
                {
                    "matches": [{**prefix("/a"), "headers": [{"name": "x", "value": "1"}]}],
                    "backendRefs": [to("one-header")],
                },
                {
                    "matches": [{**prefix("/a"), "queryParams": [{"name": "q", "value": "1"}]}],
                    "backendRefs": [to("query")],
                },
            ],
        ),
    )
    assert backend_of(result, "h/a/b") == "exact"
    assert backend_of(result, "h/a/b/c") == "ab"
    assert backend_of(result, "h/a/c", method="POST", headers={"x": "1"}) == "post"
    assert backend_of(result, "h/a/c", headers={"x": "1", "y": "1"}) == "two-headers"
    assert backend_of(result, "h/a/c?q=1", headers={"x": "1"}) == "one-header"
    assert backend_of(result, "h/a/c?q=1") == "query"
    assert backend_of(result, "h/a/c") == "a"
    assert backend_of(result, "h/zzz") == "root"


def test_ties_go_to_the_oldest_route_then_alphabetical_then_rule_order() -> None:
    # httproute_types.go: "the oldest Route based on creation timestamp", then "{namespace}/{name}".
    old = httproute("zz-old", [{"backendRefs": [to("old")]}], created="2020-01-01T00:00:00Z")
    new = httproute("aa-new", [{"backendRefs": [to("new")]}], created="2024-01-01T00:00:00Z")
    assert backend_of(compiled(gateway(), new, old), "h/") == "old"
    b = httproute("b", [{"backendRefs": [to("b")]}])
    a = httproute("a", [{"backendRefs": [to("a")]}])
    assert backend_of(compiled(gateway(), b, a), "h/") == "a"
    first = httproute("r", [{"backendRefs": [to("first")]}, {"backendRefs": [to("second")]}])
    assert backend_of(compiled(gateway(), first), "h/") == "first"


def test_matching_across_routes() -> None:
    # conformance/tests/httproute-matching-across-routes.yaml
    result = compiled(
        gateway(),
        httproute(
            "matching-part1",
            [
                {"matches": [exact("/")], "backendRefs": [to("v1")]},
                {"matches": [prefix("/v2")], "backendRefs": [to("v2")]},
            ],
            hostnames=["example.com", "example.net"],
        ),
        httproute(
            "matching-part2",
            [
                {
                    "matches": [{"headers": [{"name": "version", "value": "two"}]}],
                    "backendRefs": [to("v2")],
                },
                {
                    "matches": [{"headers": [{"name": "version", "value": "three"}]}],
                    "backendRefs": [to("v3")],
                },
            ],
            hostnames=["example.com"],
        ),
    )
    assert backend_of(result, "example.com/") == "v1"
    assert backend_of(result, "example.net/") == "v1"
    assert backend_of(result, "example.com/v2") == "v2"
    assert backend_of(result, "example.com/", headers={"version": "two"}) == "v1"
    assert backend_of(result, "example.com/v2", headers={"version": "three"}) == "v2"
    assert backend_of(result, "example.com/x", headers={"version": "two"}) == "v2"
    assert backend_of(result, "example.com/x", headers={"version": "three"}) == "v3"
    assert backend_of(result, "example.net/x", headers={"version": "three"}) is None


def test_listener_hostname_matching_and_isolation() -> None:
    # conformance/tests/httproute-listener-hostname-matching.yaml and
    # gateway-http-listener-isolation.yaml (GEP-1713): the most specific listener takes the
    # request; routes attached to a less specific one do not see it.
    listeners = [
        {"name": "l1", "protocol": "HTTP", "port": 80, "hostname": "bar.com"},
        {"name": "l2", "protocol": "HTTP", "port": 80, "hostname": "foo.bar.com"},
        {"name": "l3", "protocol": "HTTP", "port": 80, "hostname": "*.bar.com"},
        {"name": "l4", "protocol": "HTTP", "port": 80, "hostname": "*.foo.com"},
        {"name": "l5", "protocol": "HTTP", "port": 80},
    ]

    def attached(name: str, section: str, path: str = "/") -> dict[str, Any]:
        return httproute(
            name,
            [{"matches": [prefix(path)], "backendRefs": [to(name)]}],
            parents=[{"name": "gw", "sectionName": section}],
        )

    result = compiled(
        gateway(listeners=listeners),
        attached("v1", "l1"),
        attached("v2", "l2", "/only"),
        attached("v3", "l3"),
        attached("v4", "l4"),
        attached("v5", "l5"),
    )
    assert backend_of(result, "bar.com/") == "v1"
    assert backend_of(result, "foo.bar.com/only") == "v2"
    assert backend_of(result, "foo.bar.com/other") is None  # isolation: not v3, not v5
    assert backend_of(result, "baz.bar.com/") == "v3"
    assert backend_of(result, "a.b.bar.com/") == "v3"  # wildcards cover any depth
    assert backend_of(result, "x.foo.com/") == "v4"
    assert backend_of(result, "foo.com/") == "v5"
    assert backend_of(result, "example.org/") == "v5"


HOSTNAME_INTERSECTION = [
    # (listener hostname, route hostnames, request host, attached and matching?)
    # conformance/tests/httproute-hostname-intersection.yaml
    ("*.wildcard.io", ["bar.wildcard.io", "foo.bar.wildcard.io"], "bar.wildcard.io", True),
    ("*.wildcard.io", ["bar.wildcard.io", "foo.bar.wildcard.io"], "foo.bar.wildcard.io", True),
    ("*.wildcard.io", ["bar.wildcard.io"], "baz.wildcard.io", False),
    ("*.wildcard.io", ["non.matching.com"], "non.matching.com", False),
    ("very.specific.com", ["*.specific.com"], "very.specific.com", True),
    ("very.specific.com", ["*.specific.com"], "other.specific.com", False),
    ("*.anotherwildcard.io", ["*.anotherwildcard.io"], "a.anotherwildcard.io", True),
    ("*.anotherwildcard.io", ["*.foo.anotherwildcard.io"], "a.foo.anotherwildcard.io", True),
    ("*.anotherwildcard.io", ["*.foo.anotherwildcard.io"], "a.anotherwildcard.io", False),
    (None, ["a.com"], "a.com", True),
    ("a.com", None, "a.com", True),
    ("a.com", None, "b.com", False),
]


@pytest.mark.parametrize(("listener", "hostnames", "host", "ok"), HOSTNAME_INTERSECTION)
def test_hostname_intersection(
    listener: str | None, hostnames: list[str] | None, host: str, ok: bool
) -> None:
    lst: dict[str, Any] = {"name": "l", "protocol": "HTTP", "port": 80}
    if listener:
        lst["hostname"] = listener
    result = kroute.compile_objects(
        [
            gateway(listeners=[lst]),
            httproute("r", [{"backendRefs": [to("svc")]}], hostnames=hostnames),
        ]
    )
    assert not result.errors
    assert (backend_of(result, host + "/") == "svc") is ok


def test_exact_hostname_route_beats_wildcard_route() -> None:
    # httproute_types.go Hostnames: precedence to the largest number of characters in a
    # matching non-wildcard hostname, then in a matching hostname.
    result = compiled(
        gateway(),
        httproute("wild", [{"backendRefs": [to("wild")]}], hostnames=["*.example.com"]),
        httproute("longer", [{"backendRefs": [to("longer")]}], hostnames=["*.a.example.com"]),
        httproute("exact", [{"matches": [prefix("/x")], "backendRefs": [to("exact")]}],
                  hostnames=["b.a.example.com"]),
        httproute("any", [{"matches": [prefix("/y")], "backendRefs": [to("any")]}]),
    )  # fmt: skip
    assert backend_of(result, "b.a.example.com/x") == "exact"
    assert backend_of(result, "b.a.example.com/z") == "longer"
    assert backend_of(result, "c.example.com/z") == "wild"
    assert backend_of(result, "c.example.com/y") == "wild"
    assert backend_of(result, "other.org/y") == "any"


def test_header_names_case_insensitive_first_duplicate_wins() -> None:
    # httproute_types.go HTTPHeaderMatch: names are case-insensitive; with several entries for
    # one name only the first is considered.
    result = compiled(
        gateway(),
        httproute(
            "h",
            [
                {
                    "matches": [
                        {
                            "headers": [
                                {"name": "X-Env", "value": "prod"},
                                {"name": "x-env", "value": "staging"},
                            ]
                        }
                    ],
                    "backendRefs": [to("prod")],
                }
            ],
        ),
    )
    assert backend_of(result, "h/", headers={"x-ENV": "prod"}) == "prod"
    assert backend_of(result, "h/", headers={"x-env": "staging"}) is None
    assert backend_of(result, "h/", headers={"x-env": "PROD"}) is None  # values case-sensitive


def test_regex_matches_are_anchored() -> None:
    # Gateway API RegularExpression as Envoy implements it: a full match.
    result = compiled(
        gateway(),
        httproute(
            "re",
            [
                {
                    "matches": [{"path": {"type": "RegularExpression", "value": "/v[0-9]+/.*"}}],
                    "backendRefs": [to("versioned")],
                },
                {
                    "matches": [
                        {"queryParams": [{"type": "RegularExpression", "name": "id", "value": "[0-9]+"}]}
                    ],
                    "backendRefs": [to("numeric-id")],
                },
            ],
        ),
    )  # fmt: skip
    assert backend_of(result, "h/v2/users") == "versioned"
    assert backend_of(result, "h/api/v2/users") is None
    assert backend_of(result, "h/x?id=42") == "numeric-id"
    assert backend_of(result, "h/x?id=42a") is None
    assert backend_of(result, "h/x?ID=42") is None  # query names are case-sensitive


def test_method_match() -> None:
    result = compiled(
        gateway(),
        httproute("m", [{"matches": [{"method": "DELETE"}], "backendRefs": [to("del")]}]),
    )
    assert backend_of(result, "h/x", method="DELETE") == "del"
    assert backend_of(result, "h/x", method="GET") is None


def test_defaults_when_fields_are_omitted() -> None:
    # CRD defaults: no rules / no matches = PathPrefix "/"; backend weight 1.
    result = compiled(gateway(), httproute("d", [{"backendRefs": [{"name": "svc", "port": 80}]}]))
    found = route_of(result, "any.host/deep/path")
    assert found is not None
    assert [(b.name, b.weight) for b in found.backends] == [("svc", 1)]


def test_weights_and_zero_weight() -> None:
    result = compiled(
        gateway(),
        httproute("w", [{"backendRefs": [to("a", weight=90), to("b", weight=10), to("c", weight=0)]}]),
    )  # fmt: skip
    found = route_of(result, "h/")
    assert found is not None
    assert {b.name: b.weight for b in found.backends} == {"a": 90, "b": 10, "c": 0}


def test_cross_namespace_backend_needs_reference_grant() -> None:
    # GEP-709: ReferenceGrant in the target namespace.
    route = httproute("x", [{"backendRefs": [to("db", namespace="data")]}])
    denied = compiled(gateway(), route)
    found = route_of(denied, "h/")
    assert found is not None
    assert found.backends[0].error is not None
    assert "RefNotPermitted" in found.backends[0].error
    grant = {
        "apiVersion": "gateway.networking.k8s.io/v1beta1",
        "kind": "ReferenceGrant",
        "metadata": {"name": "allow", "namespace": "data"},
        "spec": {
            "from": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": "default"}],
            "to": [{"group": "", "kind": "Service"}],
        },
    }  # fmt: skip
    allowed = route_of(compiled(gateway(), route, grant), "h/")
    assert allowed is not None
    assert allowed.backends[0].error is None


def test_unsupported_backend_kind_keeps_its_share_as_an_error() -> None:
    result = compiled(
        gateway(),
        httproute("k", [{"backendRefs": [to("a"), {"name": "b", "kind": "Bucket", "group": "s3"}]}]),
    )  # fmt: skip
    found = route_of(result, "h/")
    assert found is not None
    assert [b.error is None for b in found.backends] == [True, False]


def test_parent_refs_section_name_port_and_class() -> None:
    listeners = [
        {"name": "web", "protocol": "HTTP", "port": 80, "hostname": "web.com"},
        {"name": "alt", "protocol": "HTTP", "port": 8080, "hostname": "alt.com"},
        {"name": "tcp", "protocol": "TCP", "port": 9000},
    ]
    gw = gateway(listeners=listeners)
    by_section = httproute(
        "s", [{"backendRefs": [to("s")]}], parents=[{"name": "gw", "sectionName": "alt"}]
    )
    by_port = httproute("p", [{"backendRefs": [to("p")]}], parents=[{"name": "gw", "port": 80}])
    result = compiled(gw, by_section, by_port)
    assert backend_of(result, "alt.com/") == "s"
    assert backend_of(result, "web.com/") == "p"
    tcp_only = httproute(
        "t", [{"backendRefs": [to("t")]}], parents=[{"name": "gw", "sectionName": "tcp"}]
    )
    result = kroute.compile_objects([gw, tcp_only])
    assert backend_of(result, "x.com/") is None
    assert any("not attached" in n for n in result.notes)
    other_class = gateway(cls="istio")
    assert (
        backend_of(compiled(other_class, httproute("o", [{"backendRefs": [to("o")]}])), "h/")
        is None
    )
    custom = compiled(
        other_class, httproute("o", [{"backendRefs": [to("o")]}]), gateway_class="istio"
    )
    assert backend_of(custom, "h/") == "o"  # fmt: skip


def test_allowed_routes_namespaces() -> None:
    # gateway_types.go AllowedRoutes: Same is the default; All; Selector on namespace labels,
    # including kubernetes.io/metadata.name that every namespace carries.
    def gw_from(spec: dict[str, Any]) -> dict[str, Any]:
        return gateway(
            listeners=[{"name": "l", "protocol": "HTTP", "port": 80, "allowedRoutes": {"namespaces": spec}}]
        )  # fmt: skip

    route = httproute("r", [{"backendRefs": [to("svc")]}], namespace="team",
                      parents=[{"name": "gw", "namespace": "default"}])  # fmt: skip
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "team", "labels": {"env": "prod"}},
    }
    assert backend_of(compiled(gateway(), route), "h/") is None
    assert backend_of(compiled(gw_from({"from": "All"}), route), "h/") == "svc"
    by_label = gw_from({"from": "Selector", "selector": {"matchLabels": {"env": "prod"}}})
    assert backend_of(compiled(by_label, route, namespace), "h/") == "svc"
    assert backend_of(compiled(by_label, route), "h/") is None
    by_name = gw_from(
        {"from": "Selector", "selector": {"matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["team"]}]}}
    )  # fmt: skip
    assert backend_of(compiled(by_name, route), "h/") == "svc"


def test_allowed_route_kinds() -> None:
    gw = gateway(
        listeners=[{"name": "l", "protocol": "HTTP", "port": 80,
                    "allowedRoutes": {"kinds": [{"kind": "GRPCRoute"}]}}]
    )  # fmt: skip
    assert backend_of(compiled(gw, httproute("r", [{"backendRefs": [to("x")]}])), "h/") is None

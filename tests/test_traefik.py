"""Traefik v3 rule language and IngressRoute semantics (SEMANTICS.md section 3).

Sources: traefik `pkg/muxer/http/matcher.go` and `matcher_test.go`, `pkg/rules/parser.go`,
`pkg/muxer/http/mux.go`, and the "Routing > Rules & Priority" documentation.
"""

from __future__ import annotations

from typing import Any

import pytest

import kroute
from kroute.rules.expr import And, Call, Negation, Or, parse_rule
from tests.builders import backend_of, compiled, ingressroute

R = kroute.RequestHead.build


def holds(rule: str, request: kroute.RequestHead) -> bool:
    return kroute.rule_condition(rule).matches(request)


MATCHER_CASES: list[tuple[str, kroute.RequestHead, bool]] = [
    # Host: case-insensitive, port and trailing dot ignored (matcher.go host()).
    ("Host(`example.com`)", R("GET", "example.com"), True),
    ("Host(`example.com`)", R("GET", "EXAMPLE.com:8443"), True),
    ("Host(`example.com`)", R("GET", "example.com."), True),
    ("Host(`Example.COM`)", R("GET", "example.com"), True),
    ("Host(`example.com`)", R("GET", "www.example.com"), False),
    ("Host(`example.com`)", R("GET", ""), False),
    # HostRegexp: searched, not anchored, on the normalised host.
    ("HostRegexp(`^[a-z]+\\.example\\.com$`)", R("GET", "api.example.com"), True),
    ("HostRegexp(`example`)", R("GET", "www.example.org"), True),
    ("HostRegexp(`^[a-z]+\\.example\\.com$`)", R("GET", "example.com"), False),
    # Path: exact, case-sensitive.
    ("Path(`/products`)", R("GET", "h", "/products"), True),
    ("Path(`/products`)", R("GET", "h", "/products/"), False),
    ("Path(`/products`)", R("GET", "h", "/Products"), False),
    # PathPrefix: character-wise (strings.HasPrefix), unlike Ingress Prefix.
    ("PathPrefix(`/products`)", R("GET", "h", "/products/shoes"), True),
    ("PathPrefix(`/products`)", R("GET", "h", "/productsale"), True),
    ("PathPrefix(`/products/`)", R("GET", "h", "/products"), False),
    # PathRegexp: searched.
    ("PathRegexp(`\\.(jpeg|jpg|png)$`)", R("GET", "h", "/img/a.png"), True),
    ("PathRegexp(`^/api/v[0-9]+`)", R("GET", "h", "/api/v2/x"), True),
    ("PathRegexp(`^/api/v[0-9]+`)", R("GET", "h", "/x/api/v2"), False),
    # Method.
    ("Method(`POST`)", R("POST", "h"), True),
    ("Method(`post`)", R("POST", "h"), True),
    ("Method(`POST`)", R("GET", "h"), False),
    # Header: names case-insensitive, values case-sensitive, any value counts.
    ("Header(`X-Env`, `prod`)", R("GET", "h", headers={"x-env": "prod"}), True),
    ("Header(`X-Env`, `prod`)", R("GET", "h", headers=[("X-Env", "dev"), ("X-Env", "prod")]), True),
    ("Header(`X-Env`, `prod`)", R("GET", "h", headers={"x-env": "PROD"}), False),
    ("HeaderRegexp(`Content-Type`, `^application/(json|yaml)$`)",
     R("GET", "h", headers={"content-type": "application/json"}), True),
    ("HeaderRegexp(`Content-Type`, `^application/(json|yaml)$`)",
     R("GET", "h", headers={"content-type": "text/html"}), False),
    # Query: values decoded; one argument means "present with an empty value".
    ("Query(`mobile`, `true`)", R("GET", "h", "/?mobile=true"), True),
    ("Query(`mobile`, `true`)", R("GET", "h", "/?mobile=false&mobile=true"), True),
    ("Query(`mobile`, `true`)", R("GET", "h", "/?Mobile=true"), False),
    ("Query(`q`, `a b`)", R("GET", "h", "/?q=a+b"), True),
    ("Query(`debug`)", R("GET", "h", "/?debug"), True),
    ("Query(`debug`)", R("GET", "h", "/?debug=1"), False),
    ("QueryRegexp(`id`, `^[0-9]+$`)", R("GET", "h", "/?id=123"), True),
    ("QueryRegexp(`id`, `^[0-9]+$`)", R("GET", "h", "/?id=12a"), False),
    ("QueryRegexp(`debug`)", R("GET", "h", "/?debug="), True),
    # ClientIP: the connection's address, IP or CIDR, IPv4 and IPv6.
    ("ClientIP(`10.0.0.0/8`)", R("GET", "h", client_ip="10.2.3.4"), True),
    ("ClientIP(`10.0.0.0/8`)", R("GET", "h", client_ip="192.0.2.1"), False),
    ("ClientIP(`192.0.2.7`)", R("GET", "h", client_ip="192.0.2.7"), True),
    ("ClientIP(`10.0.0.0/8`)", R("GET", "h", client_ip="::ffff:10.0.0.1"), True),
    ("ClientIP(`2001:db8::/32`)", R("GET", "h", client_ip="2001:db8::1"), True),
    ("ClientIP(`10.0.0.0/8`)", R("GET", "h"), False),
    # Combinators: && binds tighter than ||; ! negates; parentheses group.
    ("Host(`a`) || Host(`b`) && Path(`/x`)", R("GET", "a", "/y"), True),
    ("(Host(`a`) || Host(`b`)) && Path(`/x`)", R("GET", "a", "/y"), False),
    ("Host(`a`) && !Path(`/x`)", R("GET", "a", "/y"), True),
    ("Host(`a`) && !Path(`/x`)", R("GET", "a", "/x"), False),
    ("!(Host(`a`) || Host(`b`))", R("GET", "c"), True),
    ("!!Host(`a`)", R("GET", "a"), True),
    # Quoted arguments with Go escapes are equivalent to backticks.
    ('Host("example.com") && Header("X-A", "a\\"b")', R("GET", "example.com", headers={"x-a": 'a"b'}), True),
    ("host(`a`)", R("GET", "a"), True),  # lower-case matcher names (parser.go)
    ("HOST(`a`)", R("GET", "a"), True),
    ("Hostregexp(`^a$`)", R("GET", "a"), True),  # Title-cased lower form
]  # fmt: skip


@pytest.mark.parametrize(("rule", "request_head", "expected"), MATCHER_CASES)
def test_matchers(rule: str, request_head: kroute.RequestHead, expected: bool) -> None:
    assert holds(rule, request_head) is expected


def test_alternatives_are_indexed_like_plain_rules() -> None:
    # A rule with || becomes one route per alternative, each indexed by its own host.
    result = compiled(
        ingressroute(
            "r",
            [{"match": "(Host(`a.com`) || Host(`b.com`)) && PathPrefix(`/api`)",
              "services": [{"name": "api", "port": 80}]}],
        )
    )  # fmt: skip
    assert len(result.table) == 2
    assert result.table.statistics().exact_hosts == 2
    assert backend_of(result, "a.com/api/x") == "api"
    assert backend_of(result, "b.com/apix") == "api"
    assert backend_of(result, "c.com/api") is None


PARSE_TREES = [
    ("Host(`a`)", Call("Host", ("a",), 0)),
    ("A(`1`) && B(`2`) || C(`3`)",
     Or((And((Call("A", ("1",), 0), Call("B", ("2",), 10))), Call("C", ("3",), 20)))),
    ("!A(`1`)", Negation(Call("A", ("1",), 1))),
    ("A(`x`, \"y\\tz\")", Call("A", ("x", "y\tz"), 0)),
    ("  A( `1` ,`2` )  ", Call("A", ("1", "2"), 2)),
    ('A("\\u00e9\\x41")', Call("A", ("éA",), 0)),
]  # fmt: skip


@pytest.mark.parametrize(("text", "tree"), PARSE_TREES)
def test_parse_trees(text: str, tree: Any) -> None:
    assert parse_rule(text) == tree


SYNTAX_ERRORS = [
    ("", "empty rule"),
    ("Host(`a`", "expected ')'"),
    ("Host(`a`) &&", "expected a matcher"),
    ("Host(`a) ", "unterminated `string`"),
    ('Host("a)', 'unterminated "string"'),
    ("Host('a')", "expected a string"),
    ("Host(`a`) Path(`/`)", "unexpected 'P'"),
    ("Host(`a`) & Path(`/`)", "unexpected '&'"),
    ('Host("\\q")', "unknown escape"),
    ("Nope(`a`)", "unknown matcher 'Nope'"),
    ("Host(`a`, `b`)", "Host takes 1 argument(s), got 2"),
    ("Header(`a`)", "Header takes 2 argument(s), got 1"),
    ("Path(`no-slash`)", "does not start with '/'"),
    ("PathRegexp(`(`)", "invalid regular expression"),
    ("ClientIP(`10.0.0.300`)", "is not an IP address or CIDR range"),
    ("Host(`é.com`)", "non-ASCII"),
    ("(" * 100 + "Host(`a`)" + ")" * 100, "nested more than"),
]


@pytest.mark.parametrize(("rule", "message"), SYNTAX_ERRORS)
def test_syntax_errors_say_where_and_why(rule: str, message: str) -> None:
    with pytest.raises(kroute.RuleSyntaxError) as info:
        kroute.rule_condition(rule)
    assert message in str(info.value)
    assert 0 <= info.value.position <= len(rule)


def test_default_priority_is_rule_length_and_explicit_priority_wins() -> None:
    # Routing > Rules & Priority: "priority is the rule length by default"; higher first.
    short = {"match": "Host(`a.com`)", "services": [{"name": "short", "port": 80}]}
    longer = {
        "match": "Host(`a.com`) && PathPrefix(`/`)",
        "services": [{"name": "long", "port": 80}],
    }
    result = compiled(ingressroute("r", [short, longer]))
    assert backend_of(result, "a.com/x") == "long"
    boosted = {**short, "priority": 1000}
    assert backend_of(compiled(ingressroute("r", [boosted, longer])), "a.com/x") == "short"
    assert "priority 1000" in kroute.explain(compiled(ingressroute("r", [boosted])).table,
                                             R("GET", "a.com")).text()  # fmt: skip


def test_priority_ties_are_deterministic() -> None:
    # Traefik leaves equal priorities unordered (mux.go sorts with sort.Sort); kroute orders
    # them by {namespace}/{name}, then route order, whatever the input order.
    def route(svc: str) -> dict[str, Any]:
        return {"match": "Host(`a.com`)", "services": [{"name": svc, "port": 80}]}

    for order in (1, -1):
        objs = [ingressroute("zeta", [route("zeta")]), ingressroute("alpha", [route("alpha")])]
        assert backend_of(compiled(*objs[::order]), "a.com/") == "alpha"
    assert (
        backend_of(compiled(ingressroute("one", [route("first"), route("second")])), "a.com/")
        == "first"
    )


def test_services_ports_weights_and_namespaces() -> None:
    ir = ingressroute(
        "r",
        [{"match": "Host(`a.com`)", "services": [
            {"name": "v1", "port": "http", "weight": 3},
            {"name": "v2", "port": 8080},
            {"name": "other", "namespace": "elsewhere", "port": 80},
        ]}],
    )  # fmt: skip
    found = compiled(ir).table.match(R("GET", "a.com"))
    assert found is not None
    assert [(str(b), b.weight, b.error is None) for b in found.backends] == [
        ("default/v1:http", 3, True),
        ("default/v2:8080", 1, True),
        ("elsewhere/other:80", 1, False),
    ]
    allowed = compiled(ir, allow_cross_namespace=True).table.match(R("GET", "a.com"))
    assert allowed is not None
    assert all(b.error is None for b in allowed.backends)


def test_legacy_api_group_is_read() -> None:
    ir = ingressroute("r", [{"match": "Host(`a.com`)", "services": [{"name": "s", "port": 80}]}])
    ir["apiVersion"] = "traefik.containo.us/v1alpha1"
    assert backend_of(compiled(ir), "a.com/") == "s"


def test_deep_alternatives_fall_back_to_one_unindexed_route() -> None:
    # (a||b)&&(c||d)&&... multiplies out; past 64 alternatives the rule is kept whole.
    rule = " && ".join(f"(Header(`h{i}`, `1`) || Header(`h{i}`, `2`))" for i in range(8))
    result = compiled(
        ingressroute("big", [{"match": rule, "services": [{"name": "s", "port": 80}]}])
    )
    assert len(result.table) == 1
    headers = {f"h{i}": str(1 + i % 2) for i in range(8)}
    assert backend_of(result, "x/", headers=headers) == "s"
    assert backend_of(result, "x/", headers={**headers, "h3": "3"}) is None

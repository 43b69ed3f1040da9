"""Rule matching parity (kroute issue 18): Traefik v3.7 host wildcards, bracketed IPv6 hosts,
method case, percent-decoded paths, Ingress Prefix ties, and route regexes on RE2.

Every case is checked offline (the index, held to the ordered scan) and through `explain`.
Sources: traefik `pkg/muxer/http/matcher.go` and `mux.go` (`withRoutingPath`), the v3.7 notes
in docs/rules.md, the Kubernetes Ingress concept page ("Multiple matches"), Go `regexp/syntax`.
"""

from __future__ import annotations

from typing import Any

import pytest

import kroute
from kroute.rules import regex
from kroute.rules.conditions import PathRegex
from tests.builders import compiled, gateway, httproute, ingress, ingressroute, to


def traefik(*rules: str) -> kroute.CompileResult:
    """One IngressRoute whose route i sends to service `r{i}`."""
    routes = [{"match": rule, "services": [{"name": f"r{i}", "port": 80}]}
              for i, rule in enumerate(rules)]  # fmt: skip
    return compiled(ingressroute("parity", routes))


def decided(result: kroute.CompileResult, method: str, host: str, target: str) -> str | None:
    """The service a request goes to, the same from the index, the scan and `explain`."""
    head = kroute.RequestHead.build(method, host, target)
    found = result.table.match(head)
    assert found is result.table.scan(head)
    explained = kroute.explain(result.table, head)
    assert explained.route is found
    if found is None:
        assert "no route matches: 404" in explained.text()
        return None
    assert f"-> {found.name}" in explained.text()
    return ",".join(b.name for b in found.backends)


# (rule, method, Host header, target, whether the rule takes the request)
TRAEFIK_CASES: list[tuple[str, str, str, str, bool]] = [
    # Traefik v3.7 Host wildcards: `*.` one label, `**.` any depth, `*` every request.
    ("Host(`*.example.com`)", "GET", "api.example.com", "/", True),
    ("Host(`*.example.com`)", "GET", "API.Example.com.:8443", "/", True),
    ("Host(`*.example.com`)", "GET", "a.b.example.com", "/", False),
    ("Host(`*.example.com`)", "GET", "example.com", "/", False),
    ("Host(`*.example.com`)", "GET", "", "/", False),
    ("Host(`**.example.com`)", "GET", "a.b.example.com", "/", True),
    ("Host(`**.example.com`)", "GET", "example.com", "/", False),
    ("Host(`*`)", "GET", "anything.org", "/", True),
    ("Host(`*`)", "GET", "", "/", True),  # even without a Host header
    ("Host(`*`)", "GET", "[::1]:80", "/x", True),
    ("!Host(`*`)", "GET", "a.com", "/", False),
    # IPv6 literals: the brackets (and port) go before matching.
    ("Host(`10::10`)", "GET", "[10::10]", "/", True),
    ("Host(`10::10`)", "GET", "[10::10]:8080", "/", True),
    ("Host(`[10::10]`)", "GET", "[10::10]", "/", True),
    ("Host(`10::AB`)", "GET", "[10::ab]", "/", True),
    ("Host(`10::10`)", "GET", "[10::11]", "/", False),
    ("HostRegexp(`^10::10$`)", "GET", "[10::10]:80", "/", True),
    # Methods are case-sensitive; the rule's value is upper-cased (matcher.go method()).
    ("Method(`get`)", "GET", "h", "/", True),
    ("Method(`GET`)", "get", "h", "/", False),
    ("Method(`get`)", "get", "h", "/", False),
    ("Method(`PoSt`)", "POST", "h", "/", True),
    # Percent-encodings of all but reserved characters are decoded (mux.go withRoutingPath).
    ("Path(`/foo bar`)", "GET", "h", "/foo%20bar", True),
    ("Path(`/foo{id}`)", "GET", "h", "/foo%7Bid%7D", True),
    ("Path(`/foo{id}`)", "GET", "h", "/foo%7bid%7d", True),
    ("PathPrefix(`/foo bar`)", "GET", "h", "/foo%20bar/x", True),
    ("Path(`/café`)", "GET", "h", "/caf%C3%A9", True),
    ("PathRegexp(`^/x/\\{[0-9]+\\}$`)", "GET", "h", "/x/%7B12%7D", True),
    ("Path(`/a/b`)", "GET", "h", "/a%2Fb", False),  # reserved: stays encoded
    ("Path(`/a%2Fb`)", "GET", "h", "/a%2fb", True),
    ("Path(`/a:b`)", "GET", "h", "/a%3Ab", False),
    # Rule paths are normalised like requests (docs/rules.md): a stray "%" in a rule is a
    # literal percent, `%20` in a rule a space (Traefik compares the rule text as written).
    ("Path(`/100%`)", "GET", "h", "/100%25", True),
    ("Path(`/foo%20bar`)", "GET", "h", "/foo bar", True),
]  # fmt: skip


@pytest.mark.parametrize(("rule", "method", "host", "target", "expected"), TRAEFIK_CASES)
def test_traefik_v37_matching(
    rule: str, method: str, host: str, target: str, expected: bool
) -> None:
    result = traefik(rule)
    assert decided(result, method, host, target) == ("r0" if expected else None)


def test_wildcard_hosts_rank_by_priority_and_explain_what_they_need() -> None:
    # Traefik orders by priority (rule length): the exact host's longer rule wins.
    result = traefik("Host(`*.example.com`)", "Host(`api.example.com`)", "Host(`*`)")
    assert decided(result, "GET", "api.example.com", "/") == "r1"
    assert decided(result, "GET", "web.example.com", "/") == "r0"
    assert decided(result, "GET", "example.org", "/") == "r2"
    text = kroute.explain(result.table, kroute.RequestHead.build("GET", "web.example.com")).text()
    assert "ranked lower:\n     IngressRoute default/parity spec.routes[2]: priority 9" in text


# (Ingress paths as (path, pathType), request path, the index of the path that wins)
INGRESS_TIES = [
    ([("/foo", "Prefix"), ("/foo/", "Prefix")], "/foo", 1),
    ([("/foo", "Prefix"), ("/foo/", "Prefix")], "/foo/", 1),
    ([("/foo", "Prefix"), ("/foo/", "Prefix")], "/foo/x", 1),
    ([("/foo/", "Prefix"), ("/foo", "Prefix")], "/foo/x", 0),
    ([("/foo/", "Prefix"), ("/foo", "Exact")], "/foo", 1),  # equal length: Exact first
    ([("/foo/", "Prefix"), ("/foo/", "Exact")], "/foo/", 1),
    ([("/foo", "ImplementationSpecific"), ("/foo/", "Prefix")], "/foo", 1),
]


@pytest.mark.parametrize(("paths", "target", "winner"), INGRESS_TIES)
def test_ingress_longest_matching_path_wins_prefix_ties(
    paths: list[tuple[str, str]], target: str, winner: int
) -> None:
    # Ingress concept page, "Multiple matches": "precedence will be given first to the longest
    # matching path"; `/foo/` is longer than `/foo` and matches the same requests.
    rules = [(p, t, f"svc{i}") for i, (p, t) in enumerate(paths)]
    result = compiled(ingress("web", [("example.com", rules)]))
    assert decided(result, "GET", "example.com", target) == f"svc{winner}"


def test_route_regexes_run_on_re2() -> None:
    condition = kroute.rule_condition("PathRegexp(`(a+)+$`)")
    assert isinstance(condition, PathRegex)
    assert isinstance(condition.pattern, regex.Regex)
    assert regex.ENGINE == "RE2 (google-re2)"
    assert type(condition.pattern._compiled).__module__ == "re2"
    # A backtracking engine would not come back from this in the lifetime of the test run;
    # docs/benchmarks.md has the time RE2 takes for it.
    crafted = kroute.RequestHead.build("GET", "h", "/" + "a" * 10_000 + "!")
    assert not condition.matches(crafted)
    assert condition.matches(kroute.RequestHead.build("GET", "h", "/" + "a" * 10_000))


def test_go_semantics_dollar_is_the_end_of_the_text() -> None:
    # Go and RE2: `$` without (?m) is the end of the text (Python's would match before "\n").
    condition = kroute.rule_condition("HeaderRegexp(`X`, `^a$`)")
    assert condition.matches(kroute.RequestHead.build(headers={"x": "a"}))
    assert not condition.matches(kroute.RequestHead.build(headers={"x": "a\n"}))


# Patterns Go's regexp (RE2) refuses: never run on a backtracking engine instead.
UNSUPPORTED = [
    ("(a)\\1", "invalid escape sequence"),  # backreference
    ("(?P<x>a)(?P=x)", "invalid"),
    ("a(?=b)", "invalid perl operator"),  # lookahead
    ("a(?!b)", "invalid perl operator"),
    ("(?<=a)b", "invalid perl operator"),  # lookbehind
    ("a\\Z", "invalid escape sequence"),  # Python's end of text; Go has \z
    ("\\C", "not Go regexp syntax"),  # RE2 C++ only
    ("x{1001}", "invalid repetition size"),
    ("(", "missing )"),
]


@pytest.mark.parametrize(("pattern", "reason"), UNSUPPORTED)
def test_unsupported_regex_syntax_rejects_the_object_and_names_it(
    pattern: str, reason: str
) -> None:
    good = ingressroute("good", [{"match": "Host(`ok.com`)", "services": [to("ok")]}])
    objects: list[tuple[dict[str, Any], str, str]] = [
        (ingressroute("bad", [{"match": f"PathRegexp(`{pattern}`)", "services": [to("x")]}]),
         "IngressRoute default/bad", "spec.routes[0].match"),
        (ingressroute("bad", [{"match": f"HeaderRegexp(`X`, `{pattern}`)", "services": []}]),
         "IngressRoute default/bad", "spec.routes[0].match"),
        (httproute("bad", [{"matches": [{"path": {"type": "RegularExpression", "value": pattern}}]}]),
         "HTTPRoute default/bad", "spec.rules[0].matches[0].path.value"),
        (httproute("bad", [{"matches": [{"headers": [
            {"type": "RegularExpression", "name": "x", "value": pattern}]}]}]),
         "HTTPRoute default/bad", "spec.rules[0].matches[0].headers[0].value"),
    ]  # fmt: skip
    for obj, name, field in objects:
        result = kroute.compile_objects([gateway(), good, obj])
        (error,) = result.errors
        assert (error.obj, error.field) == (name, field)
        assert reason in str(error)
        assert "RE2" in str(error)
        assert decided(result, "GET", "ok.com", "/") == "ok"


def test_redirect_location_encodes_the_decoded_path_again() -> None:
    # The routing path is decoded (a space, non-ASCII); a Location must be a URI again, and an
    # IPv6 host gets its brackets back (RFC 3986 sections 3.3 and 3.2.2).
    redirect = kroute.rules.redirect.Redirect(status=308, scheme="https", only_from="http")
    head = kroute.RequestHead.build("GET", "[10::10]:80", "/a%20b/caf%C3%A9%2F%0A?q=1")
    assert head.path == "/a b/café%2F%0A"
    location = redirect.location(scheme="http", host=head.host, port=head.port,
                                 path=head.path, query=head.query_string)  # fmt: skip
    assert location == "https://[10::10]/a%20b/caf%C3%A9%2F%0A?q=1"

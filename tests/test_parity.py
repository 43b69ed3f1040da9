"""Rule matching parity (kroute issue 18): Traefik v3.7 host wildcards, bracketed IPv6 hosts,
method case, percent-decoded paths, Ingress Prefix ties, and route regexes on RE2; then the
double-wildcard priority penalty, invalid percent-escapes, empty matcher arguments,
absolute-form targets and HostRegexp's trailing dot.

Every case is checked offline (the index, held to the ordered scan) and through `explain`.
Sources: traefik `pkg/muxer/http/matcher.go` and `mux.go` (`withRoutingPath`), `pkg/muxer`
(`DoubleWildcardPenalty`), `pkg/rules` (`CheckRule`), `pkg/middlewares/requestdecorator`, Go's
net/http and `url.ParseRequestURI`, the v3.7 notes in docs/rules.md, the Kubernetes Ingress
concept page ("Multiple matches"), Go `regexp/syntax`.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

import kroute
from kroute.cli import main
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
    # Absolute-form targets: the authority is the host, the Host header is ignored (RFC 9112
    # section 3.2.2; Go's net/http sets req.Host from the URL, Traefik routes on req.Host).
    ("Host(`other.example`) && Path(`/p`)", "GET", "host.example", "http://other.example/p", True),
    ("Host(`host.example`)", "GET", "host.example", "http://other.example/p", False),
    ("Host(`other.example`)", "GET", "", "HTTPS://user@Other.Example:8443/p?q=1", True),
    ("Host(`10::10`) && Path(`/a b`)", "GET", "h", "http://[10::10]:80/a%20b", True),
    ("Path(`/`)", "GET", "h", "http://other.example", True),
    ("Host(`host.example`)", "GET", "host.example", "http:///p", True),  # no authority: Host
    ("Query(`q`, `1`)", "GET", "h", "http://h/?q=1", True),
    # HostRegexp sees the trailing dot (Traefik's canonical host keeps it); Host does not.
    ("HostRegexp(`^example\\.com$`)", "GET", "example.com.", "/", False),
    ("HostRegexp(`^example\\.com\\.$`)", "GET", "Example.COM.:80", "/", True),
    ("HostRegexp(`^example\\.com$`)", "GET", "example.com", "/", True),
    ("Host(`example.com`)", "GET", "example.com.", "/", True),
    ("Host(`example.com.`)", "GET", "example.com", "/", True),
    ("Host(`*.example.com`)", "GET", "a.example.com.", "/", True),
]  # fmt: skip


@pytest.mark.parametrize(("rule", "method", "host", "target", "expected"), TRAEFIK_CASES)
def test_traefik_v37_matching(
    rule: str, method: str, host: str, target: str, expected: bool
) -> None:
    result = traefik(rule)
    assert decided(result, method, host, target) == ("r0" if expected else None)


# (the rules of routes r0, r1, r2; (host, the route it goes to) pairs; what explain says for
# the first host)
RANKINGS = [
    # Traefik orders by priority (rule length): the exact host's longer rule wins.
    (("Host(`*.example.com`)", "Host(`api.example.com`)", "Host(`*`)"),
     [("web.example.com", "r0"), ("api.example.com", "r1"), ("example.org", "r2")],
     "ranked lower:\n     IngressRoute default/parity spec.routes[2]: priority 9"),
    # Double wildcards cost their stars (see PRIORITIES): plain lengths would put `**.` (22)
    # above `*.` (21) and level with this exact host (22).
    (("Host(`**.example.com`)", "Host(`*.example.com`)", "Host(`ab.example.com`)"),
     [("b.example.com", "r1"), ("ab.example.com", "r2"), ("c.b.example.com", "r0")],
     "spec.routes[0]: priority 20 (rule length 22 less 2 for `**.` hosts)"),
]  # fmt: skip


@pytest.mark.parametrize(("rules", "expected", "explained"), RANKINGS)
def test_wildcard_hosts_rank_by_priority_and_explain_what_they_need(
    rules: tuple[str, ...], expected: list[tuple[str, str]], explained: str
) -> None:
    result = traefik(*rules)
    for host, winner in expected:
        assert decided(result, "GET", host, "/") == winner
    text = kroute.explain(result.table, kroute.RequestHead.build("GET", expected[0][0])).text()
    assert explained in text


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


# (rule, Traefik v3.7's default priority): the rule length, less 2 (`DoubleWildcardPenalty`,
# `len("**")`) for each Host value starting with `**.`, wherever it is in the rule.
PRIORITIES = [
    ("Host(`**.example.com`)", 20),
    ("Host(`*.example.com`)", 21),
    ("Host(`a.example.com`)", 21),
    ("Host(`*`)", 9),
    ("host(`**.a.com`)", 14),
    ("Host(`**.a.com`) || Host(`**.b.com`)", 32),
    ("!Host(`**.a.com`) && Path(`/x`)", 29),
    ("Header(`X`, `**.a.com`) && Host(`a.**.com`)", 43),
]


@pytest.mark.parametrize(("rule", "priority"), PRIORITIES)
def test_double_wildcard_hosts_cost_their_stars(rule: str, priority: int) -> None:
    # traefik pkg/muxer DoubleWildcardPenalty: "its stars do not count, so that the expression
    # ranks below the single-label wildcard and the exact hosts it covers".
    for route in traefik(rule).table.routes:  # (one per alternative of an `||`)
        assert route.precedence[1] == -priority
        assert route.why.startswith(f"priority {priority} (rule length")


@pytest.mark.parametrize("target", ["/foo%zz", "/%", "/%4", "/a%2", "/%%41", "http://h/%g0"])
def test_invalid_percent_escapes_are_a_400_naming_the_request(target: str, tmp_path: Path) -> None:
    # Go's url.ParseRequestURI refuses them ("invalid URL escape"): net/http answers 400.
    with pytest.raises(kroute.InvalidRequest) as info:
        kroute.RequestHead.build("GET", "h", target)
    assert info.value.status_hint == 400
    assert repr(target) in str(info.value)
    # ... and `explain` answers the line with that error (exit status 2).
    manifest = tmp_path / "routes.yaml"
    manifest.write_text(
        "apiVersion: traefik.io/v1alpha1\nkind: IngressRoute\nmetadata: {name: r}\n"
        "spec: {routes: [{match: 'Host(`h`)', services: [{name: s, port: 80}]}]}\n"
    )
    out, err = io.StringIO(), io.StringIO()
    line = f'{{"host": "h", "path": "{target}"}}\n{{"host": "h", "path": "/%41"}}\n'
    code = main(["explain", "-f", str(manifest)], stdin=io.StringIO(line), stdout=out, stderr=err)
    assert code == 2
    first, second = out.getvalue().splitlines()
    assert "invalid percent-escape" in first
    assert '"matched": true' in second


def test_the_query_keeps_go_leniency_with_bad_escapes() -> None:
    # Go parses the query only when a matcher reads it, skipping what does not decode.
    head = kroute.RequestHead.build("GET", "h", "/a?x=%zz&q=1")
    assert head.path == "/a"
    assert head.query["q"] == ("1",)


EMPTY_ARGUMENTS = [
    ("Host(``)", "Host: argument 1 is empty", 0),
    ("HostRegexp(``)", "HostRegexp: argument 1 is empty", 0),
    ("Path(``)", "Path: argument 1 is empty", 0),
    ("PathPrefix(``)", "PathPrefix: argument 1 is empty", 0),
    ("PathRegexp(``)", "PathRegexp: argument 1 is empty", 0),
    ("Method(``)", "Method: argument 1 is empty", 0),
    ("Header(``, `x`)", "Header: argument 1 is empty", 0),
    ("Header(`x`, ``)", "Header: argument 2 is empty", 0),
    ("HeaderRegexp(``, `x`)", "HeaderRegexp: argument 1 is empty", 0),
    ("HeaderRegexp(`x`, ``)", "HeaderRegexp: argument 2 is empty", 0),
    ("Query(``)", "Query: argument 1 is empty", 0),
    ("Query(`k`, ``)", "Query: argument 2 is empty", 0),
    ("QueryRegexp(``, `x`)", "QueryRegexp: argument 1 is empty", 0),
    ("QueryRegexp(`k`, ``)", "QueryRegexp: argument 2 is empty", 0),
    ("ClientIP(``)", "ClientIP: argument 1 is empty", 0),
    ('Host(`a`) && !path("")', "Path: argument 1 is empty", 14),
]


@pytest.mark.parametrize(("rule", "reason", "position"), EMPTY_ARGUMENTS)
def test_empty_matcher_arguments_are_errors(rule: str, reason: str, position: int) -> None:
    # traefik pkg/rules CheckRule: "empty args for matcher", for every v3 matcher.
    with pytest.raises(kroute.RuleSyntaxError) as info:
        kroute.rule_condition(rule)
    assert reason in str(info.value)
    assert info.value.position == position
    # ... the object is rejected, naming the field, and every other route still routes.
    good = ingressroute("good", [{"match": "Host(`ok.com`)", "services": [to("ok")]}])
    bad = ingressroute("bad", [{"match": rule, "services": [to("x")]}])
    result = kroute.compile_objects([good, bad])
    (error,) = result.errors
    assert (error.obj, error.field) == ("IngressRoute default/bad", "spec.routes[0].match")
    assert reason in str(error)
    assert decided(result, "GET", "ok.com", "/") == "ok"


def test_one_argument_query_still_asks_for_an_empty_value() -> None:
    # Traefik docs: Query(`mobile`) matches `/search?mobile` (no empty argument is written).
    assert decided(traefik("Query(`mobile`)"), "GET", "h", "/search?mobile") == "r0"
    assert decided(traefik("QueryRegexp(`mobile`)"), "GET", "h", "/search?mobile=") == "r0"

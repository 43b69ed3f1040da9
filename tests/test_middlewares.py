"""Traefik Middlewares offline: what each does to a request (through `kroute.rules.preview`,
the runner every front uses), the edge cases of Traefik's own tests, what is refused and how
the reasons read, and hypothesis on hostile paths."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kroute
from kroute.pipeline import UpstreamRequest
from kroute.rules.preview import Preview, preview
from kroute.rules.regex import compile_regex
from kroute.rules.request import RequestHead
from tests.builders import httproute, ingress, ingressroute, to
from tests.test_middlewares_e2e import middleware, using
from tests.test_pipeline_e2e import ext


def run(spec: dict[str, Any], target: str, *, method: str = "GET", scheme: str = "http",
        headers: dict[str, str] | None = None, host: str = "mw.local") -> Preview:  # fmt: skip
    """What a route through one Middleware (`spec`) makes of `target`."""
    result = kroute.compile_objects([middleware("m", spec), using(host, "m")])
    assert not result.errors, [str(e) for e in result.errors]
    head = RequestHead.build(method, host, target, headers=headers, scheme=scheme)
    return preview(result.table.match(head), head)


def forwarded(spec: dict[str, Any], target: str, **request: Any) -> tuple[str, dict[str, Any]]:
    outcome = run(spec, target, **request)
    assert outcome.upstream is not None, outcome
    return outcome.upstream.target, outcome.to_json()["upstream"]["headers"]  # type: ignore[index]


# -- stripPrefix: traefik pkg/middlewares/stripprefix/strip_prefix_test.go, its cases --------------


@pytest.mark.parametrize(("prefixes", "path", "sent", "header"), [
    ([], "/noprefixes", "/noprefixes", None),
    (["/"], "/", "/", "/"),
    (["/stat"], "/stat", "/", "/stat"),
    (["/stat/"], "/stat/", "/", "/stat/"),
    (["/stat/"], "/stat/us", "/us", "/stat/"),
    (["/stat/"], "/status", "/status", None),
    (["/stat"], "/stat/", "/", "/stat"),
    (["/stat", "/stat/us"], "/stat/us", "/us", "/stat"),  # the first that matches
    (["/mismatch", "/stat"], "/stat", "/", "/stat"),
    (["/stat"], "/status", "/us", "/stat"),  # character-wise, as Traefik
    (["/stat"], "/stat/a%2Fb", "/a%2Fb", "/stat"),  # an encoded slash stays encoded
])  # fmt: skip
def test_strip_prefix(prefixes: list[str], path: str, sent: str, header: str | None) -> None:
    target, headers = forwarded({"stripPrefix": {"prefixes": prefixes}}, path)
    assert target == sent
    assert headers.get("x-forwarded-prefix") == header


@pytest.mark.parametrize("path", ["/api./foo", "/api../foo"])
def test_strip_prefix_answers_400_when_the_rest_is_not_a_clean_path(path: str) -> None:
    outcome = run({"stripPrefix": {"prefixes": ["/api"]}}, path)
    assert outcome.status is not None
    assert outcome.status[0] == 400


def test_force_slash_is_accepted_and_changes_nothing() -> None:
    for flag in (True, False):
        assert forwarded({"stripPrefix": {"prefixes": ["/a"], "forceSlash": flag}}, "/a")[0] == "/"


def test_strip_prefix_regex() -> None:
    spec = {"stripPrefixRegex": {"regex": ["/foo/[a-z0-9]+/[0-9]+/"]}}
    assert forwarded(spec, "/foo/abc/123/x") == ("/x", {"host": "mw.local",
                                                        "x-forwarded-prefix": "/foo/abc/123/"})  # fmt: skip
    assert forwarded(spec, "/a/foo/abc/123/x")[0] == "/a/foo/abc/123/x"  # not a prefix


def test_add_prefix_replace_path_and_regex() -> None:
    assert forwarded({"addPrefix": {"prefix": "/foo"}}, "/bar?q=1")[0] == "/foo/bar?q=1"
    assert forwarded({"addPrefix": {"prefix": "foo"}}, "/bar")[0] == "/foo/bar"
    target, headers = forwarded({"replacePath": {"path": "/foo%2Fbar"}}, "/aaa/bbb?x=1")
    assert (target, headers["x-replaced-path"]) == ("/foo%2Fbar?x=1", "/aaa/bbb")


# -- replacePathRegex: traefik pkg/middlewares/replacepathregex, its cases -----------------------


@pytest.mark.parametrize(("regex", "replacement", "path", "sent"), [
    ("^/whoami/(.*)", "/who-am-i/$1", "/whoami/and/whoami", "/who-am-i/and/whoami"),
    ("/whoami", "/who-am-i", "/whoami/and/whoami", "/who-am-i/and/who-am-i"),
    ("/whoami", "", "/whoami/and/whoami", "/and"),
    ("/whoami", " ", "/whoami/and/whoami", "/and"),  # trimmed
    ("/no-match", "/whoami", "/whoami/and/whoami", "/whoami/and/whoami"),
    ("^(?i)/downloads/([^/]+)/([^/]+)$", "/downloads/$1-$2", "/downloads/src/source.go",
     "/downloads/src-source.go"),
    ("/aaa/bbb", "/foo%2Fbar", "/aaa/bbb", "/foo%2Fbar"),
    ("/aaa%2Fbbb", "/foo/bar", "/aaa%2Fbbb", "/foo/bar"),
    ("/aaa/bbb", "/foo/bar", "/aaa%2Fbbb", "/aaa%2Fbbb"),
    ("^/(?P<first>[^/]+)/(.*)", "/${2}/${first}", "/a/b", "/b/a"),
])  # fmt: skip
def test_replace_path_regex(regex: str, replacement: str, path: str, sent: str) -> None:
    target, headers = forwarded({"replacePathRegex": {"regex": regex,
                                                      "replacement": replacement}}, path)  # fmt: skip
    assert target == sent
    assert headers.get("x-replaced-path") == (path if sent != path else None)


def test_replace_path_regex_refuses_what_it_would_leave_unclean() -> None:
    outcome = run({"replacePathRegex": {"regex": "^/foo(.*)", "replacement": "/$1"}},
                  "/foo../bar")  # fmt: skip
    assert outcome.status is not None
    assert outcome.status[0] == 400
    outcome = run({"replacePathRegex": {"regex": "^/x", "replacement": "/%zz"}}, "/x")
    assert outcome.status is not None
    assert outcome.status[0] == 500


def test_go_replacement_templates() -> None:
    regex = compile_regex(r"(?P<n>b)")
    assert regex.replace_all("abc", "[${n}$n$$$1x$]") == "a[bb$$]c"  # $1x is group "1x": empty
    assert compile_regex("a*").replace_all("baaac", "x") == "xbxcx"  # Go, not Python's re.sub


# -- headers --------------------------------------------------------------------------------------


def test_custom_headers_set_remove_and_host() -> None:
    spec = {"headers": {"customRequestHeaders": {"X-Script-Name": "test", "X-Drop": "",
                                                 "Host": "backend.internal"},
                        "customResponseHeaders": {"X-Custom-Response-Header": "value"}}}  # fmt: skip
    outcome = run(spec, "/", headers={"X-Drop": "1", "X-Script-Name": "old"})
    assert outcome.upstream is not None
    assert outcome.to_json()["upstream"]["headers"] == {  # type: ignore[index]
        "host": "backend.internal",
        "x-script-name": "test",
    }
    assert outcome.response_headers == ((b"X-Custom-Response-Header", b"value"),)


@pytest.mark.parametrize(("scheme", "sts"), [("https", True), ("http", False)])
def test_sts_only_over_tls_unless_forced(scheme: str, sts: bool) -> None:
    spec = {"headers": {"stsSeconds": 315360000, "stsIncludeSubdomains": True,
                        "stsPreload": True, "publicKey": "pin-sha256=\"x\""}}  # fmt: skip
    headers = dict(run(spec, "/", scheme=scheme).response_headers)
    if sts:
        assert headers[b"Strict-Transport-Security"] == (b"max-age=315360000; "
                                                          b"includeSubDomains; preload")  # fmt: skip
        assert headers[b"Public-Key-Pins"] == b'pin-sha256="x"'
    else:
        assert headers == {}
    spec["headers"]["isDevelopment"] = True
    assert dict(run(spec, "/", scheme="https").response_headers) == {}


def test_custom_values_override_the_flags() -> None:
    spec = {"headers": {"frameDeny": True, "customFrameOptionsValue": "SAMEORIGIN",
                        "browserXssFilter": True, "customBrowserXSSValue": "0",
                        "referrerPolicy": "no-referrer", "permissionsPolicy": "camera=()",
                        "contentSecurityPolicyReportOnly": "default-src 'self'"}}  # fmt: skip
    assert dict(run(spec, "/").response_headers) == {
        b"X-Frame-Options": b"SAMEORIGIN", b"X-XSS-Protection": b"0",
        b"Referrer-Policy": b"no-referrer", b"Permissions-Policy": b"camera=()",
        b"Content-Security-Policy-Report-Only": b"default-src 'self'"}  # fmt: skip


def test_cors_wildcard_with_credentials_stays_a_wildcard() -> None:
    # Traefik sends `*` (which browsers refuse with credentials); echoing the Origin instead
    # would open credentialed requests to every site.
    spec = {"headers": {"accessControlAllowOriginList": ["*"],
                        "accessControlAllowCredentials": True}}  # fmt: skip
    (step,) = kroute.compile_objects([middleware("m", spec), using("mw.local", "m")]
                                     ).table.routes[0].chain.steps  # fmt: skip
    asked = [(b"Origin", b"https://a.example"), (b"Access-Control-Request-Method", b"GET")]
    answer = step.request(UpstreamRequest("OPTIONS", "/", None, asked))
    assert answer is not None
    assert answer.status == 200
    assert (b"Access-Control-Allow-Origin", b"*") in answer.headers
    assert (b"Access-Control-Allow-Credentials", b"true") in answer.headers


def test_cors_origin_regex() -> None:
    spec = {"headers": {"accessControlAllowOriginListRegex": [r"^https://[a-z]+\.example\.org$"]}}
    kroute_result = kroute.compile_objects([middleware("m", spec), using("mw.local", "m")])
    step = kroute_result.table.routes[0].chain.steps[0]
    assert step.allows(b"https://app.example.org")  # type: ignore[attr-defined]
    assert not step.allows(b"https://app.example.org.evil")  # type: ignore[attr-defined]


# -- redirects ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("spec", "url", "method", "expected"), [
    ({"scheme": "https"}, "http://mw.local/a?b=1", "GET", (302, "https://mw.local/a?b=1")),
    ({"scheme": "https", "permanent": True}, "http://mw.local/a", "POST",
     (308, "https://mw.local/a")),
    ({"scheme": "https", "port": "8443"}, "http://mw.local:8080/a", "GET",
     (302, "https://mw.local:8443/a")),
    ({"scheme": "https", "port": "443"}, "http://mw.local/a", "GET", (302, "https://mw.local/a")),
    ({"scheme": "https"}, "https://mw.local/a", "GET", None),  # already there: forwarded
    ({"scheme": "https"}, "https://mw.local:8443/a", "GET", (302, "https://mw.local/a")),
])  # fmt: skip
def test_redirect_scheme(spec: dict[str, Any], url: str, method: str,
                         expected: tuple[int, str] | None) -> None:  # fmt: skip
    scheme, rest = url.split("://")
    host, _, path = rest.partition("/")
    result = kroute.compile_objects([middleware("m", {"redirectScheme": spec}),
                                     using("mw.local", "m")])  # fmt: skip
    head = RequestHead.build(method, host, "/" + path, scheme=scheme)
    assert preview(result.table.match(head), head).redirect == expected


def test_redirect_scheme_believes_x_forwarded_proto_as_the_front_passed_it() -> None:
    outcome = run({"redirectScheme": {"scheme": "https"}}, "/a",
                  headers={"X-Forwarded-Proto": "https"})  # fmt: skip
    assert outcome.upstream is not None


def test_redirect_regex() -> None:
    spec = {"redirectRegex": {"regex": "^http://mw.local/(.*)",
                              "replacement": "http://mydomain/${1}", "permanent": True}}  # fmt: skip
    assert run(spec, "/some path?x=1").redirect == (301, "http://mydomain/some%20path?x=1")
    assert run({"redirectRegex": {"regex": "^http://nomatch/", "replacement": "x"}},
               "/").upstream is not None  # fmt: skip


# -- references and what fails closed --------------------------------------------------------------


def reasons(*objects: dict[str, Any], **options: Any) -> list[str]:
    return [str(r) for r in kroute.compile_objects(objects, **options).refused]


def test_missing_invalid_and_unsupported_middlewares_say_which() -> None:
    assert reasons(using("a.local", "nope")) == [
        "IngressRoute default/a: spec.routes[0].middlewares[0]: answers 500: "
        "Middleware default/nope does not exist"
    ]
    result = kroute.compile_objects([middleware("bad", {"stripPrefix": {"wrong": 1}}),
                                     using("a.local", "bad")])  # fmt: skip
    assert [str(e) for e in result.errors] == [
        "Middleware default/bad: spec.stripPrefix.wrong: unknown option (known: prefixes, "
        "forceSlash)"
    ]
    assert "Middleware default/bad is invalid: spec.stripPrefix.wrong" in str(result.refused[0])
    (refused,) = reasons(middleware("grpc", {"grpcWeb": {"allowOrigins": ["*"]}}),
                         using("a.local", "grpc"))  # fmt: skip
    assert "Middleware default/grpc (spec.grpcWeb): the grpcWeb middleware is not " \
           "supported by kroute yet" in refused  # fmt: skip


@pytest.mark.parametrize(("spec", "why"), [
    ({}, "exactly one type, found 0"),
    ({"stripPrefix": {"prefixes": []}, "addPrefix": {"prefix": "/a"}}, "found 2"),
    ({"madeUp": {}}, "unknown middleware type 'madeUp'"),
    ({"addPrefix": {"prefix": ""}}, "cannot be empty"),
    ({"replacePathRegex": {"regex": "(a)\\1", "replacement": "x"}}, "RE2"),
    ({"headers": {"customRequestHeaders": {"X-A": "1", "x-a": "2"}}}, "case-insensitive"),
    ({"headers": {"customRequestHeaders": {"Host": ""}}}, "cannot be removed"),
    ({"headers": {"customRequestHeaders": {"Content-Length": "0"}}}, "frames the message"),
    ({"headers": {"customResponseHeaders": {"transfer-encoding": "chunked"}}}, "step cannot"),
    ({"headers": {"customRequestHeaders": {"Connection": "close"}}}, "one connection"),
    ({"headers": {"accessControlAllowOriginList": ["https://*.example.com"]}}, "literally"),
    ({"redirectScheme": {"scheme": "ftp"}}, "not http or https"),
    ({"redirectScheme": {"scheme": "https", "port": "99999"}}, "not a port"),
])  # fmt: skip
def test_invalid_middlewares_are_errors_naming_the_field(spec: dict[str, Any], why: str) -> None:
    result = kroute.compile_objects([middleware("m", spec)])
    (error,) = result.errors
    assert why in str(error)


def test_cross_namespace_needs_the_option() -> None:
    objects = [middleware("m", {"addPrefix": {"prefix": "/a"}}, namespace="other"),
               using("a.local", "other/m")]  # fmt: skip
    (refused,) = reasons(*objects)
    assert "Middleware other/m is not in namespace default" in refused
    assert "allowCrossNamespace" in refused
    assert reasons(*objects, allow_cross_namespace=True) == []


def test_qualified_names() -> None:
    route = ingressroute("a", [{"match": "Host(`a.local`)", "services": [{"name": "web",
                         "port": 80}], "middlewares": [{"name": "other-m@kubernetescrd"},
                                                       {"name": "auth@file"}]}])  # fmt: skip
    mw = middleware("m", {"addPrefix": {"prefix": "/a"}}, namespace="other")
    first, second = reasons(mw, route)
    assert "give the namespace field instead" in first
    assert "provider 'file' does not exist in kroute" in second
    assert [r for r in reasons(mw, route, allow_cross_namespace=True)
            if "middlewares[0]" in r] == []  # fmt: skip


def test_chain_cycles_and_ambiguous_ids_are_reported() -> None:
    (refused,) = reasons(middleware("a", {"chain": {"middlewares": [{"name": "b"}]}}),
                         middleware("b", {"chain": {"middlewares": [{"name": "a"}]}}),
                         using("x.local", "a"))  # fmt: skip
    assert "Middleware chain cycle: default/a > default/b > default/a" in refused
    annotated = ingress(
        "i",
        [("i.local", [("/", "Prefix", "web")])],
        annotations={"traefik.ingress.kubernetes.io/router.middlewares": "a-b-c@kubernetescrd"},
    )
    (refused,) = reasons(middleware("b-c", {"addPrefix": {"prefix": "/x"}}, namespace="a"),
                         middleware("c", {"addPrefix": {"prefix": "/y"}}, namespace="a-b"),
                         annotated)  # fmt: skip
    assert "ambiguous: a/b-c and a-b/c" in refused


def test_extension_ref_names_the_routes_own_namespace() -> None:
    gateway = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
               "metadata": {"name": "gw", "namespace": "default"},
               "spec": {"gatewayClassName": "kroute", "listeners": [
                   {"name": "http", "protocol": "HTTP", "port": 80,
                    "allowedRoutes": {"namespaces": {"from": "All"}}}]}}  # fmt: skip
    route = httproute("r", [{"filters": [ext("m", "traefik.io", "Middleware")],
                             "backendRefs": [to("web")]}], namespace="team")  # fmt: skip
    (refused,) = reasons(gateway, route, middleware("m", {"addPrefix": {"prefix": "/a"}}))
    assert "Middleware team/m does not exist" in refused
    assert reasons(gateway, route, middleware("m", {"addPrefix": {"prefix": "/a"}},
                                              namespace="team")) == []  # fmt: skip


# -- Ingress router.priority and router.pathmatcher -----------------------------------------------


def test_router_priority_and_pathmatcher() -> None:
    low = ingress("low", [("p.local", [("/api", "Prefix", "api")])])
    high = ingress(
        "high",
        [("p.local", [("/", "Prefix", "root")])],
        annotations={"traefik.ingress.kubernetes.io/router.priority": "10"},
    )
    result = kroute.compile_objects([low, high])
    head = RequestHead.build("GET", "p.local", "/api/x")
    assert result.table.match(head).source.name == "high"  # type: ignore[union-attr]
    exact = ingress(
        "e",
        [("e.local", [("/x", "ImplementationSpecific", "web")])],
        annotations={"traefik.ingress.kubernetes.io/router.pathmatcher": "Path"},
    )
    table = kroute.compile_objects([exact]).table
    assert table.match(RequestHead.build("GET", "e.local", "/x")) is not None
    assert table.match(RequestHead.build("GET", "e.local", "/x/y")) is None


@pytest.mark.parametrize(("annotation", "value"), [
    ("router.priority", "high"), ("router.priority", "1_0"), ("router.priority", " 1"),
    ("router.pathmatcher", "PathRegexp"), ("router.middlewares", "a@kubernetescrd,,b"),
])  # fmt: skip
def test_bad_router_annotations_reject_the_ingress(annotation: str, value: str) -> None:
    bad = ingress(
        "bad",
        [("b.local", [("/", "Prefix", "web")])],
        annotations={f"traefik.ingress.kubernetes.io/{annotation}": value},
    )
    (error,) = kroute.compile_objects([bad]).errors
    assert str(error).startswith(f"Ingress default/bad: metadata.annotations[traefik.ingress."
                                 f"kubernetes.io/{annotation}]")  # fmt: skip


# -- hostile paths ---------------------------------------------------------------------------------

PATHS = st.lists(
    st.sampled_from(["a", "api", ".", "..", "", "%2e", "%2F", "%00", "x y", "é"]),
    min_size=1,
    max_size=8,
).map(lambda parts: "/" + "/".join(parts))


@settings(max_examples=300, deadline=None)
@given(path=PATHS, prefix=st.sampled_from(["/api", "/api/", "/a", "/"]))
def test_strip_prefix_never_sends_a_path_that_climbs(path: str, prefix: str) -> None:
    outcome = run({"stripPrefix": {"prefixes": [prefix]}}, path.replace(" ", "%20"))
    if outcome.upstream is not None:
        sent = outcome.upstream.path
        assert sent.startswith("/")
        assert ".." not in sent.split("/")
        assert "." not in sent.split("/")
        if outcome.upstream.get(b"x-forwarded-prefix") is not None:  # (stripped: re-encoded)
            assert " " not in sent


@settings(max_examples=300, deadline=None)
@given(
    path=PATHS,
    regex=st.sampled_from(["^/api(.*)", "^/a/(.*)", "(a+)+$", "/"]),
    replacement=st.sampled_from(["/$1", "/v1/$1", "$1", "/x"]),
)
def test_replace_path_regex_on_hostile_paths(path: str, regex: str, replacement: str) -> None:
    spec = {"replacePathRegex": {"regex": regex, "replacement": replacement}}
    outcome = run(spec, path.replace(" ", "%20"))
    assert (outcome.upstream is None) == (outcome.status is not None)
    if outcome.upstream is not None:
        segments = outcome.upstream.path.split("/")
        assert ".." not in segments
        assert "." not in segments

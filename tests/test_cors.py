"""The CORS step (`kroute.pipeline.cors`), pure: preflights, actual responses, credentials, the
spec's wildcards, and HTTPRoute validation (Gateway API v1.6 HTTPCORSFilter)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

import kroute
from kroute.objects import FieldError
from kroute.pipeline import CORS, Answer, Chain, UpstreamRequest, run_request, run_response
from kroute.pipeline.cors import cors_filter
from kroute.testing import Routing
from tests.builders import gateway, httproute, to

Headers = list[tuple[bytes, bytes]]
FIELD = "spec.rules[0].filters[0]"


def step(**cors: Any) -> CORS:
    return cors_filter(cors, FIELD)


def request(method: str = "GET", origin: str | None = None, **extra: str) -> UpstreamRequest:
    headers = [(b"Host", b"api.local")]
    if origin is not None:
        headers.append((b"Origin", origin.encode()))
    for name, value in extra.items():
        headers.append((name.replace("_", "-").encode(), value.encode()))
    return UpstreamRequest(method, "/", None, headers)


def preflight(cors: CORS, origin: str, method: str = "PUT", **extra: str) -> Answer:
    answer = run_request(Chain((cors,)), request("OPTIONS", origin,
                         access_control_request_method=method, **extra))  # fmt: skip
    assert answer is not None, "a preflight is answered, never forwarded"
    return answer


def respond(cors: CORS, origin: str | None, backend: Headers | None = None) -> Headers:
    """The response head after the chain: the request steps, then the response steps."""
    chain = Chain((cors,))
    sent = request("GET", origin)
    assert run_request(chain, sent) is None, "an actual request is forwarded"
    headers = list(backend or [(b"Content-Type", b"text/plain"), (b"X-Trace", b"1")])
    run_response(chain, 200, headers, sent)
    return headers


def fields(headers: Headers | tuple[tuple[bytes, bytes], ...]) -> dict[bytes, bytes]:
    return {n.lower(): v for n, v in headers}


def cors_fields(headers: Headers | tuple[tuple[bytes, bytes], ...]) -> dict[bytes, bytes]:
    return {n: v for n, v in fields(headers).items() if n.startswith(b"access-control-")}


CONFORMANCE = {  # the conformance suite's cors-1 route
    "allowOrigins": ["https://www.foo.com", "https://*.bar.com"],
    "allowMethods": ["GET", "OPTIONS"],
    "allowHeaders": ["x-header-1", "x-header-2"],
    "exposeHeaders": ["x-header-3", "x-header-4"],
    "allowCredentials": True,
    "maxAge": 3600,
}


# -- preflight --------------------------------------------------------------------------------


def test_an_allowed_preflight_is_answered_with_every_allow_header() -> None:
    answer = preflight(step(**CONFORMANCE), "https://www.foo.com", "GET",
                       access_control_request_headers="x-header-1, x-header-2")  # fmt: skip
    assert answer.status == 200
    assert cors_fields(answer.headers) == {
        b"access-control-allow-origin": b"https://www.foo.com",
        b"access-control-allow-credentials": b"true",
        b"access-control-allow-methods": b"GET, OPTIONS",
        b"access-control-allow-headers": b"x-header-1, x-header-2",
        b"access-control-expose-headers": b"x-header-3, x-header-4",
        b"access-control-max-age": b"3600",
    }
    assert (b"Vary", b"Origin") in answer.headers
    assert answer.step == f"CORS ({FIELD})"  # explain and logs say which filter answered


def test_a_preflight_from_an_origin_not_allowed_gets_no_allow_headers() -> None:
    answer = preflight(step(**CONFORMANCE), "https://foobar.com", "GET")
    assert answer.status == 200  # an OK status either way (spec); the browser stops there
    assert cors_fields(answer.headers) == {}


def test_max_age_defaults_to_five_seconds() -> None:
    answer = preflight(step(allowOrigins=["https://a.example"]), "https://a.example")
    assert fields(answer.headers)[b"access-control-max-age"] == b"5"
    assert b"access-control-allow-methods" not in fields(answer.headers)  # none configured


@pytest.mark.parametrize(
    ("method", "extra"),
    [("OPTIONS", {}), ("GET", {"access_control_request_method": "PUT"})],
    ids=["options-without-request-method", "get-with-request-method"],
)
def test_only_options_with_a_request_method_is_a_preflight(
    method: str, extra: dict[str, str]
) -> None:
    chain = Chain((step(allowOrigins=["*"]),))
    assert run_request(chain, request(method, "https://a.example", **extra)) is None


def test_wildcard_methods_and_headers_echo_what_was_asked() -> None:
    cors = step(allowOrigins=["https://www.foo.com"], allowMethods=["*"], allowHeaders=["*"])
    answer = preflight(cors, "https://www.foo.com", "POST",
                       access_control_request_headers="Authorization, X-Header-1,bad header")  # fmt: skip
    got = fields(answer.headers)
    assert got[b"access-control-allow-methods"] == b"POST"
    # Echoed, so Authorization is covered too (Fetch: `*` never covers it); invalid names not.
    assert got[b"access-control-allow-headers"] == b"authorization, x-header-1"
    assert b"access-control-allow-credentials" not in got
    no_headers = fields(preflight(cors, "https://www.foo.com", "PATCH").headers)
    assert b"access-control-allow-headers" not in no_headers


def test_with_credentials_no_wildcard_is_ever_sent() -> None:
    cors = step(allowOrigins=["*"], allowMethods=["*"], allowHeaders=["*"], exposeHeaders=["*"],
                allowCredentials=True)  # fmt: skip
    answer = preflight(cors, "https://other.foo.com", "PUT",
                       access_control_request_headers="x-header-1")  # fmt: skip
    assert cors_fields(answer.headers) == {
        b"access-control-allow-origin": b"https://other.foo.com",
        b"access-control-allow-credentials": b"true",
        b"access-control-allow-methods": b"PUT",
        b"access-control-allow-headers": b"x-header-1",
        b"access-control-max-age": b"5",
    }
    got = fields(respond(cors, "https://other.foo.com"))
    assert got[b"access-control-allow-origin"] == b"https://other.foo.com"
    assert got[b"access-control-expose-headers"] == b"content-type, x-trace"  # the response's


def test_without_credentials_the_wildcard_origin_is_sent_as_star() -> None:
    cors = step(allowOrigins=["*"], exposeHeaders=["*"])
    got = fields(respond(cors, "https://foobar.com:12345"))
    assert got[b"access-control-allow-origin"] == b"*"
    assert got[b"access-control-expose-headers"] == b"*"
    assert b"access-control-allow-credentials" not in got


# -- actual requests --------------------------------------------------------------------------


def test_an_allowed_origin_gets_the_headers_on_the_actual_response() -> None:
    got = fields(respond(step(**CONFORMANCE), "https://www.foo.com"))
    assert got[b"access-control-allow-origin"] == b"https://www.foo.com"
    assert got[b"access-control-allow-credentials"] == b"true"
    assert got[b"access-control-expose-headers"] == b"x-header-3, x-header-4"
    assert b"access-control-allow-methods" not in got  # preflight-only fields
    assert got[b"vary"] == b"Origin"


@pytest.mark.parametrize("origin", ["https://foobar.com", "null", None])
def test_other_origins_get_no_cors_headers_even_from_the_backend(origin: str | None) -> None:
    backend = [(b"Access-Control-Allow-Origin", b"*"),
               (b"access-control-allow-credentials", b"true"), (b"X-Trace", b"1")]  # fmt: skip
    headers = respond(step(**CONFORMANCE), origin, backend)
    assert cors_fields(headers) == {}  # the filter owns them: the backend's are removed
    assert (b"X-Trace", b"1") in headers
    assert (b"Vary", b"Origin") in headers  # the answer depends on Origin (Fetch 3.2.5)


def test_vary_is_added_once() -> None:
    cors = step(allowOrigins=["*"])
    headers = respond(cors, "https://a.example", [(b"Vary", b"Accept-Encoding")])
    assert [v for n, v in headers if n == b"Vary"] == [b"Accept-Encoding", b"Origin"]
    headers = respond(cors, "https://a.example", [(b"vary", b"accept-encoding, origin")])
    assert [v for n, v in headers if n.lower() == b"vary"] == [b"accept-encoding, origin"]


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://www.bar.com", True),
        ("https://xpto.www.bar.com", True),  # `*` is greedy to the left, over dots (spec)
        ("HTTPS://WWW.BAR.COM", True),  # scheme and host compare case-insensitively
        ("https://www.bar.com:443", True),  # 443 is https's port when none is given (spec)
        ("https://www.foo.com:443", True),
        ("https://bar.com", False),  # the `*` stands for at least one character
        ("https://www.bar.com.evil", False),
        ("https://evilbar.com", False),
        ("http://www.bar.com", False),  # another scheme
        ("https://www.bar.com:8443", False),  # another port
        ("https://www.foo.com.", False),
        ("https://www.foo.com/", False),  # not a serialised origin
        ("https://user@www.foo.com", False),
        ("https://*.bar.com", False),  # never an origin a browser sends
        ("https://www.foo.com:99999", False),
        ("null", False),
        ("", False),
    ],
)
def test_origin_matching(origin: str, allowed: bool) -> None:
    cors = step(**CONFORMANCE)
    assert cors.allows(origin.encode()) is allowed
    got = fields(respond(cors, origin))
    assert (b"access-control-allow-origin" in got) is allowed
    if allowed:
        assert got[b"access-control-allow-origin"] == origin.encode()  # echoed as received


def test_a_port_and_a_bare_wildcard_host() -> None:
    cors = step(allowOrigins=["http://*:8080", "https://exact.example:8443"])
    assert cors.allows(b"http://anything.example:8080")
    assert not cors.allows(b"http://anything.example")
    assert cors.allows(b"https://exact.example:8443")
    assert not cors.allows(b"https://exact.example")


# -- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cors", "field", "says"),
    [
        ({"allowOrigins": ["*", "https://a.example"]}, "allowOrigins", "alongside"),
        ({"allowOrigins": ["ftp://a.example"]}, "allowOrigins[0]", "not an origin"),
        ({"allowOrigins": ["https://a.*.example"]}, "allowOrigins[0]", "not an origin"),
        ({"allowOrigins": ["https://a.example/path"]}, "allowOrigins[0]", "not an origin"),
        ({"allowOrigins": ["https://"]}, "allowOrigins[0]", "not an origin"),
        ({"allowOrigins": ["https://a.example:0"]}, "allowOrigins[0]", "out of range"),
        ({"allowOrigins": ["https://a", "https://a"]}, "allowOrigins[1]", "listed twice"),
        ({"allowOrigins": [f"https://h{i}" for i in range(65)]}, "allowOrigins", "at most 64"),
        ({"allowMethods": ["get"]}, "allowMethods[0]", "is not one of"),
        ({"allowMethods": ["*", "GET"]}, "allowMethods", "alongside"),
        ({"allowHeaders": ["bad header"]}, "allowHeaders[0]", "not a valid header name"),
        ({"exposeHeaders": ["x:y"]}, "exposeHeaders[0]", "not a valid header name"),
        ({"allowCredentials": "true"}, "allowCredentials", "boolean"),
        ({"maxAge": 0}, "maxAge", "out of range"),
        ({"allowOrigins": "https://a.example"}, "allowOrigins", "expected a list"),
    ],
)
def test_invalid_values_are_field_errors(cors: dict[str, Any], field: str, says: str) -> None:
    with pytest.raises(FieldError) as caught:
        cors_filter(cors, FIELD)
    assert caught.value.field == f"{FIELD}.cors.{field}"
    assert says in caught.value.reason


def test_an_httproute_with_cors_compiles_and_bad_values_reject_only_their_object() -> None:
    good = httproute("good", [{"filters": [{"type": "CORS", "cors": CONFORMANCE}],
                               "backendRefs": [to("web", filters=[
                                   {"type": "CORS", "cors": {"allowOrigins": ["*"]}}])]}])  # fmt: skip
    bad = httproute("bad", [{"filters": [{"type": "CORS", "cors": {"maxAge": -1}}],
                             "backendRefs": [to("web")]}], hostnames=["bad.local"])  # fmt: skip
    result = kroute.compile_objects([gateway(), good, bad])
    assert result.refused == ()  # CORS no longer fails closed
    [error] = result.errors
    assert "HTTPRoute default/bad" in str(error)
    assert "spec.rules[0].filters[0].cors.maxAge" in str(error)
    assert any(isinstance(s, CORS) for r in result.table.routes for s in r.chain.steps)


# -- the invariant ----------------------------------------------------------------------------

HOSTS = ["a.example", "b.a.example", "example", "evil.example", "a.example.evil", "[::1]"]


def origins(hosts: list[str], schemes: list[str]) -> st.SearchStrategy[str]:
    return st.builds(
        lambda scheme, host, port: f"{scheme}://{host}{port}",
        st.sampled_from(schemes), st.sampled_from(hosts),
        st.sampled_from(["", ":443", ":80", ":8080"]),
    )  # fmt: skip


PATTERNS = origins([*HOSTS, "*.example", "*", "*a.example"], ["http", "https", "HTTPS"])
REQUEST_ORIGINS = st.one_of(
    origins(HOSTS, ["http", "https", "HTTPS", "ftp"]),
    st.sampled_from(["null", "", "https://a.example/", "https://*.example"]),
    st.text(max_size=30),
)


def oracle(patterns: list[str], origin: str) -> bool:
    """Whether `origin` is allowed, written independently of the step: regexes, per the spec."""
    if patterns == ["*"]:
        return True
    ports = {"http": "80", "https": "443"}

    def norm(text: str) -> str | None:
        found = re.fullmatch(r"(https?)://(\[[0-9a-f:.]+\]|[a-z0-9._*-]*)(?::(\d+))?", text.lower())
        if found is None:
            return None
        return f"{found[1]}://{found[2]}:{found[3] or ports[found[1]]}"

    seen = norm(origin)
    if seen is None or "*" in seen or "://:" in seen:
        return False
    for pattern in patterns:
        want = norm(pattern)
        assert want is not None
        regex = re.escape(want).replace(r"\*", r"(\[[^\]]+\]|[^:]+)")  # `*` alone: any host
        if re.fullmatch(regex, seen):
            return True
    return False


@given(
    patterns=st.one_of(st.just(["*"]), st.lists(PATTERNS, max_size=4, unique=True)),
    credentials=st.booleans(),
    origin=REQUEST_ORIGINS,
    preflight_asked=st.booleans(),
    backend_says=st.sampled_from([b"*", b"https://a.example", b"null"]),
)
def test_no_response_allows_an_origin_the_route_does_not(
    patterns: list[str], credentials: bool, origin: str, preflight_asked: bool,
    backend_says: bytes,
) -> None:  # fmt: skip
    cors = step(allowOrigins=patterns, allowCredentials=credentials, allowMethods=["*"])
    extra = {"access_control_request_method": "PUT"} if preflight_asked else {}
    sent = request("OPTIONS" if preflight_asked else "GET", origin, **extra)
    chain = Chain((cors,))
    answer = run_request(chain, sent)
    if answer is not None:
        headers = list(answer.headers)
    else:
        headers = [(b"Access-Control-Allow-Origin", backend_says)]
        run_response(chain, 200, headers, sent)
    given_origins = [v for n, v in headers if n.lower() == b"access-control-allow-origin"]
    event(f"allowed: {bool(given_origins)}")
    assert len(given_origins) <= 1
    if given_origins:
        assert oracle(patterns, origin)
        assert given_origins[0] == (b"*" if patterns == ["*"] and not credentials
                                    else origin.encode())  # fmt: skip
    else:
        assert not oracle(patterns, origin)


def test_kroute_testing_previews_cors_offline() -> None:
    route = httproute("api", [{"filters": [{"type": "CORS", "cors": CONFORMANCE}],
                               "backendRefs": [to("web")]}], hostnames=["api.test"])  # fmt: skip
    routing = Routing.from_objects([gateway(), route])
    ask = {"Origin": "https://www.foo.com", "Access-Control-Request-Method": "GET"}
    found = routing.preview("api.test/cart", method="OPTIONS", headers=ask)
    assert found.status == (200, "CORS preflight answered")
    found = routing.expect_forwarded("api.test/cart",
                                     request_headers={"Origin": "https://www.foo.com"})  # fmt: skip
    assert (b"Access-Control-Allow-Origin", b"https://www.foo.com") in found.response_headers
    assert (b"Vary", b"Origin") in routing.expect_forwarded("api.test/cart").response_headers

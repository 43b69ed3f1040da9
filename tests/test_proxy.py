"""Proxy semantics shared by every transport (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kroute.errors import (
    NoHealthyEndpoint,
    UpstreamClosed,
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from kroute.transport import http1
from kroute.transport.proxy import (
    HOP_BY_HOP,
    HeaderSplit,
    Hop,
    RetryBudget,
    TrustedProxies,
    error_response,
    forwarding_headers,
    framing_conflict,
    header_lines,
    render_headers,
    replay_safe,
    set_host,
    strip_hop_by_hop,
)


def names(headers: list[tuple[bytes, bytes]]) -> list[bytes]:
    return [n.lower() for n, _ in headers]


def test_hop_by_hop_headers_and_those_named_in_connection_are_dropped() -> None:
    # RFC 9110 section 7.6.1.
    headers = [
        (b"Host", b"a.com"), (b"Connection", b"keep-alive, X-Secret"), (b"Keep-Alive", b"timeout=5"),
        (b"X-Secret", b"internal"), (b"TE", b"trailers"), (b"Transfer-Encoding", b"chunked"),
        (b"Upgrade", b"h2c"), (b"Proxy-Authorization", b"Basic x"), (b"Trailer", b"X"),
        (b"Proxy-Connection", b"keep-alive"), (b"Accept", b"*/*"), (b"connection", b"close"),
    ]  # fmt: skip
    assert strip_hop_by_hop(headers) == [(b"Host", b"a.com"), (b"Accept", b"*/*")]


@given(st.lists(st.tuples(st.sampled_from([b"Connection", b"X-A", b"x-b", b"Keep-Alive", b"Accept"]),
                          st.sampled_from([b"x-a", b"X-B, close", b"1", b""])), max_size=8))  # fmt: skip
def test_stripping_is_idempotent_and_leaves_no_hop_by_hop(
    headers: list[tuple[bytes, bytes]],
) -> None:
    once = strip_hop_by_hop(headers)
    assert strip_hop_by_hop(once) == once
    assert not {b"connection", b"keep-alive"} & set(names(once))


@given(st.lists(st.tuples(st.sampled_from([b"Connection", b"X-A", b"x-b", b"Keep-Alive", b"Host",
                                           b"Content-Length"]),
                          st.sampled_from([b"x-a", b"X-B, close", b"keep-alive", b"1", b""])),
                max_size=8))  # fmt: skip
def test_header_lines_pass_on_what_stripping_keeps_and_read_what_was_asked(
    headers: list[tuple[bytes, bytes]],
) -> None:
    """The hot path's one pass agrees with strip_hop_by_hop (RFC 9110 section 7.6.1)."""
    drop = HOP_BY_HOP | {b"content-length"}
    lines, values = header_lines(headers, HeaderSplit(drop, frozenset({b"connection", b"host"})))
    assert b"".join(lines) == render_headers(strip_hop_by_hop(headers, frozenset(drop)))
    assert values.get(b"host", []) == [v for n, v in headers if n.lower() == b"host"]
    assert values.get(b"connection", []) == [v for n, v in headers if n.lower() == b"connection"]


HOP = Hop(client="203.0.113.7", scheme="https", host="shop.example.com", port=443)
SPOOFED = [(b"X-Forwarded-For", b"10.0.0.1"), (b"X-Forwarded-Proto", b"http"),
           (b"X-Forwarded-Host", b"evil.com"), (b"Forwarded", b"for=10.0.0.1"), (b"Accept", b"*/*")]  # fmt: skip


def test_untrusted_peer_forwarding_headers_are_replaced() -> None:
    out = dict(forwarding_headers(SPOOFED, HOP))
    assert out[b"X-Forwarded-For"] == b"203.0.113.7"
    assert out[b"X-Forwarded-Proto"] == b"https"
    assert out[b"X-Forwarded-Host"] == b"shop.example.com"
    assert out[b"X-Forwarded-Port"] == b"443"
    assert out[b"Forwarded"] == b'for=203.0.113.7;proto=https;host="shop.example.com"'
    assert out[b"Accept"] == b"*/*"


def test_trusted_peer_forwarding_headers_are_extended() -> None:
    hop = Hop(client="10.1.2.3", scheme="http", host="shop.example.com", port=80)
    out = dict(forwarding_headers(SPOOFED, hop, TrustedProxies.of("10.0.0.0/8")))
    assert out[b"X-Forwarded-For"] == b"10.0.0.1, 10.1.2.3"
    assert out[b"X-Forwarded-Proto"] == b"http"
    assert out[b"X-Forwarded-Host"] == b"evil.com"  # believed: the trusted proxy said so
    assert out[b"Forwarded"] == b'for=10.0.0.1, for=10.1.2.3;proto=http;host="shop.example.com"'


VOUCHING = [(b"X-Forwarded-Uri", b"/public"), (b"x-forwarded-method", b"GET"),
            (b"X-Real-Ip", b"10.0.0.1"), (b"X_Forwarded_For", b"10.0.0.2"),
            (b"x_forwarded_uri", b"/public"), (b"X-Forwarded-Prefix", b"/app")]  # fmt: skip


def test_what_a_request_says_of_itself_is_believed_only_from_a_trusted_proxy() -> None:
    # Traefik's forwardedheaders: X-Forwarded-Uri/-Method/-Prefix/-Server/-Tls-Client-Cert*,
    # X-Real-Ip come only from trusted proxies; underscore spellings from nobody.
    names = [n for n, _ in forwarding_headers(VOUCHING, HOP)]
    assert names == [b"X-Forwarded-For", b"X-Forwarded-Proto", b"X-Forwarded-Host",
                     b"X-Forwarded-Port", b"Forwarded"]  # fmt: skip
    hop = Hop(client="10.1.2.3", scheme="http", host="shop.example.com", port=80)
    out = forwarding_headers(VOUCHING, hop, TrustedProxies.of("10.0.0.0/8"))
    assert out[5:] == [(b"X-Forwarded-Uri", b"/public"), (b"X-Forwarded-Method", b"GET"),
                       (b"X-Real-Ip", b"10.0.0.1"), (b"X-Forwarded-Prefix", b"/app")]  # fmt: skip


def test_ipv6_client_in_forwarded_is_bracketed_and_quoted() -> None:
    hop = Hop(client="2001:db8::1", scheme="http", host="a", port=80)
    assert (
        dict(forwarding_headers([], hop))[b"Forwarded"]
        == b'for="[2001:db8::1]";proto=http;host="a"'
    )


def test_host_passthrough_or_rewrite() -> None:
    headers = [(b"Host", b"public.example.com")]
    assert set_host(headers, None) == headers
    assert set_host(headers, "web.shop.svc") == [(b"Host", b"web.shop.svc")]


@pytest.mark.parametrize(
    ("error", "status", "words"),
    [
        (
            UpstreamConnectError("refused", endpoint="10.0.0.1:80"),
            502,
            b"connection to the backend failed",
        ),
        (UpstreamTimeout("read", endpoint="10.0.0.1:80"), 504, b"backend read timeout"),
        (UpstreamTimeout("pool", request_sent=False), 503, b"backend pool timeout"),
        (UpstreamProtocolError("bad status line"), 502, b"invalid response"),
        (UpstreamClosed("eof"), 502, b"closed the connection"),
        (NoHealthyEndpoint("no endpoint for shop/web:80"), 503, b"no endpoint for shop/web:80"),
    ],
)
def test_errors_map_to_short_responses(error: Exception, status: int, words: bytes) -> None:
    code, headers, body = error_response(error)  # type: ignore[arg-type]
    assert code == status
    assert words in body
    assert b"10.0.0.1" not in body  # internal addresses stay inside
    assert dict(headers)[b"Content-Length"] == str(len(body)).encode()
    assert len(body) < 120


def test_replay_safety() -> None:
    assert not replay_safe("POST", replayable=True)  # POST is not idempotent
    assert not replay_safe("PUT", replayable=False)  # the body cannot be sent again
    assert replay_safe("GET", replayable=True)
    assert replay_safe("DELETE", replayable=True)
    assert not replay_safe("delete", replayable=True)  # methods are case-sensitive (RFC 9110 9.1)


def test_retry_budget_caps_retries_to_a_share_of_requests() -> None:
    budget = RetryBudget(ratio=0.2, minimum=2, window=10.0)
    for i in range(100):
        budget.request(now=i * 0.01)
    granted = sum(budget.try_retry(now=1.0) for _ in range(50))
    assert granted == 20
    assert budget.try_retry(now=11.5)  # the window moved on: old requests and retries expired
    small = RetryBudget(ratio=0.2, minimum=2)
    small.request(now=0.0)
    assert [small.try_retry(now=0.0) for _ in range(3)] == [True, True, False]


def test_ambiguous_framing_is_detected() -> None:
    assert framing_conflict([(b"Content-Length", b"5"), (b"Transfer-Encoding", b"chunked")])
    assert framing_conflict([(b"content-length", b"5"), (b"Content-Length", b"6")])
    assert framing_conflict([(b"Content-Length", b"5"), (b"content-length", b"5")]) is None
    assert framing_conflict([(b"Transfer-Encoding", b"chunked")]) is None


@settings(max_examples=200)
@given(st.lists(st.tuples(st.booleans(), st.sampled_from([0, 0.3, 1, 2.5, 9.5, 14])), max_size=120))
def test_retry_budget_counts_the_slices_of_its_window(events: list[tuple[bool, float]]) -> None:
    """The budget counts per tenth of its window: against a plain log of what happened, it
    grants a retry exactly when the log's requests and retries of the last ten tenths allow."""
    budget = RetryBudget(ratio=0.2, minimum=2, window=10.0)
    log: list[tuple[int, bool]] = []  # (tenth of the window, a retry?)
    now = 0.0
    for is_retry, step in events:
        now += step
        tenth = int(now)  # the window is 10 s: its tenths are whole seconds
        recent = [retry for at, retry in log if at > tenth - 10]
        if is_retry:
            allowed = max(2, int(recent.count(False) * 0.2))
            expected = recent.count(True) < allowed
            assert budget.try_retry(now) is expected
            if expected:
                log.append((tenth, True))
        else:
            budget.request(now)
            log.append((tenth, False))


@pytest.mark.parametrize(("method", "status", "expected"), [
    ("GET", 200, False), ("HEAD", 200, True), (b"HEAD", 200, True), ("GET", 204, True),
    ("GET", 304, True), ("GET", 100, True), ("POST", 500, False),
])  # fmt: skip
def test_which_responses_have_no_body(method: str | bytes, status: int, expected: bool) -> None:
    # RFC 9112 section 6.3: decided once (kroute.transport.http1) for every front and engine.
    assert http1.bodiless(method, status) is expected
    assert http1.interim(status) is (status == 100)


def test_request_head_limits_name_the_status() -> None:
    limits = http1.ServerLimits(max_request_line=10, max_header_bytes=20, max_headers=2)
    assert limits.head_problem(10, 20, 2) is None
    assert limits.head_problem(11, 0, 0) == (414, "request line too long")
    assert limits.head_problem(0, 21, 0) == (431, "request headers too large")
    assert limits.head_problem(0, 0, 3) == (431, "too many request headers")
    assert http1.close_delimited({b"server"})
    assert not http1.close_delimited({b"content-length"})

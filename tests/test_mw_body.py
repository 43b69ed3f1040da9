"""The body middlewares offline: Accept-Encoding negotiation and status ranges against hostile
input (hypothesis), the gzip filter's bounded memory, the body seam's composition, and the
Middleware fields' errors."""

from __future__ import annotations

import zlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kroute.objects import FieldError, ObjectRef
from kroute.pipeline.body import BodyFilter, Filters, run_body
from kroute.pipeline.filters import Refuse
from kroute.pipeline.steps import Chain, UpstreamRequest
from kroute.rules.middlewares.buffering import Buffering, Counted, buffering
from kroute.rules.middlewares.compress import Compress, Gzip, accepted, compress, negotiate
from kroute.rules.middlewares.error_pages import ErrorPages, error_pages, status_ranges

REF = ObjectRef("Middleware", "default", "m")


@given(st.lists(st.binary(max_size=60), max_size=4))
def test_accept_encoding_never_raises_and_picks_only_what_is_offered(values: list[bytes]) -> None:
    weights = accepted(values)
    assert all(0 <= w <= 1 for w in weights.values())
    assert negotiate(values, ("gzip",), None) in ("gzip", None)


@pytest.mark.parametrize(("value", "chosen"), [
    (b"gzip", "gzip"),
    (b"GZip;Q=0.5", "gzip"),
    (b"br, gzip;q=0.001", "gzip"),
    (b"*", "gzip"),
    (b"*;q=0.5, gzip;q=0", None),  # (named with 0: not acceptable, whatever * says)
    (b"identity", None),
    (b"", None),
    (b"gzip;q=2", None),  # (not a qvalue: ignored)
    (b"gzip;q=0.0001", None),
    (b"deflate, br", None),
])  # fmt: skip
def test_negotiation(value: bytes, chosen: str | None) -> None:
    assert negotiate([value], ("gzip",), None) == chosen


def test_order_of_preference() -> None:
    offered = ("zstd", "br", "gzip")
    assert negotiate([b"gzip, br"], offered, None) == "br"  # (equal weights: the list's order)
    assert negotiate([b"gzip, br;q=0.9"], offered, None) == "gzip"
    assert negotiate([b"*"], offered, "gzip") == "gzip"  # (only * covers it: the default)
    assert negotiate([b"*, br"], offered, "gzip") == "br"  # (named before *)
    assert negotiate(None, offered, None) is None
    assert negotiate(None, offered, "gzip") == "gzip"


@given(st.integers(100, 599), st.integers(100, 599))
def test_status_ranges(a: int, b: int) -> None:
    low, high = min(a, b), max(a, b)
    assert status_ranges([f"{low}-{high}", str(a)], "s") == ((low, high), (a, a))


@given(st.text(max_size=12))
def test_status_ranges_refuse_anything_else_clearly(text: str) -> None:
    try:
        ranges = status_ranges([text], "spec.errors.status")
    except FieldError as exc:
        field = exc.field
    else:
        assert all(100 <= low <= high <= 599 for low, high in ranges)
        return
    assert field == "spec.errors.status[0]"


def request(*headers: tuple[bytes, bytes], method: str = "GET") -> UpstreamRequest:
    return UpstreamRequest(method, "/", None, list(headers))


def test_gzip_holds_at_most_the_minimum_and_streams_after() -> None:
    headers = [(b"ETag", b'"v1"'), (b"Accept-Ranges", b"bytes")]
    gz = Gzip(headers, 1024, decided=False)
    assert (gz.feed(b"a" * 1000), gz.ready) == (b"", False)
    out = [gz.feed(b"a" * 100)]
    assert gz.ready
    assert not gz.held
    assert headers == [(b"ETag", b'W/"v1"'), (b"Content-Encoding", b"gzip")]
    for _ in range(2000):  # 20 MB: each piece out as it came (zlib's window, no growing buffer)
        out.append(gz.feed(b"b" * 10_000))
        assert out[-1]
    out.append(gz.end())
    assert zlib.decompress(b"".join(out), 31) == b"a" * 1100 + b"b" * 20_000_000


def test_gzip_leaves_a_short_body_as_it_is() -> None:
    headers: list[tuple[bytes, bytes]] = []
    gz = Gzip(headers, 1024, decided=False)
    assert gz.feed(b"x" * 10) == b""
    assert (gz.end(), gz.ready, headers) == (b"x" * 10, True, [])


def test_run_body_combines_filters_and_drops_content_length() -> None:
    chain = Chain((compress({}, "spec.compress"),
                   Buffering("spec.buffering", max_request=0, max_response=10**6)))  # fmt: skip
    headers = [(b"Content-Type", b"text/plain")]
    made = run_body(chain, 200, headers, request((b"Accept-Encoding", b"gzip")))
    assert isinstance(made, Filters)
    assert [type(f) for f in made.filters] == [Gzip, Counted]
    body = made.feed(b"z" * 5000) + made.end()
    assert zlib.decompress(body, 31) == b"z" * 5000
    assert (b"Vary", b"Accept-Encoding") in headers
    assert chain.request_limit is None
    assert isinstance(BodyFilter(), BodyFilter)


@pytest.mark.parametrize(("headers", "req"), [
    ([(b"Content-Encoding", b"br")], request((b"Accept-Encoding", b"gzip"))),
    ([(b"Content-Type", b"application/grpc+proto")], request((b"Accept-Encoding", b"gzip"))),
    ([(b"Content-Type", b"application/grpc")], request((b"Accept-Encoding", b"gzip"))),
    ([(b"Content-Length", b"1023")], request((b"Accept-Encoding", b"gzip"))),
    ([], request((b"Accept-Encoding", b"gzip"), (b"Range", b"bytes=1-2"))),
    ([], request((b"Accept-Encoding", b"gzip"), (b"Content-Type", b"text/event-stream"))),
])  # fmt: skip
def test_what_compress_leaves_alone(headers: list[tuple[bytes, bytes]], req: Any) -> None:
    step = compress({"excludedContentTypes": ["text/event-stream"]}, "spec.compress")
    assert isinstance(step, Compress)
    assert step.body(200, headers, req) is None
    assert step.body(206, [], request((b"Accept-Encoding", b"gzip"))) is None


def test_included_content_types() -> None:
    step = compress({"includedContentTypes": ["Text/HTML; charset=utf-8"]}, "spec.compress")
    assert isinstance(step, Compress)
    gzip = request((b"Accept-Encoding", b"gzip"))
    assert step.body(200, [(b"Content-Type", b"text/html")], gzip) is not None
    assert step.body(200, [(b"Content-Type", b"text/plain")], gzip) is None


@pytest.mark.parametrize(("spec", "field"), [
    ({"excludedContentTypes": ["a/b"], "includedContentTypes": ["c/d"]}, "spec.compress"),
    ({"excludedContentTypes": ["nope"]}, "spec.compress.excludedContentTypes[0]"),
    ({"encodings": ["deflate"]}, "spec.compress.encodings[0]"),
    ({"encodings": []}, "spec.compress.encodings"),
    ({"defaultEncoding": "br"}, "spec.compress.defaultEncoding"),
    ({"minResponseBodyBytes": -1}, "spec.compress.minResponseBodyBytes"),
    ({"level": 3}, "spec.compress.level"),
])  # fmt: skip
def test_compress_field_errors(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(FieldError) as caught:
        compress(spec, "spec.compress")
    assert caught.value.field == field


def test_brotli_and_zstd_fail_closed() -> None:
    step = compress({"encodings": ["gzip", "br"]}, "spec.compress")
    assert isinstance(step, Refuse)
    assert "br compression is not supported by kroute" in step.reason


def test_buffering_fields() -> None:
    step = buffering({"maxRequestBodyBytes": 10, "memRequestBodyBytes": 5}, "spec.buffering")
    assert Chain((step,)).request_limit == 10
    assert step.body(200, [(b"Content-Length", b"99")], request()) is None  # (no max response)
    refused = buffering({"retryExpression": "IsNetworkError()"}, "spec.buffering")
    assert isinstance(refused, Refuse)
    with pytest.raises(FieldError):
        buffering({"maxRequestBodyBytes": "1MB"}, "spec.buffering")


def test_errors_fields() -> None:
    spec = {"status": ["500-599"], "query": "/{status}.html",
            "service": {"name": "pages", "port": 80}}  # fmt: skip
    step = error_pages(spec, "spec.errors", REF, False)
    assert isinstance(step, ErrorPages)
    assert step.backends[0].name == "pages"
    other = error_pages({**spec, "service": {"name": "p", "namespace": "x", "port": 80}},
                        "spec.errors", REF, False)  # fmt: skip
    assert isinstance(other, Refuse)
    assert "cross-namespace" in other.reason
    assert isinstance(error_pages({**spec, "statusRewrites": {"418": 404}}, "spec.errors", REF,
                                  False), Refuse)  # fmt: skip
    with pytest.raises(FieldError) as caught:
        error_pages({**spec, "service": {"name": "p"}}, "spec.errors", REF, False)
    assert caught.value.field == "spec.errors.service.port"
    with pytest.raises(FieldError):
        error_pages({"status": ["500"], "query": "/"}, "spec.errors", REF, False)

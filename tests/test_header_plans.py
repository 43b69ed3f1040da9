"""HeaderPlans gives what header_lines gives, for every message, plan made or reused (pure)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from kroute.transport.header_plans import HeaderPlans
from kroute.transport.proxy import FORWARDING, HOP_BY_HOP, HeaderSplit, header_lines

REQUEST = HeaderSplit(HOP_BY_HOP | FORWARDING | {b"content-length"},
                      FORWARDING | {b"host", b"content-length", b"connection"})  # fmt: skip
RESPONSE = HeaderSplit(HOP_BY_HOP | {b"content-length"},
                       frozenset({b"content-length", b"transfer-encoding", b"connection"}))  # fmt: skip

NAMES = st.sampled_from([
    b"Host", b"host", b"Content-Length", b"Connection", b"connection", b"Keep-Alive", b"X-A",
    b"x-b", b"X-100%", b"%b", b"Transfer-Encoding", b"X-Forwarded-For", b"Forwarded", b"TE",
])  # fmt: skip
VALUES = st.sampled_from([b"", b"1", b"close", b"keep-alive", b"X-A", b"x-b, close", b"%s%b",
                          b"chunked", b"Keep-Alive, X-100%"])  # fmt: skip
MESSAGE = st.lists(st.tuples(NAMES, VALUES), max_size=8)


@given(st.lists(MESSAGE, min_size=1, max_size=6), st.sampled_from([REQUEST, RESPONSE]))
def test_plans_agree_with_header_lines(messages: list[list[tuple[bytes, bytes]]],
                                       split: HeaderSplit) -> None:  # fmt: skip
    """Several messages through one cache (shapes repeat, values differ): each answer is
    header_lines', a Connection header that names other headers included."""
    plans = HeaderPlans(split, limit=3)
    for headers in [*messages, *messages]:
        names = [n for n, _ in headers]
        values = [v for _, v in headers]
        lines, read = plans.lines(names, values)
        expected_lines, expected_read = header_lines(headers, split)
        assert lines == b"".join(expected_lines)
        assert read == expected_read


def test_one_plan_per_sequence_of_names_and_at_most_limit() -> None:
    plans = HeaderPlans(RESPONSE, limit=2)
    plans.lines([b"Server", b"Content-Length"], [b"a", b"1"])
    assert plans.lines([b"Server", b"Content-Length"], [b"b", b"22"]) == (
        b"Server: b\r\n", {b"content-length": [b"22"]})  # fmt: skip
    assert len(plans.plans) == 1
    plans.lines([b"Date"], [b"x"])
    plans.lines([b"Etag"], [b"y"])  # a third sequence: the cache starts again
    assert list(plans.plans) == [(b"Etag",)]

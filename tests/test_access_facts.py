"""FastGateway's access log lines written straight from an exchange's facts (`json_line_of`)
are the lines of the events those facts make (`json_line(event_of(facts))`), whatever the
request: the writer skips the event, the line must not tell."""

from __future__ import annotations

import gc
import json
import os
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from kroute import AccessLog
from kroute.gateway.access import HeaderModes
from kroute.gateway.access.format import json_line
from kroute.gateway.events import NO_ROUTE_FACTS
from kroute.gateway.fast.record import EXCHANGE_EVENTS, event_of, json_line_of

texts = st.text(max_size=12)
names = st.sampled_from([b"User-Agent", b"authorization", b"X-Request-Id", b"x-request-id"])
outcomes = st.sampled_from(["forwarded", "answered", "no_route", "upstream_error",
                            "client_abort"])  # fmt: skip
named = st.one_of(st.just(NO_ROUTE_FACTS), st.tuples(texts, texts, st.lists(texts).map(tuple)))
connections = st.tuples(
    st.one_of(st.just(""), st.ip_addresses().map(str)),
    st.integers(0, 65535),
    texts,
    st.sampled_from(["", "TLSv1.3", "TLSv1.2"]),
    texts,
)
header_modes = st.builds(
    HeaderModes,
    st.sampled_from(["keep", "drop", "redact"]),
    st.dictionaries(names.map(lambda n: n.decode()), st.sampled_from(["keep", "drop", "redact"])),
)


@st.composite
def facts(draw: st.DrawFn) -> tuple[Any, ...]:
    """What `exchange_facts` captures, any values of their kinds."""
    tried = draw(st.lists(st.tuples(st.sampled_from(["10.0.0.1", "::1", "web"]),
                                    st.integers(1, 65535)), max_size=3))  # fmt: skip
    headers = draw(st.lists(st.tuples(names, st.binary(max_size=8)), max_size=4))
    return (
        draw(st.integers(0, 599)), draw(st.floats(0, 100)), len(tried) - 1 if tried else 0,
        draw(outcomes), draw(texts), draw(st.sampled_from(["GET", "POST", "PUT"])),
        draw(texts), draw(texts), draw(st.sampled_from(["1.0", "1.1"])), draw(connections),
        draw(st.floats(1.0e9, 2.0e9)), draw(st.integers(0, 2**40)), draw(named),
        tried[-1] if tried else None, tuple(tried[:-1]),
        draw(st.sampled_from([0, 200, 404, 502])), draw(st.floats(0, 100)),
        tuple(name for name, _ in headers), tuple(value for _, value in headers),
    )  # fmt: skip


@given(facts(), header_modes)
def test_a_line_from_the_facts_is_the_line_of_their_event(
    captured: tuple[Any, ...], headers: HeaderModes
) -> None:
    assert json_line_of(captured, headers) == json_line(event_of(captured), headers)


def test_fastgateways_make_gives_the_event_and_the_straight_line() -> None:
    """What the access log's writer finds on the `make` FastGateway hands it."""
    captured = (
        200, 0.0123, 0, "forwarded", "", "GET", "shop.local:8080", "/cart?id=1", "1.1",
        ("127.0.0.1", 50000, "web", "", ""), 1_767_225_600.25, 42,
        ("Ingress default/shop spec.rules[0]", "default/shop:80", ()), ("10.0.0.1", 8080), (),
        200, 0.01, (b"User-Agent",), (b"curl/8",),
    )  # fmt: skip
    event = EXCHANGE_EVENTS(captured)
    assert event == event_of(captured)
    line = EXCHANGE_EVENTS.json_line(captured, HeaderModes())
    assert line == json_line(event)
    assert event.endpoints == ("10.0.0.1:8080",)
    parsed = json.loads(line)
    assert parsed["StartUTC"] == "2026-01-01T00:00:00.25Z"
    assert parsed["time"] == "2026-01-01T00:00:00Z"  # (logrus' RFC 3339, as Traefik's JSON)
    assert (parsed["RequestHost"], parsed["RequestPort"]) == ("shop.local", "8080")
    assert parsed["ClientAddr"] == "127.0.0.1:50000"
    six = json.loads(json_line_of((*captured[:9], ("::1", 50000, "web", "", ""), *captured[10:]),
                                  HeaderModes()))  # fmt: skip
    assert (six["ClientAddr"], six["ClientHost"]) == ("[::1]:50000", "::1")  # (Go's RemoteAddr)


def test_requests_waiting_for_the_writer_leave_the_collector_nothing_to_count() -> None:
    """The log keeps a request's facts as values in one list: no object the garbage collector
    counts is left per request (a tuple each was: enough of them start collections that
    promote every request in flight to the older generations)."""
    log = AccessLog(os.devnull)  # (not started: the entries wait)
    values = [
        200, 0.5, 0, "forwarded", "", "GET", "h", "/", "1.1", ("::1", 1, "web", "", ""), 1e9, 0,
        NO_ROUTE_FACTS, ("10.0.0.1", 80), (), 200, 0.1, (), (),
    ]  # fmt: skip
    gc.disable()
    try:
        before = gc.get_count()[0]
        for _ in range(1000):
            log.requested_later(tuple(values), EXCHANGE_EVENTS)  # (a tuple, as a front makes)
        counted = gc.get_count()[0] - before
    finally:
        gc.enable()
    assert log.statistics().seen == 1000
    assert counted < 10

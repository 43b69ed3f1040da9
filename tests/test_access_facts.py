"""FastGateway's access log lines written straight from an exchange's facts (`json_line_of`)
are the lines of the events those facts make (`json_line(event_of(facts))`), whatever the
request: the writer skips the event, the line must not tell."""

from __future__ import annotations

import ipaddress
from types import SimpleNamespace
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from kroute.errors import InvalidRequest, NoHealthyEndpoint, NoRoute, UpstreamError
from kroute.gateway.access import HeaderModes
from kroute.gateway.access.format import json_line
from kroute.gateway.fast.record import EXCHANGE_EVENTS, event_of, json_line_of

texts = st.text(max_size=12)
names = st.sampled_from([b"User-Agent", b"authorization", b"X-Request-Id", b"x-request-id"])
errors = st.sampled_from([None, NoRoute("no route"), InvalidRequest("bad"),
                          NoHealthyEndpoint("none"), UpstreamError("reset", endpoint="e")])  # fmt: skip


def answered(status: int) -> SimpleNamespace:
    """A decision of no route (what `exchange_facts` reads of one: route, backend, chain)."""
    return SimpleNamespace(status=status, route=None, backend=None, chain=None)


def routed(route: str, backend: str | None) -> SimpleNamespace:
    return SimpleNamespace(status=200, route=SimpleNamespace(name=route), backend=backend,
                           chain=None)  # fmt: skip


decisions = st.one_of(
    st.none(),
    st.builds(answered, st.integers(200, 599)),
    st.builds(routed, texts, st.one_of(st.none(), texts)),
)
ips = st.one_of(st.none(), st.ip_addresses().map(ipaddress.ip_address))
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
    seconds = draw(st.floats(0, 100))
    return (
        draw(st.integers(0, 599)), seconds, len(tried) - 1 if tried else 0, draw(st.booleans()),
        draw(errors), draw(st.sampled_from(["GET", "POST", "PUT"])), draw(texts), draw(texts),
        draw(st.sampled_from(["1.0", "1.1"])), draw(ips),
        draw(st.one_of(st.none(), st.tuples(st.just("127.0.0.1"), st.integers(0, 65535)))),
        draw(texts), draw(st.floats(1.0e9, 2.0e9)), draw(st.integers(0, 2**40)),
        draw(decisions), tried, draw(st.sampled_from([0, 200, 404, 502])),
        draw(st.floats(0, 100)),
        draw(st.one_of(st.none(), st.tuples(st.sampled_from(["TLSv1.3", "TLSv1.2"]), texts))),
        [name for name, _ in headers], [value for _, value in headers],
    )  # fmt: skip


@given(facts(), header_modes)
def test_a_line_from_the_facts_is_the_line_of_their_event(
    captured: tuple[Any, ...], headers: HeaderModes
) -> None:
    assert json_line_of(captured, headers) == json_line(event_of(captured), headers)


def test_fastgateways_make_gives_the_event_and_the_straight_line() -> None:
    """What the access log's writer finds on the `make` FastGateway hands it."""
    captured = (
        200, 0.0123, 0, False, None, "GET", "shop.local:8080", "/cart?id=1", "1.1",
        ipaddress.ip_address("127.0.0.1"), ("127.0.0.1", 50000), "web", 1_767_225_600.25, 42,
        None, [("10.0.0.1", 8080)], 200, 0.01, None, [b"User-Agent"], [b"curl/8"],
    )  # fmt: skip
    event = EXCHANGE_EVENTS(captured)
    assert event == event_of(captured)
    assert EXCHANGE_EVENTS.json_line(captured, HeaderModes()) == json_line(event)
    assert event.endpoints == ("10.0.0.1:8080",)

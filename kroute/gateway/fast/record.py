"""The RequestEvent of one of FastGateway's exchanges, read from the exchange as it ends.

Why read at the end: an exchange already holds what an event says (the message, the decision,
the endpoints tried, the status, the bytes relayed), so nothing is recorded on the way for it;
what only the connection knows (the HTTP version, TLS) is asked of it here.
`Relay.finish` and `Relay.abandon` capture `exchange_facts` only when some observer wants
events; a sink that makes events later (the access log, `LaterSink`) gets those, and the
event is made of them off the serving loop (`event_of`).
"""

from __future__ import annotations

import functools
import time
from typing import Protocol

from kroute.errors import KrouteError
from kroute.gateway.access.format import HeaderModes, header_fields, json_text
from kroute.gateway.events import (
    CLIENT_GONE,
    Outcome,
    RequestEvent,
    decision_facts,
    decision_names,
    outcome_of_error,
)
from kroute.gateway.fast.ports import ClientSide, Key, Message
from kroute.gateway.router import Decision
from kroute.gateway.router.observers import Facts


class Ended(Protocol):
    """What an exchange (`relay.Relay`) has that its event says."""

    client: ClientSide
    message: Message
    decision: Decision | None
    tried: list[Key]
    status: int
    head_sent: bool
    body_bytes: int
    started: float
    sent_at: float
    error: KrouteError | None


def exchange_event(exchange: Ended, status: int, *, aborted: bool = False) -> RequestEvent:
    """The event of `exchange`, answered with `status` (`aborted`: the client went away)."""
    return event_of(exchange_facts(exchange, status, aborted=aborted))


def exchange_facts(exchange: Ended, status: int, *, aborted: bool = False) -> Facts:
    """What the event of `exchange` needs that is known now, as it ends (`Facts`: status,
    seconds, retries first), and nothing computed that `event_of` can compute later: a tuple
    of values the exchange holds, or read of the clocks and the connection now (the HTTP
    version, TLS's version and cipher). The lists it keeps (the header names and
    values, the endpoints tried) are the exchange's own, which nothing changes once it
    ended."""
    now = time.perf_counter()
    client, message = exchange.client, exchange.message
    origin = exchange.status  # (0 unless an endpoint's response head was relayed)
    if aborted:
        status = origin if exchange.head_sent and origin else CLIENT_GONE
    tried = exchange.tried
    transport = client.transport
    ssl = transport.get_extra_info("ssl_object")  # (read here: an SSL object is the loop's)
    tls = None if ssl is None else (ssl.version() or "", (ssl.cipher() or ("",))[0])
    seconds = now - exchange.started
    return (
        status, seconds, len(tried) - 1 if tried else 0, aborted, exchange.error,
        message.method_text, message.host, message.url_text, client.parser.get_http_version(),
        client.ip, client.peername, client.gateway.entry_point,
        time.time() - seconds, exchange.body_bytes, exchange.decision, tried, origin,
        client.loop.time() - exchange.sent_at if origin else 0.0,
        tls, message.names, message.values,
    )  # fmt: skip


#: A client's address as text, `str(ip)`: an `ipaddress` object's `__str__` is Python, about
#: three times the cost of this lookup, and a busy gateway's lines name few clients many times.
_address_text = functools.lru_cache(maxsize=1024)(str)


def _outcome(aborted: bool, error: KrouteError | None) -> Outcome:
    if aborted:
        return "client_abort"
    return "forwarded" if error is None else outcome_of_error(error)


def event_of(facts: Facts) -> RequestEvent:
    """The RequestEvent of an exchange's `exchange_facts` (in any thread: it reads only them)."""
    (status, seconds, _, aborted, error, method, host, target, version, ip, peer, entry_point,
     started, body_bytes, decision, tried, origin, origin_seconds, tls, names,
     values) = facts  # fmt: skip
    route, service, steps = decision_facts(decision)
    tls_version, tls_cipher = tls or ("", "")
    return RequestEvent(
        method, host, target, f"HTTP/{version}", "" if ip is None else _address_text(ip),
        int((peer or ("", 0))[1]), entry_point, started, seconds, status, body_bytes,
        _outcome(aborted, error), route, service, steps,
        tuple(f"{address}:{port}" for address, port in tried), origin,
        body_bytes if origin else 0, origin_seconds, tls_version, tls_cipher,
        tuple(zip(names, values, strict=True)), "" if error is None else str(error),
    )  # fmt: skip


def json_line_of(facts: Facts, headers: HeaderModes) -> str:
    """`json_line(event_of(facts), headers)`, the same line, read straight from the facts:
    the access log's writer shares the serving core, and most of an event is what a JSON line
    does not say (the steps, every endpoint tried, the error's text)."""
    (status, seconds, retries, aborted, error, method, host, target, version, ip, peer,
     entry_point, started, body_bytes, decision, tried, origin, origin_seconds, tls, names,
     values) = facts  # fmt: skip
    route, service = decision_names(decision)
    tls_version, tls_cipher = tls or ("", "")
    endpoint = ""
    if origin and tried:
        address, port = tried[-1]
        endpoint = f"{address}:{port}"
    return json_text(
        "" if ip is None else _address_text(ip), int((peer or ("", 0))[1]), body_bytes, status,
        seconds, body_bytes if origin else 0, origin_seconds, origin, host, method, target,
        f"HTTP/{version}", tls_version, retries, route, endpoint, service, started, tls_cipher,
        entry_point, _outcome(aborted, error),
        "" if headers.none else header_fields(zip(names, values, strict=True), headers),
    )  # fmt: skip


class ExchangeEvents:
    """FastGateway's `Make`: the event of an exchange's facts (`event_of`), and for the access
    log, which asks for it, their JSON line without the event (`json_line_of`)."""

    __slots__ = ()
    __call__ = staticmethod(event_of)
    json_line = staticmethod(json_line_of)


#: What `Relay` hands `Router.emit_later` with its facts.
EXCHANGE_EVENTS = ExchangeEvents()

"""The RequestEvent of one of FastGateway's exchanges, read from the exchange as it ends.

Why read at the end: an exchange already holds what an event says (the message, the decision,
the endpoints tried, the status, the bytes relayed), so nothing is recorded on the way for it;
what only the connection knows (the client's address, TLS) it reads once, when first asked.
`Relay.finish` and `Relay.abandon` capture `exchange_facts` only when some observer wants
events; a sink that makes events later (the access log, `LaterSink`) gets those, and the
event (`event_of`) or the JSON line (`json_line_of`) is made of them off the serving loop.

Why the facts hold only strings, numbers and objects that live longer than the request (the
connection's facts, the decision's names, the endpoint's key): they wait for the access log's
writer, which keeps their values in one list (`AccessLog`), so a request leaves no new object
that the garbage collector counts. Objects it counts that outlive their request (a tuple per
request, the exchange's lists) start collections of the youngest generation, which promote the
requests in flight to the older ones, whose full collections walk the whole heap
(docs/benchmarks.md, the access log's cuts). The header lists are kept only when some sink wants
them (`Observers.headers`), the endpoints tried before the last only after retries.
"""

from __future__ import annotations

import time
from typing import Protocol

from kroute.errors import KrouteError
from kroute.gateway.access.format import HeaderModes, header_fields, json_text
from kroute.gateway.events import (
    CLIENT_GONE,
    NO_ROUTE_FACTS,
    Outcome,
    RequestEvent,
    decision_facts,
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
    return event_of(exchange_facts(exchange, status, True, aborted=aborted))


def exchange_facts(exchange: Ended, status: int, headers: bool, *, aborted: bool = False) -> Facts:
    """What the event of `exchange` needs that is known now, as it ends (`Facts`: status,
    seconds, retries first), and nothing computed that `event_of` can compute later: values
    the exchange and its connection hold (`Client.facts`: the client's address and port, the
    entry point, TLS's version and cipher), the clocks read now, the decision's names (kept on
    the decision: `decision_facts`), the endpoint tried last and those before it (a tuple made
    only when there were retries), and the message's header lists when `headers` (some sink
    wants them: `Observers.headers`)."""
    now = time.perf_counter()
    client, message, error = exchange.client, exchange.message, exchange.error
    origin = exchange.status  # (0 unless an endpoint's response head was relayed)
    if aborted:
        status = origin if exchange.head_sent and origin else CLIENT_GONE
        outcome: Outcome = "client_abort"
    else:
        outcome = "forwarded" if error is None else outcome_of_error(error)
    tried = exchange.tried
    decision = exchange.decision
    seconds = now - exchange.started
    return (
        status, seconds, len(tried) - 1 if tried else 0, outcome,
        "" if error is None else str(error), message.method_text, message.host,
        message.url_text, client.parser.get_http_version(),
        client.facts or client.connection_facts(),
        time.time() - seconds, exchange.body_bytes,
        NO_ROUTE_FACTS if decision is None else decision.facts or decision_facts(decision),
        tried[-1] if tried else None, tuple(tried[:-1]) if len(tried) > 1 else (), origin,
        client.loop.time() - exchange.sent_at if origin else 0.0,
        message.names if headers else (), message.values if headers else (),
    )  # fmt: skip


def event_of(facts: Facts) -> RequestEvent:
    """The RequestEvent of an exchange's `exchange_facts` (in any thread: it reads only them)."""
    (status, seconds, _, outcome, error, method, host, target, version, client, started,
     body_bytes, named, last, earlier, origin, origin_seconds, names, values) = facts  # fmt: skip
    ip, port, entry_point, tls_version, tls_cipher = client
    route, service, steps = named
    endpoints = () if last is None else (*earlier, last)
    return RequestEvent(
        method, host, target, f"HTTP/{version}", ip, port, entry_point, started, seconds,
        status, body_bytes, outcome, route, service, steps,
        tuple(f"{address}:{number}" for address, number in endpoints), origin,
        body_bytes if origin else 0, origin_seconds, tls_version, tls_cipher,
        tuple(zip(names, values, strict=True)), error,
    )  # fmt: skip


def json_line_of(facts: Facts, headers: HeaderModes) -> str:
    """`json_line(event_of(facts), headers)`, the same line, read straight from the facts:
    the access log's writer shares the serving core, and most of an event is what a JSON line
    does not say (the steps, every endpoint tried, the error's text)."""
    (status, seconds, retries, outcome, _, method, host, target, version, client, started,
     body_bytes, named, last, _, origin, origin_seconds, names, values) = facts  # fmt: skip
    ip, port, entry_point, tls_version, tls_cipher = client
    return json_text(
        ip, port, body_bytes, status, seconds, body_bytes if origin else 0, origin_seconds,
        origin, host, method, target, "HTTP/1.1" if version == "1.1" else f"HTTP/{version}",
        tls_version, retries, named[0],
        f"{last[0]}:{last[1]}" if origin and last is not None else "", named[1], started,
        tls_cipher, entry_point, outcome,
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

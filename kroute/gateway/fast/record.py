"""The RequestEvent of one of FastGateway's exchanges, read from the exchange as it ends.

Why read at the end: an exchange already holds what an event says (the message, the decision,
the endpoints tried, the status, the bytes relayed), so nothing is recorded on the way for it;
what only the connection knows (the HTTP version, the client's port, TLS) is asked of it here.
`Relay.finish` and `Relay.abandon` call `exchange_event` only when some observer wants events.
"""

from __future__ import annotations

import time
from typing import Protocol

from kroute.errors import KrouteError
from kroute.gateway.events import (
    CLIENT_GONE,
    Outcome,
    RequestEvent,
    decision_facts,
    outcome_of_error,
)
from kroute.gateway.fast.ports import ClientSide, Key, Message
from kroute.gateway.router import Decision


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
    now = time.perf_counter()
    client, message, error = exchange.client, exchange.message, exchange.error
    outcome: Outcome
    if aborted:
        outcome = "client_abort"
        status = exchange.status if exchange.head_sent and exchange.status else CLIENT_GONE
    else:
        outcome = "forwarded" if error is None else outcome_of_error(error)
    transport = client.transport
    peer = transport.get_extra_info("peername") or ("", 0)
    tls = transport.get_extra_info("ssl_object")
    route, service, steps = decision_facts(exchange.decision)
    origin = exchange.status  # (0 unless an endpoint's response head was relayed)
    seconds = now - exchange.started
    return RequestEvent(
        message.method_text, message.host, message.url_text,
        f"HTTP/{client.parser.get_http_version()}", "" if client.ip is None else str(client.ip),
        int(peer[1]), client.gateway.entry_point, time.time() - seconds, seconds, status,
        exchange.body_bytes, outcome, route, service, steps,
        tuple(f"{address}:{port}" for address, port in exchange.tried),
        origin, exchange.body_bytes if origin else 0,
        client.loop.time() - exchange.sent_at if origin else 0.0,
        "" if tls is None else tls.version() or "",
        "" if tls is None else (tls.cipher() or ("",))[0],
        tuple(zip(message.names, message.values, strict=True)),
        "" if error is None else str(error),
    )  # fmt: skip

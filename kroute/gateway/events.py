"""RequestEvent: what happened to one request, for access logs, metrics and users' own sinks.

Why one value: an access log line, a trace and a user's structlog call all want the same facts
(the request as it came, where it was routed, every attempt, what the client got, how long it
took), and each front knows them in its own form. Each front builds this value once a request
ends, only when some observer asked for events (`Observers.listening`): nothing is built, and
nothing is paid beyond one test, when none did.

The fronts that forward through `Router.forward` (HttpServer, the ASGI gateway) learn the facts
as the request goes, in a `RequestRecord`; FastGateway reads them from its exchange
(`kroute.gateway.fast.record`).

Outcomes: "forwarded" (the endpoint's response relayed to its end), "answered" (a step
answered by itself: a refusal, a user's check, CORS preflight), "redirect" (the route's
redirect), "no_route" (404), "unavailable" (500: the backend cannot be used; 503: no usable
endpoint), "upstream_error" (502, 504: every attempt failed, or the response broke off),
"invalid_request" (400: the request could not be routed), "client_abort" (the client went away
before its response ended; the status is what it was sent, or 499 when nothing was, as
nginx logs it).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

import attrs

from kroute.errors import (
    Answered,
    InvalidRequest,
    KrouteError,
    NoRoute,
    Redirected,
    UpstreamError,
)

if TYPE_CHECKING:
    from kroute.gateway.router.decisions import Decision
    from kroute.gateway.tracing import Propagation

__all__ = ["CLIENT_GONE", "Outcome", "RequestEvent", "RequestRecord", "outcome_of_error"]

Outcome = Literal[
    "forwarded", "answered", "redirect", "no_route", "unavailable", "upstream_error",
    "invalid_request", "client_abort",
]  # fmt: skip

#: The status of a request whose client went away before any of its response was sent (nginx).
CLIENT_GONE = 499

Header = tuple[bytes, bytes]


@attrs.frozen
class RequestEvent:
    """One request, once its response ended (or the client went away).

    Strings are as received (latin-1); "" or 0 where a fact does not apply (no route, no
    attempt, no TLS). `started` is the Unix time the request was routed (`start_utc` as a
    datetime); `seconds` runs from then to the end of the response. The origin facts are the
    answering attempt's: its response status, body bytes and time from sending the request to
    the end of its response.
    """

    method: str
    host: str
    target: str  # the path with its query, as received
    protocol: str  # "HTTP/1.1"
    client_ip: str
    client_port: int
    entry_point: str
    started: float
    seconds: float
    status: int  # what the client was answered
    bytes_sent: int  # response body bytes sent to the client
    outcome: Outcome
    route: str = ""
    service: str = ""  # "namespace/name:port"
    steps: tuple[str, ...] = ()  # the route's steps, by label
    endpoints: tuple[str, ...] = ()  # "address:port" of each attempt, in order
    origin_status: int = 0
    origin_bytes: int = 0
    origin_seconds: float = 0.0
    tls_version: str = ""
    tls_cipher: str = ""
    request_headers: tuple[Header, ...] = ()
    reason: str = ""  # why it was not forwarded (for logs, never for the client)

    @property
    def retries(self) -> int:
        """Attempts after the first."""
        return max(len(self.endpoints) - 1, 0)

    @property
    def start_utc(self) -> datetime:
        return datetime.fromtimestamp(self.started, UTC)


#: The outcome of a request an error answered, by the error's class (the first that fits).
_ERROR_OUTCOMES: tuple[tuple[type[KrouteError], Outcome], ...] = (
    (UpstreamError, "upstream_error"), (Answered, "answered"), (Redirected, "redirect"),
    (NoRoute, "no_route"), (InvalidRequest, "invalid_request"),
)  # fmt: skip


def outcome_of_error(error: KrouteError) -> Outcome:
    """The outcome of a request answered by `error` (see the module docstring); "unavailable"
    for the rest (InvalidBackend 500, NoHealthyEndpoint 503)."""
    return next((o for kind, o in _ERROR_OUTCOMES if isinstance(error, kind)), "unavailable")


#: What a request that no route took says of its route, service and steps.
NO_ROUTE_FACTS: tuple[str, str, tuple[str, ...]] = ("", "", ())


def decision_facts(decision: Decision | None) -> tuple[str, str, tuple[str, ...]]:
    """(route name, service, step labels) of a decision, made once per decision and kept on it
    (`Decision.facts`): most requests reuse a kept decision, and a front that logs them reads
    these per request."""
    if decision is None or decision.route is None:
        return NO_ROUTE_FACTS
    facts = decision.facts
    if facts is None:
        chain = decision.chain
        steps = () if chain is None else tuple(step.label for step in chain.steps)
        backend = decision.backend
        facts = (decision.route.name, "" if backend is None else str(backend), steps)
        object.__setattr__(decision, "facts", facts)  # (a frozen value's cache, as attrs does)
    return facts


class RequestRecord:
    """What HttpServer and the ASGI gateway learn of one request as it goes through
    `Router.forward` (made only when some observer wants events): the decision, each attempt,
    the origin's answer, the bytes sent; `event()` makes the RequestEvent at the end."""

    __slots__ = (
        "bytes_sent", "client_ip", "client_port", "complete", "decision", "endpoints",
        "entry_point", "error", "headers", "host", "method", "origin_at", "origin_status",
        "protocol", "started", "target", "tls", "trace", "wall",
    )  # fmt: skip

    def __init__(
        self, method: str, host: str, target: str, *, protocol: str, client_ip: str,
        client_port: int, entry_point: str, headers: Sequence[Header] = (),
        tls: tuple[str, str] | None = None,
    ) -> None:  # fmt: skip
        self.started = time.perf_counter()
        self.wall = time.time()
        self.method, self.host, self.target, self.protocol = method, host, target, protocol
        self.client_ip, self.client_port, self.entry_point = client_ip, client_port, entry_point
        self.headers = tuple(headers)
        self.tls = tls
        self.decision: Decision | None = None
        self.endpoints: list[str] = []
        self.origin_at = 0.0
        self.origin_status = 0
        self.bytes_sent = 0
        self.complete = False  # the response body was sent to its end
        self.error: KrouteError | None = None
        self.trace: Propagation | None = None  # (the Router traces: `kroute.gateway.tracing`)

    def attempt(self, address: str, port: int) -> None:
        """An attempt at an endpoint begins."""
        self.endpoints.append(f"{address}:{port}")
        self.origin_at = time.perf_counter()
        if self.trace is not None:
            self.trace.attempt(address, port)

    def attempted(self, outcome: KrouteError | int) -> None:
        """The attempt under way got a response head (its status) or failed."""
        if self.trace is not None:
            if isinstance(outcome, int):
                self.trace.attempt_ended(outcome)
            else:
                self.trace.attempt_ended(error=outcome)

    def event(self, status: int, *, aborted: bool = False) -> RequestEvent:
        """The event of the request, answered with `status` (`aborted`: the client went away
        before the response ended)."""
        now = time.perf_counter()
        error = self.error
        outcome: Outcome
        if aborted:
            outcome = "client_abort"
        elif error is not None:
            outcome = outcome_of_error(error)
        else:
            outcome = "forwarded"
        route, service, steps = decision_facts(self.decision)
        forwarded = self.origin_status != 0
        tls = self.tls or ("", "")
        return RequestEvent(
            self.method, self.host, self.target, self.protocol, self.client_ip,
            self.client_port, self.entry_point, self.wall, now - self.started, status,
            self.bytes_sent, outcome, route, service, steps, tuple(self.endpoints),
            self.origin_status, self.bytes_sent if forwarded else 0,
            now - self.origin_at if forwarded else 0.0, tls[0], tls[1], self.headers,
            "" if error is None else str(error),
        )  # fmt: skip

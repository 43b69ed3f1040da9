"""Traced exchanges: an `exchange.Exchange` with its trace (`kroute.gateway.tracing`).

Why subclasses: FastGateway's hot path must not pay for tracing it does not do. The client
connection asks `exchange_for` for its exchanges only when the Router traces (one attribute
test per request otherwise); an untraced exchange runs no tracing code at all. The trace
context goes out as the exchange's `trace_lines`, which `Exchange.send` appends. A request that
starts a trace kroute does not sample gets an `Unsampled` exchange, which holds only its line
(no trace object: this is the path of most requests when a ratio samples few); another whose
trace does not record a `Propagating` exchange, which only passes the trace context on; a
recording one a `TracedExchange`, whose attempts are spans that end with their response head or
failure, and whose server span ends with the exchange, its attributes read from the exchange's
`RequestEvent` (`record.exchange_event`).
"""

from __future__ import annotations

from kroute.errors import UpstreamError
from kroute.gateway.fast.exchange import Exchange
from kroute.gateway.fast.ports import ClientSide, Key, Message
from kroute.gateway.fast.record import exchange_event
from kroute.gateway.tracing import Propagation, Tracing
from kroute.pipeline.fetch import Fetch
from kroute.transport.http1 import interim


def exchange_for(client: ClientSide, message: Message, tracing: Tracing) -> Exchange:
    """The exchange of `message`, its trace started. A request without Trace Context fields
    (`Message.trace_fields`, read by the header plan) that kroute's sampling leaves out, the
    usual case, takes the short way: a draw, a new trace's line (`Tracing.fresh`), no object
    for its trace (`Unsampled`)."""
    if not message.trace_fields:
        if tracing.draw() >= tracing.threshold:
            fresh = Unsampled(client, message)
            fresh.trace_lines = next(tracing.fresh, None) or tracing.fresh_line()
            return fresh
        trace = tracing.start(message.method_text, (), client.gateway.scheme)
    else:
        trace = tracing.start(message.method_text, zip(message.names, message.values, strict=True),
                              client.gateway.scheme)  # fmt: skip
    exchange = TracedExchange(client, message) if trace.recording else Propagating(client, message)
    exchange.trace = trace
    exchange.trace_lines = trace.lines
    return exchange


class Unsampled(Exchange):
    """A new trace kroute does not sample: its `traceparent` line goes with the request
    (`Exchange.send`), and its `Propagation` is made only if a step's call or a mirror asks."""

    __slots__ = ("trace_lines",)

    def propagation(self) -> Propagation | None:
        tracing = self.router.tracing
        return None if tracing is None else Propagation(tracing, self.trace_lines, False)

    def fetcher(self) -> Fetch:
        trace = self.propagation()
        return self.router.fetch if trace is None else trace.fetcher(self.router.fetch)


class Propagating(Exchange):
    """An exchange whose request carries its trace context on, nothing recorded."""

    __slots__ = ("trace", "trace_lines")
    trace: Propagation  # (set by `exchange_for`, as it is made)

    def propagation(self) -> Propagation | None:
        return self.trace

    def fetcher(self) -> Fetch:
        return self.trace.fetcher(self.router.fetch)


class TracedExchange(Propagating):
    """An exchange whose trace records: attempt spans, the server span's end."""

    __slots__ = ()

    def attempt(self, key: Key, backoff: float = 0.0, waited: bool = False) -> None:
        if not waited:
            self.trace.attempt(*key)
        super().attempt(key, backoff, waited)

    def failed(self, error: UpstreamError) -> None:
        if not self.finished:
            self.trace.attempt_ended(error=error)
        super().failed(error)

    def response_head(self) -> None:
        assert self.conn is not None
        status = self.conn.parser.get_status_code()
        if not (status < 200 and interim(status)):  # (a final head: the attempt is answered)
            self.trace.attempt_ended(status)
        super().response_head()

    def finish(self, status: int, *, keep: bool) -> None:
        if not self.finished:
            self.trace.end(exchange_event(self, status))
        super().finish(status, keep=keep)

    def abandon(self) -> None:
        if not self.finished:
            self.trace.end(exchange_event(self, 0, aborted=True))
        super().abandon()

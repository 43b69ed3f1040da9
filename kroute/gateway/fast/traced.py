"""TracedExchange: an `exchange.Exchange` with its trace (`kroute.gateway.tracing`).

Why a subclass: FastGateway's hot path must not pay for tracing it does not do. The client
connection makes a TracedExchange only when the Router traces (one attribute test per request);
an untraced exchange runs no tracing code at all. Here the exchange's own steps are extended:
the trace starts with the exchange, the request sent carries its context, each attempt is a
span that ends with its response head or its failure, and the server span ends with the
exchange, its attributes read from the exchange's `RequestEvent` (`record.exchange_event`).
"""

from __future__ import annotations

from kroute.errors import UpstreamError
from kroute.gateway.fast.exchange import Exchange
from kroute.gateway.fast.ports import ClientSide, Key, Message
from kroute.gateway.fast.record import exchange_event
from kroute.gateway.tracing import Trace
from kroute.pipeline.fetch import Fetch
from kroute.transport.http1 import interim


class TracedExchange(Exchange):
    """An exchange whose request is traced (module docstring)."""

    __slots__ = ("trace",)

    def __init__(self, client: ClientSide, message: Message) -> None:
        super().__init__(client, message)
        tracing = self.router.tracing
        assert tracing is not None
        self.trace: Trace = tracing.start(
            message.method_text, zip(message.names, message.values, strict=True),
            self.gateway.scheme,
        )  # fmt: skip

    def send(self, url: bytes, lines: bytes) -> None:
        super().send(url, self.trace.propagate_lines(lines))

    def fetcher(self) -> Fetch:
        return self.trace.fetcher(self.router.fetch)

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
        if not self.finished and self.trace.recording:
            self.trace.end(exchange_event(self, status))
        super().finish(status, keep=keep)

    def abandon(self) -> None:
        if not self.finished and self.trace.recording:
            self.trace.end(exchange_event(self, 0, aborted=True))
        super().abandon()

"""FastGateway's connections to endpoints: one asyncio Protocol each, llhttp reading responses.

An `Upstream` belongs to the pool of idle connections (`IdleConnections`) or to the exchange
using it, which it reaches only through `ports.ExchangeSide`: the response's head, body and
end, its socket closing, and the read timeout it keeps for the exchanges that use it.
"""

from __future__ import annotations

import asyncio

import httptools

from kroute.errors import UpstreamProtocolError, UpstreamTimeout
from kroute.gateway.fast.ports import EndpointSide, ExchangeSide, Headers, Key
from kroute.transport.idle import IdleConnections


class Upstream(asyncio.Protocol):
    """One connection to an endpoint; its responses go to the exchange that uses it.

    Its read timer outlives exchanges: armed when the connection is first used, it re-arms
    itself while an exchange is waiting, so keep-alive requests set no timer of their own.
    """

    __slots__ = ("closed", "endpoints", "exchange", "idle_since", "key", "names", "parser",
                 "received", "reused", "timer", "transport", "values")  # fmt: skip

    def __init__(self, endpoints: IdleConnections[Key, EndpointSide], key: Key) -> None:
        self.endpoints = endpoints
        self.key = key
        self.transport: asyncio.Transport
        self.parser = httptools.HttpResponseParser(self)
        self.exchange: ExchangeSide | None = None
        self.idle_since = 0.0
        self.closed = False
        self.received = False  # any byte of the current response
        self.reused = False
        self.timer: asyncio.TimerHandle | None = None
        #: The head of the response being read: its header names and values (the reason
        #: phrase is not read: every front writes the standard one, `http1.status_line`).
        self.names: list[bytes] = []
        self.values: list[bytes] = []

    def new_head(self) -> None:
        """Forget the head read last: the next response's is read from here."""
        self.names, self.values = [], []

    def fields(self) -> Headers:
        """The head's header fields, (name, value) each."""
        return list(zip(self.names, self.values, strict=True))

    def arm(self, loop: asyncio.AbstractEventLoop, seconds: float) -> None:
        """Start the read timer (the connection has none yet)."""
        self.timer = loop.call_at(loop.time() + seconds, self.check_timeout, loop, seconds)

    def check_timeout(self, loop: asyncio.AbstractEventLoop, limit: float) -> None:
        self.timer = None
        exchange = self.exchange
        if exchange is None or exchange.finished or exchange.piping or self.closed:
            return  # idle (the next use arms the timer again), or piping: no read timeout
        if loop.time() - exchange.upstream_activity >= limit:
            exchange.failed(UpstreamTimeout("read", endpoint=endpoint_text(self.key),
                                            request_sent=True))  # fmt: skip
        else:
            self.timer = loop.call_at(exchange.upstream_activity + limit, self.check_timeout,
                                      loop, limit)  # fmt: skip

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def close(self) -> None:
        self.transport.close()

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:  # nothing is asked of an idle connection: drop it
            self.transport.close()  # (nothing is queued in the outbox for an idle one)
            return
        self.received = True
        exchange.upstream_activity = exchange.loop.time()
        if exchange.piping:
            exchange.outbox.write(exchange.client.transport, data)
            return
        try:
            self.parser.feed_data(data)
            if exchange.pending:  # (a response that ended in this read is out already)
                exchange.flush()
        except httptools.HttpParserUpgrade as upgrade:
            exchange.upgraded(data[upgrade.args[0] :])
        except httptools.HttpParserError as exc:
            exchange.failed(UpstreamProtocolError(f"invalid response: {exc}",
                                                  endpoint=endpoint_text(self.key)))  # fmt: skip

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.endpoints.forget(self.key, self)
        if self.exchange is not None:
            self.exchange.upstream_lost()

    def pause_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.client.pause()

    def resume_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.client.resume()

    # llhttp callbacks, passed on to the exchange
    def on_header(self, name: bytes, value: bytes) -> None:
        self.names.append(name)
        self.values.append(value)

    def on_headers_complete(self) -> None:
        if self.exchange is not None:
            self.exchange.response_head()

    def on_body(self, body: bytes) -> None:
        """A piece of the response body, for the client (framed anew when chunked out)."""
        exchange = self.exchange
        if exchange is None or exchange.no_body or not body:
            return
        exchange.body_bytes += len(body)
        if exchange.body is not None:  # the route's body steps (`kroute.pipeline.body`)
            exchange.filtered(body)
        elif exchange.chunked_out:
            exchange.pending.append(b"%x\r\n%b\r\n" % (len(body), body))
        else:
            exchange.pending.append(body)

    def on_message_complete(self) -> None:
        if self.exchange is not None:
            self.exchange.response_done()


def endpoint_text(key: Key | None) -> str:
    return "" if key is None else f"{key[0]}:{key[1]}"

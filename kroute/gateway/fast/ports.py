"""The interfaces between FastGateway's parts, and the request value they share.

Why: the client connection (`client.Client`) starts exchanges, an exchange (`exchange.Exchange`)
uses endpoint connections (`endpoint.Upstream`), and each of those calls back into the one that
uses it: the client's flow control, the exchange's response callbacks. Written against each
other's classes, the modules imported one another. Here is what each side needs of the other,
as `typing.Protocol`s, so a module imports only the modules below it (the order is an
import-linter `layers` contract in pyproject.toml). Protocols are checked by mypy and cost
nothing at run time: the calls and attribute reads are the same as on the classes.
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Protocol

import httptools

from kroute.errors import UpstreamError
from kroute.gateway.outbox import Outbox
from kroute.gateway.router import Router
from kroute.pipeline.body import BodyFilter
from kroute.pipeline.patch import ResponsePatch
from kroute.pipeline.steps import Chain, UpstreamRequest
from kroute.transport.base import Timeouts
from kroute.transport.header_plans import HeaderPlans
from kroute.transport.http1 import ServerLimits
from kroute.transport.idle import IdleConnections
from kroute.transport.proxy import TrustedProxies

#: An endpoint: (address, port).
Key = tuple[str, int]
Headers = list[tuple[bytes, bytes]]
#: Buffered request body (before an endpoint is connected) above which the client is paused.
BUFFER_LIMIT = 256 * 1024


class RequestSide(Protocol):
    """What a client connection passes the body of a request being exchanged to."""

    def request_body(self, chunk: bytes) -> None: ...

    def request_done(self) -> None: ...


class Message:
    """A request as llhttp parsed it; its body chunks wait here until an endpoint takes them."""

    __slots__ = (
        "chunked", "chunks", "complete", "content_length", "exchange", "forwarded", "has_body",
        "header_bytes", "host", "keep_alive", "lines", "method", "method_text", "names",
        "trace_fields", "upgrade", "url", "url_text", "values",
    )  # fmt: skip

    def __init__(self) -> None:
        self.url = b""
        #: The header fields as received: names and values, in two lists (`HeaderPlans`).
        self.names: list[bytes] = []
        self.values: list[bytes] = []
        #: The end-to-end header lines to pass on, and the incoming X-Forwarded-*/Forwarded.
        self.lines = b""
        self.forwarded: Headers = []
        self.header_bytes = 0
        self.method = b""
        self.method_text = ""
        self.host = ""
        self.url_text = ""
        self.content_length: int | None = None
        self.chunked = False
        self.has_body = False
        #: It has a Trace Context field (`traceparent`, `tracestate`): tracing reads them.
        self.trace_fields = False
        self.upgrade: bytes | None = None
        self.keep_alive = True
        self.chunks: list[bytes] = []
        self.complete = False
        self.exchange: RequestSide | None = None

    def fields(self) -> Headers:
        """The header fields as received, (name, value) each."""
        return list(zip(self.names, self.values, strict=True))

    def str_headers(self) -> list[tuple[str, str]]:
        fields = zip(self.names, self.values, strict=True)
        return [(n.decode("latin-1"), v.decode("latin-1")) for n, v in fields]


class EndpointSide(Protocol):
    """What an exchange needs of a connection to an endpoint (`endpoint.Upstream`): its
    transport, the response head llhttp read, and the state the exchange sets for a try."""

    key: Key
    transport: asyncio.Transport
    parser: httptools.HttpResponseParser
    exchange: ExchangeSide | None
    names: list[bytes]
    values: list[bytes]
    idle_since: float
    closed: bool
    received: bool
    reused: bool
    timer: asyncio.TimerHandle | None

    def new_head(self) -> None: ...

    def fields(self) -> Headers: ...

    def arm(self, loop: asyncio.AbstractEventLoop, seconds: float) -> None: ...

    def close(self) -> None: ...


class Connection(Protocol):
    """A client connection as the gateway keeps it (to close it at shutdown)."""

    transport: asyncio.Transport

    def idle(self) -> bool: ...


class Gateway(Protocol):
    """What the parts read of the FastGateway they serve: settings and shared state."""

    router: Router
    entry_point: str
    limits: ServerLimits
    timeouts: Timeouts
    trusted: TrustedProxies
    scheme: str
    hsts_line: bytes
    endpoints: IdleConnections[Key, EndpointSide]
    clients: set[Connection]
    outbox: Outbox
    request_headers: HeaderPlans
    plans: dict[tuple[int, str], tuple[Chain, bytes, bytes]]
    response_headers: HeaderPlans
    patched: dict[int, tuple[ResponsePatch, HeaderPlans]]
    draining: bool


class ClientSide(Protocol):
    """What an exchange needs of the client connection it answers (`client.Client`)."""

    gateway: Gateway
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    peer: str
    facts: tuple[str, int, str, str, str] | None

    def connection_facts(self) -> tuple[str, int, str, str, str]: ...

    parser: httptools.HttpRequestParser

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def forwarding(self, message: Message) -> bytes: ...

    def planned(self, message: Message, chain: Chain) -> tuple[bytes, bytes] | None: ...

    def upstream_request(
        self, message: Message, chain: Chain
    ) -> tuple[UpstreamRequest, bytes | None]: ...

    def start_pipe(self, upstream: EndpointSide) -> None: ...

    def exchange_done(self, exchange: object, keep: bool) -> None: ...


class ExchangeSide(Protocol):
    """What an endpoint connection needs of the exchange using it (`exchange.Exchange`): where
    the response goes, and the callbacks its parser and its socket make."""

    client: ClientSide
    loop: asyncio.AbstractEventLoop
    outbox: Outbox
    pending: list[bytes]
    finished: bool
    piping: bool
    no_body: bool
    chunked_out: bool
    upstream_activity: float
    body_bytes: int
    body: BodyFilter | None

    def flush(self) -> None: ...

    def filtered(self, chunk: bytes | None) -> bool: ...

    def failed(self, error: UpstreamError) -> None: ...

    def response_head(self) -> None: ...

    def response_done(self, keep_alive: bool | None = None) -> None: ...

    def upgraded(self, rest: bytes) -> None: ...

    def upstream_lost(self) -> None: ...

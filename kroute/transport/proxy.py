"""Proxy semantics shared by every transport. Pure: headers in, headers out; time passed in.

- Hop-by-hop headers (RFC 9110 section 7.6.1): Connection, and every header it names,
  Keep-Alive, Proxy-Connection, Proxy-Authenticate, Proxy-Authorization, TE, Trailer,
  Transfer-Encoding and Upgrade are not forwarded (an Upgrade that is passed through is put back
  by the transport that does it).
- Forwarding headers: X-Forwarded-For, -Proto, -Host, -Port and Forwarded (RFC 7239) describe
  the client to the backend. Incoming values are kept and extended only when the peer is a
  trusted proxy; from anyone else they are dropped and replaced, so a client cannot pretend to
  be someone else.
- Host is passed through by default, or rewritten per route.
- Errors become short, clear responses with the status each error class hints at: 502 for a
  refused connection or a malformed answer, 504 for timeouts, 503 when there is no endpoint.
- Sending again only when safe (`replay_safe`): the method is idempotent (RFC 9110 section
  9.2.2) and the body can be sent again; retries are counted against a `RetryBudget`, so that
  they cannot multiply an overload. `kroute.transport.retry_policy` decides retries with both.
"""

from __future__ import annotations

import collections
import ipaddress
import re
from collections.abc import Iterable, Sequence

import attrs

from kroute.errors import (
    Answered,
    KrouteError,
    Redirected,
    UpstreamClosed,
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from kroute.objects import in_networks
from kroute.pipeline.request import HOP_BY_HOP as HOP_BY_HOP  # (the fronts read it here)

Headers = list[tuple[bytes, bytes]]

#: What the next hop is told of this one (`forwarding_headers`): set anew for each request,
#: extending a trusted proxy's values.
HOP_FIELDS = frozenset({
    b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"x-forwarded-port",
    b"forwarded",
})  # fmt: skip
#: Fields that describe the request to whoever comes next, which only a trusted proxy may say
#: (the rest of Traefik's forwardedheaders `XHeadersSet`): passed on from a trusted proxy,
#: dropped from anyone else. Without this a client could tell a forwardAuth service it asks for
#: another path or method (X-Forwarded-Uri, X-Forwarded-Method) than it does.
VOUCHED = {
    b"x-forwarded-uri": b"X-Forwarded-Uri", b"x-forwarded-method": b"X-Forwarded-Method",
    b"x-forwarded-prefix": b"X-Forwarded-Prefix", b"x-forwarded-server": b"X-Forwarded-Server",
    b"x-forwarded-tls-client-cert": b"X-Forwarded-Tls-Client-Cert",
    b"x-forwarded-tls-client-cert-info": b"X-Forwarded-Tls-Client-Cert-Info",
    b"x-real-ip": b"X-Real-Ip",
}  # fmt: skip
#: Every forwarding field, also spelled with underscores, which some backends read as the same
#: field (CGI makes HTTP_X_FORWARDED_FOR of both spellings): those are dropped from everyone.
FORWARDING = (HOP_FIELDS | VOUCHED.keys()) | {
    name.replace(b"-", b"_") for name in HOP_FIELDS | VOUCHED.keys() if b"-" in name
}
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


def connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> set[bytes]:
    """The options of every Connection header, lower-cased (e.g. {b"close", b"x-secret"})."""
    tokens: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b",") if t.strip())
    return tokens


def strip_hop_by_hop(
    headers: Iterable[tuple[bytes, bytes]], also: frozenset[bytes] = frozenset()
) -> Headers:
    """The headers without hop-by-hop ones, including those the Connection header names (and
    without the lower-case names in `also`, which saves callers a second pass)."""
    items = headers if isinstance(headers, list) else list(headers)
    drop = HOP_BY_HOP | also if also else HOP_BY_HOP
    if any(name.lower() == b"connection" for name, _ in items):
        drop = drop | connection_tokens(items)
    return [(n, v) for n, v in items if n.lower() not in drop]


#: Connection header values that name no other header (the common case, skipped quickly).
PLAIN_CONNECTION = frozenset({b"keep-alive", b"close", b"Keep-Alive", b"Close", b"upgrade",
                               b"Upgrade"})  # fmt: skip


@attrs.frozen
class HeaderSplit:
    """For `header_lines`: the headers not passed on (`drop`: HOP_BY_HOP at least) and those
    whose values are read (`read`: b"connection" at least), by lower-case name."""

    drop: frozenset[bytes]
    read: frozenset[bytes]


def header_lines(
    headers: Sequence[tuple[bytes, bytes]], split: HeaderSplit
) -> tuple[list[bytes], dict[bytes, list[bytes]]]:
    """One pass over a message's headers, for a proxy's hot path: the `Name: value\\r\\n`
    lines to pass on, and the values of the headers named in `split.read`, by lower-case name.

    Not passed on: the headers named in `split.drop`, and those a Connection header names
    (RFC 9110 section 7.6.1).
    """
    lines: list[bytes] = []
    values: dict[bytes, list[bytes]] = {}
    read, drop = split.read, split.drop
    for name, value in headers:
        lower = name.lower()
        if lower in read:
            values.setdefault(lower, []).append(value)
        if lower not in drop:
            lines.append(b"%b: %b\r\n" % (name, value))
    connection = values.get(b"connection", ())
    if not PLAIN_CONNECTION.issuperset(connection) and (
        connection_tokens((b"connection", v) for v in connection) - drop
    ):  # a Connection header names end-to-end headers: the general path drops them too
        lines = [b"%b: %b\r\n" % field for field in strip_hop_by_hop(headers, drop)]
    return lines, values


def render_headers(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """Header fields as they go on the wire: `Name: value\\r\\n` each."""
    return b"".join([b"%b: %b\r\n" % field for field in headers])


@attrs.frozen
class TrustedProxies:
    """Peers whose X-Forwarded-* and Forwarded headers are believed."""

    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @classmethod
    def of(cls, *cidrs: str) -> TrustedProxies:
        return cls(tuple(ipaddress.ip_network(c, strict=False) for c in cidrs))

    def trusts(self, address: str) -> bool:
        return bool(self.networks) and in_networks(address, self.networks)


@attrs.frozen
class Hop:
    """What this proxy knows of the request it received."""

    client: str  # the peer's address
    scheme: str  # "http" or "https"
    host: str  # the Host header as received
    port: int  # the port the request arrived on


def _node(address: str) -> str:
    """A Forwarded node (RFC 7239 section 6): IPv6 in brackets and quotes."""
    return f'"[{address}]"' if ":" in address else address


def forwarding_headers(
    headers: Iterable[tuple[bytes, bytes]], hop: Hop, trusted: TrustedProxies = TrustedProxies()
) -> Headers:
    """The headers with X-Forwarded-For/-Proto/-Host/-Port and Forwarded describing `hop`;
    the other forwarding fields (`VOUCHED`) only when the peer is a trusted proxy."""
    out: Headers = []
    incoming: dict[bytes, list[bytes]] | None = None
    for name, value in headers:
        lower = name.lower()
        if lower in FORWARDING:
            if incoming is None:
                incoming = collections.defaultdict(list)
            incoming[lower].append(value.strip())
        else:
            out.append((name, value))
    if incoming is not None and not trusted.trusts(hop.client):
        incoming = None

    def prior(name: bytes) -> bytes | None:
        values = incoming.get(name) if incoming is not None else None
        return b", ".join(values) if values else None

    chain = prior(b"x-forwarded-for")
    client = hop.client.encode()
    out.append((b"X-Forwarded-For", chain + b", " + client if chain else client))
    out.append((b"X-Forwarded-Proto", prior(b"x-forwarded-proto") or hop.scheme.encode()))
    out.append((b"X-Forwarded-Host", prior(b"x-forwarded-host") or hop.host.encode()))
    out.append((b"X-Forwarded-Port", prior(b"x-forwarded-port") or str(hop.port).encode()))
    element = f'for={_node(hop.client)};proto={hop.scheme};host="{hop.host}"'.encode()
    earlier = prior(b"forwarded")
    out.append((b"Forwarded", earlier + b", " + element if earlier else element))
    if incoming is not None:  # (a trusted proxy's: what it says of the request goes on)
        out.extend((VOUCHED[name], value) for name, values in incoming.items()
                   if name in VOUCHED for value in values)  # fmt: skip
    return out


def set_host(headers: Iterable[tuple[bytes, bytes]], host: str | None) -> Headers:
    """Host passed through (`host` None), or rewritten to `host`."""
    items = list(headers)
    if host is None:
        return items
    return [(n, v) for n, v in items if n.lower() != b"host"] + [(b"Host", host.encode())]


_HOST_LINE = re.compile(rb"^host:[^\r\n]*\r\n", re.IGNORECASE | re.MULTILINE)


def host_line(lines: bytes, address: str, port: int) -> bytes:
    """Rendered header `lines` with Host set to an endpoint's `address` and `port` (any Host
    line replaced): `set_host` for FastGateway's lines (Traefik's `passHostHeader: false`)."""
    host = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
    return _HOST_LINE.sub(b"", lines) + b"Host: %b\r\n" % host.encode("latin-1")


#: Reason phrases (RFC 9110 section 15) of the statuses kroute itself answers with.
REASONS = {
    101: "Switching Protocols", 200: "OK", 201: "Created", 204: "No Content",
    301: "Moved Permanently", 302: "Found", 303: "See Other", 304: "Not Modified",
    307: "Temporary Redirect", 308: "Permanent Redirect",
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 408: "Request Timeout", 413: "Content Too Large",
    414: "URI Too Long", 429: "Too Many Requests", 431: "Request Header Fields Too Large",
    500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
    504: "Gateway Timeout",
}  # fmt: skip


def error_response(error: KrouteError) -> tuple[int, Headers, bytes]:
    """A short response for an error that reaches a client; internal addresses stay inside.
    (A redirect travels the same way, with its Location.)"""
    status = error.status_hint
    if isinstance(error, UpstreamTimeout):
        detail = f"backend {error.phase} timeout"
    elif isinstance(error, UpstreamConnectError):
        detail = "connection to the backend failed"
    elif isinstance(error, UpstreamProtocolError):
        detail = "the backend sent an invalid response"
    elif isinstance(error, UpstreamClosed):
        detail = "the backend closed the connection"
    elif isinstance(error, UpstreamError):
        detail = "backend error"
    elif isinstance(error, Answered):
        return _answered(error)
    else:
        detail = str(error)
    body = f"{status} {REASONS.get(status, 'Error')}: {detail}\n".encode()
    headers = [(b"Content-Type", b"text/plain; charset=utf-8"),
               (b"Content-Length", str(len(body)).encode())]  # fmt: skip
    if isinstance(error, Redirected):
        headers.append((b"Location", error.location.encode("latin-1", "replace")))
    return status, headers, body


def _answered(answer: Answered) -> tuple[int, Headers, bytes]:
    """A step's own answer: its headers and body (a short text when it gave none), framed. An
    interim status is no answer (RFC 9110 section 15.2: a final one must follow): 500; 204 and
    304 go without a body or Content-Length (RFC 9110 sections 8.6, 15.3.5, 15.4.5)."""
    status = answer.status_hint
    if status < 200:
        return error_response(KrouteError(f"a step answered with interim status {status}"))
    headers = [(n, v) for n, v in answer.headers if n.lower() != b"content-length"]
    if status in (204, 304):
        return status, headers, b""
    body = answer.body or f"{status} {REASONS.get(status, 'Error')}\n".encode()
    if not any(n.lower() == b"content-type" for n, _ in headers):
        headers.append((b"Content-Type", b"text/plain; charset=utf-8"))
    headers.append((b"Content-Length", str(len(body)).encode()))
    return status, headers, body


def replay_safe(method: str, *, replayable: bool) -> bool:
    """Whether a request whose bytes may have reached an endpoint may be sent again without
    risking a double effect: an idempotent method (RFC 9110 section 9.2.2; methods are
    case-sensitive, section 9.1) and a body that can be sent again. What a retry elsewhere
    (`kroute.transport.retry_policy`) and a resend after a stale connection both ask."""
    return replayable and method in IDEMPOTENT


#: How many slices of its window a RetryBudget counts in.
_SLICES = 10


@attrs.define
class RetryBudget:
    """Retries may add at most `ratio` to the requests of the last `window` seconds (with a
    floor of `minimum` retries per window), as Finagle's and Envoy's retry budgets do: under an
    overload that fails everything, retries cannot multiply the load.

    Requests and retries are counted per tenth of the window, in a ring of ten counters: the
    same time and memory whatever the rate (a log of timestamps held 200,000 of them at 20,000
    requests/s), at the price of counts leaving the window up to a tenth of it late.
    """

    ratio: float = 0.2
    minimum: int = 10
    window: float = 10.0
    _slice: int = attrs.field(default=-(2**62), init=False)  # the newest slice counted
    _requests: list[int] = attrs.field(factory=lambda: [0] * _SLICES, init=False)
    _retries: list[int] = attrs.field(factory=lambda: [0] * _SLICES, init=False)

    def _at(self, now: float) -> int:
        """The counters' index for `now`, clearing the slices that left the window."""
        current = int(now * _SLICES / self.window)
        if current > self._slice:
            for passed in range(max(self._slice + 1, current - _SLICES + 1), current + 1):
                self._requests[passed % _SLICES] = self._retries[passed % _SLICES] = 0
            self._slice = current
        return self._slice % _SLICES  # (a clock that went back counts in the newest slice)

    def request(self, now: float) -> None:
        """A request was made (first attempts only)."""
        if int(now * _SLICES / self.window) == self._slice:  # (the usual case: no slice passed)
            self._requests[self._slice % _SLICES] += 1
        else:
            self._requests[self._at(now)] += 1

    def try_retry(self, now: float) -> bool:
        """Take one retry from the budget; False when it is spent."""
        index = self._at(now)
        allowed = max(self.minimum, int(sum(self._requests) * self.ratio))
        if sum(self._retries) >= allowed:
            return False
        self._retries[index] += 1
        return True


def first_value(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """The first value of header `name` (lower case), or None."""
    return next((v for n, v in headers if n.lower() == name), None)


def framing_conflict(headers: Sequence[tuple[bytes, bytes]]) -> str | None:
    """Why a response's framing is ambiguous (RFC 9112 section 6.3: Content-Length with
    Transfer-Encoding, or several different Content-Lengths), or None. Such a response is a
    502: passing it on would let the two sides disagree on where it ends (smuggling)."""
    lengths = {v.strip() for n, v in headers if n.lower() == b"content-length"}
    if lengths and any(n.lower() == b"transfer-encoding" for n, _ in headers):
        return "response has both Content-Length and Transfer-Encoding"
    if len(lengths) > 1:
        return "response has conflicting Content-Length values"
    return None

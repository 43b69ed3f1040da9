"""The HTTP/1.1 decisions every front and transport engine shares (sans I/O).

HttpServer, FastGateway (both its sides) and PooledTransport's two engines each parse with
llhttp and do their own I/O, but what a message head means is decided here, once: whether a
response has a body and how it ends (RFC 9112 section 6.3), which responses are interim, when a
request head is over a limit (414, 431) or names its host wrongly (400), and the short page
that refuses a request. Before this module each of them had its own copy, and they drifted.
"""

from __future__ import annotations

from collections.abc import Collection
from http import HTTPStatus

import attrs

from kroute.transport.proxy import REASONS

#: Statuses whose responses never carry a body (RFC 9112 section 6.3, rule 1).
NO_BODY_STATUSES = frozenset({204, 304})
#: Reason phrases by status: RFC 9110 section 15's (kroute's own wording where it answers).
REASON_BYTES = {s.value: s.phrase.encode() for s in HTTPStatus} | {
    status: reason.encode() for status, reason in REASONS.items()
}
#: Status lines, made once per status (`status_line`).
_STATUS_LINES: dict[int, bytes] = {}


def status_line(status: int) -> bytes:
    """The status line every front writes for `status`, with the standard reason phrase, not
    the one an endpoint sent: "a client SHOULD ignore the reason-phrase" (RFC 9110 section
    15), and an endpoint's own can carry anything (Traefik writes Go's standard text too)."""
    line = _STATUS_LINES.get(status)
    if line is None:
        line = b"HTTP/1.1 %d %b\r\n" % (status, REASON_BYTES.get(status, b"Status"))
        if len(_STATUS_LINES) < 1000:  # (three digits: bounded anyway)
            _STATUS_LINES[status] = line
    return line


@attrs.frozen
class ServerLimits:
    """What a front accepts from a client: the request line and head sizes, and how long it
    waits for a head, a body, an idle keep-alive connection and a write (seconds)."""

    max_request_line: int = 8 * 1024
    max_header_bytes: int = 32 * 1024
    max_headers: int = 100
    header_timeout: float = 10.0
    idle_timeout: float = 60.0
    body_timeout: float = 60.0
    write_timeout: float = 60.0

    def head_problem(self, url: int, header_bytes: int, headers: int) -> tuple[int, str] | None:
        """(status, reason) when a request head so far is over a limit, else None: the
        target's length, the header bytes (names and values, 4 more per line) and count."""
        if url > self.max_request_line:
            return 414, "request line too long"
        if header_bytes > self.max_header_bytes:
            return 431, "request headers too large"
        if headers > self.max_headers:
            return 431, "too many request headers"
        return None


def interim(status: int) -> bool:
    """A 1xx response other than 101: the final response follows (RFC 9110 section 15.2)."""
    return 100 <= status < 200 and status != 101


def bodiless(method: str | bytes, status: int) -> bool:
    """The response to `method` with `status` has no body, whatever its head says: HEAD,
    1xx, 204, 304 (RFC 9112 section 6.3, rule 1)."""
    return method in ("HEAD", b"HEAD") or status < 200 or status in NO_BODY_STATUSES


def close_delimited(names: Collection[bytes]) -> bool:
    """A body with neither Content-Length nor Transfer-Encoding ends with the connection (RFC
    9112 section 6.3, rule 8); `names` are the head's field names, lower case."""
    return b"content-length" not in names and b"transfer-encoding" not in names


def host_problem(hosts: list[bytes] | None, version: str) -> str | None:
    """Why a request's Host header fields make it a 400, or None. RFC 9112 section 3.2: an
    HTTP/1.1 request without Host, and any request with more than one, get a 400 (two Host
    fields are a classic way to make a proxy and a backend route one request differently)."""
    if not hosts:
        return "HTTP/1.1 request without a Host header" if version == "1.1" else None
    if len(hosts) > 1:
        return "more than one Host header"
    return None


def error_page(status: int, reason: str) -> bytes:
    """A whole short response that refuses a request and closes the connection."""
    phrase = REASON_BYTES.get(status, b"Error")
    body = f"{status} {phrase.decode()}: {reason}\n".encode()
    return (b"HTTP/1.1 %d %b\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%b") % (
                status, phrase, len(body), body)  # fmt: skip

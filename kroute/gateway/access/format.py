"""Access log lines from RequestEvents: which to keep and how they read (pure: event -> line).

Traefik's access log is what operators' dashboards and parsers already read, so the lines
follow it (https://doc.traefik.io/traefik/observability/access-logs/):

- JSON: one object per line with Traefik's field names (`FIELDS`); durations in nanoseconds as
  Traefik writes them; StartUTC in RFC 3339 with its fraction, `time` (the request's end) to
  the second, as Traefik's JSON formatter (logrus', RFC 3339) writes it; request headers as
  `request_<Name>` fields, kept, dropped or redacted by name (`HeaderModes`, Traefik's
  `fields.headers`: `defaultMode` and `names`, drop by default).
- Common Log Format, Traefik's variant: the CLF fields, then the Referer and User-Agent, the
  request count, the router name, the service URL and the duration in milliseconds.

Where kroute's values differ from Traefik's: ServiceName is the Service port kroute routes to
("namespace/name:port", where Traefik writes "namespace-name-port@kubernetes"); TLSCipher is
OpenSSL's name for the cipher; a request answered by kroute itself (404, a redirect, a step)
has no ServiceName, ServiceAddr or Origin* fields.

Filters (`LogFilters`, Traefik's `filters`): a line is kept when any filter set matches (status
code ranges, a retry happened, a minimum duration), every line when none is set.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii as _string
from typing import Literal

import attrs

from kroute.errors import ConfigError
from kroute.gateway.events import RequestEvent
from kroute.pipeline.filters import canonical_name

__all__ = ["FIELDS", "HeaderModes", "LogFilters", "LogFormat", "common_line", "json_line"]

HeaderMode = Literal["keep", "drop", "redact"]
MODES = ("keep", "drop", "redact")

#: The JSON fields of every line, in Traefik's names (request headers come after them).
FIELDS = (
    "ClientAddr", "ClientHost", "ClientPort", "DownstreamContentSize", "DownstreamStatus",
    "Duration", "OriginContentSize", "OriginDuration", "OriginStatus", "RequestAddr",
    "RequestHost", "RequestMethod", "RequestPath", "RequestPort", "RequestProtocol",
    "RequestScheme", "RetryAttempts", "RouterName", "ServiceAddr", "ServiceName", "ServiceURL",
    "StartUTC", "TLSCipher", "TLSVersion", "entryPointName", "kroute_outcome", "level", "msg",
    "time",
)  # fmt: skip

_RANGE = re.compile(r"^(\d{3})(?:-(\d{3}))?$")


@attrs.frozen
class LogFilters:
    """Which lines are kept (Traefik's `filters`): any that matches keeps a line; with none
    set, every line is kept. `status_codes` are ranges, inclusive (`parse_status_codes`)."""

    status_codes: tuple[tuple[int, int], ...] = ()
    retry_attempts: bool = False
    min_duration: float = 0.0  # seconds; kept when the request took longer

    #: No filter is set: every line is kept (read per request on the serving loop: found once).
    none: bool = attrs.field(init=False, eq=False)

    def __attrs_post_init__(self) -> None:
        none = not self.status_codes and not self.retry_attempts and not self.min_duration
        object.__setattr__(self, "none", none)

    def keeps(self, event: RequestEvent) -> bool:
        return self.admits(event.status, event.retries, event.seconds)

    def admits(self, status: int, retries: int, seconds: float) -> bool:
        """`keeps` for a request's status, retries and duration."""
        if self.none:
            return True
        if any(low <= status <= high for low, high in self.status_codes):
            return True
        if self.retry_attempts and retries:
            return True
        return bool(self.min_duration) and seconds > self.min_duration

    @staticmethod
    def parse_status_codes(texts: list[str] | tuple[str, ...]) -> tuple[tuple[int, int], ...]:
        """ "200", "300-302" (Traefik's `statusCodes`) -> ranges; ConfigError names a bad one."""
        ranges = []
        for text in texts:
            for part in text.split(","):
                found = _RANGE.match(part.strip())
                if found is None:
                    raise ConfigError(f"access log statusCodes: {part!r} is not a status code "
                                      f"or a range of them (200, 300-302)")  # fmt: skip
                low = int(found.group(1))
                high = int(found.group(2) or low)
                if high < low:
                    raise ConfigError(f"access log statusCodes: {part!r} ends before it starts")
                ranges.append((low, high))
        return tuple(ranges)


def _lowered(names: Mapping[str, HeaderMode]) -> dict[str, HeaderMode]:
    return {name.lower(): mode for name, mode in names.items()}


@attrs.frozen
class HeaderModes:
    """Request headers in JSON lines (Traefik's `fields.headers`): each name's mode, else
    `default`; "redact" writes the field with the value "REDACTED"."""

    default: HeaderMode = "drop"
    #: By lower-case name (names compare case-insensitively, RFC 9110 section 5.1).
    names: Mapping[str, HeaderMode] = attrs.field(factory=dict, converter=_lowered, hash=False)

    #: No header is written whatever the request carries (read for every line: found once).
    none: bool = attrs.field(init=False, eq=False)

    def __attrs_post_init__(self) -> None:
        for mode in (self.default, *self.names.values()):
            if mode not in MODES:
                raise ConfigError(f"access log header mode {mode!r}: use keep, drop or redact")
        none = self.default == "drop" and all(m == "drop" for m in self.names.values())
        object.__setattr__(self, "none", none)

    def mode(self, name: str) -> HeaderMode:
        return self.names.get(name.lower(), self.default)


@attrs.frozen
class LogFormat:
    """How the lines read: "json" or "common", the filters, and the request headers (JSON)."""

    format: Literal["json", "common"] = "json"
    filters: LogFilters = LogFilters()
    headers: HeaderModes = HeaderModes()

    def line(self, event: RequestEvent, count: int = 0) -> str:
        """The line of `event` (`count`: requests seen so far, for the common format)."""
        if self.format == "common":
            return common_line(event, count)
        return json_line(event, self.headers)


def _split_host(host: str) -> tuple[str, str]:
    """Host header -> (host, port), IPv6 literals kept whole."""
    if host.startswith("["):
        end = host.find("]")
        rest = host[end + 1 :]
        return host[: end + 1], rest[1:] if rest.startswith(":") else ""
    name, colon, port = host.rpartition(":")
    return (name, port) if colon and port.isdigit() else (host, "")


# What a busy gateway's lines repeat, made once: the JSON fields of a client (a connection's
# requests), of a Host header, of a route with its service and endpoint, of a connection's TLS
# and entry point. A cached call costs about a third of quoting the strings it stands for.


@functools.lru_cache(maxsize=4096)
def _client_fields(ip: str, port: int) -> str:
    """ClientAddr ("[::1]:80" for IPv6, as Go's RemoteAddr), ClientHost, ClientPort."""
    address = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
    return f'"ClientAddr":{_string(address)},"ClientHost":{_string(ip)},"ClientPort":"{port}"'


@functools.lru_cache(maxsize=1024)
def _host_fields(host_header: str) -> tuple[str, str]:
    """(RequestAddr and RequestHost, RequestPort) of a Host header."""
    host, port = _split_host(host_header)
    return (f'"RequestAddr":{_string(host_header)},"RequestHost":{_string(host)}',
            f'"RequestPort":{_string(port or "-")}')  # fmt: skip


@functools.lru_cache(maxsize=1024)
def _route_fields(route: str, endpoint: str, service: str) -> str:
    """RouterName, ServiceAddr, ServiceName, ServiceURL."""
    url = f"http://{endpoint}" if endpoint else ""
    return (f'"RouterName":{_string(route)},"ServiceAddr":{_string(endpoint)},'
            f'"ServiceName":{_string(service)},"ServiceURL":{_string(url)}')  # fmt: skip


@functools.lru_cache(maxsize=256)
def _connection_fields(tls_cipher: str, tls_version: str, entry_point: str) -> str:
    """TLSCipher, TLSVersion ("1.3", as Traefik), entryPointName."""
    return (f'"TLSCipher":{_string(tls_cipher)},'
            f'"TLSVersion":{_string(tls_version.removeprefix("TLSv"))},'
            f'"entryPointName":{_string(entry_point)}')  # fmt: skip


@functools.lru_cache(maxsize=64)
def _second(seconds: int) -> str:
    """Unix seconds -> "2006-01-02T15:04:05" (UTC): the same for every line of a second."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _rfc3339(started: float) -> str:
    """Unix time -> "2006-01-02T15:04:05.999999Z" (Go's RFC3339Nano, as Traefik writes
    StartUTC: the fraction's trailing zeros dropped; microseconds, a float's precision)."""
    micros = round(started * 1_000_000)
    fraction = f"{micros % 1_000_000:06d}"
    if fraction[-1] == "0":  # (one time in ten: the test first)
        fraction = fraction.rstrip("0")
        if not fraction:
            return f"{_second(micros // 1_000_000)}Z"
    return f"{_second(micros // 1_000_000)}.{fraction}Z"


def json_line(event: RequestEvent, headers: HeaderModes = HeaderModes()) -> str:
    """`event` as one JSON object on one line (no newline), Traefik's field names."""
    endpoint = event.endpoints[-1] if event.endpoints and event.origin_status else ""
    return json_text(
        event.client_ip, event.client_port, event.bytes_sent, event.status, event.seconds,
        event.origin_bytes, event.origin_seconds, event.origin_status, event.host, event.method,
        event.target, event.protocol, event.tls_version, event.retries, event.route, endpoint,
        event.service, event.started, event.tls_cipher, event.entry_point, event.outcome,
        header_fields(event.request_headers, headers),
    )  # fmt: skip


def header_fields(pairs: Iterable[tuple[bytes, bytes]], headers: HeaderModes) -> str:
    """The request headers `headers` keeps, as the JSON line's last fields (",name:value")."""
    if headers.none:
        return ""
    kept = []
    for raw_name, raw_value in pairs:
        name = raw_name.decode("latin-1")
        mode = headers.mode(name)
        if mode != "drop":
            value = "REDACTED" if mode == "redact" else raw_value.decode("latin-1")
            kept.append((f"request_{canonical_name(name)}", value))
    # (one field per name, the last value, as a JSON object's later key wins)
    return "".join(f",{_string(n)}:{_string(v)}" for n, v in dict(kept).items())


def json_text(
    client_ip: str, client_port: int, bytes_sent: int, status: int, seconds: float,
    origin_bytes: int, origin_seconds: float, origin_status: int, host_header: str, method: str,
    target: str, protocol: str, tls_version: str, retries: int, route: str, endpoint: str,
    service: str, started: float, tls_cipher: str, entry_point: str, outcome: str, extra: str,
) -> str:  # fmt: skip
    """The JSON line of a request's values (`json_line`'s, or a front's captured facts read
    without making their RequestEvent: `kroute.gateway.fast.record.json_line_of`);
    `endpoint` is the last one tried when an origin answered, `extra` the `header_fields`.

    `FIELDS` in order, strings quoted by `json`'s C encoder, in one f-string, not a dict for
    `json.dumps` (nor a `%` template, slower): the writer formats every line of a busy gateway
    on the core that serves (docs/benchmarks.md, the access log's cuts)."""
    string = _string
    host, port = _host_fields(host_header)
    return (
        f'{{{_client_fields(client_ip, client_port)},"DownstreamContentSize":{bytes_sent},'
        f'"DownstreamStatus":{status},"Duration":{round(seconds * 1e9)},'
        f'"OriginContentSize":{origin_bytes},"OriginDuration":{round(origin_seconds * 1e9)},'
        f'"OriginStatus":{origin_status},{host},"RequestMethod":{string(method)},'
        f'"RequestPath":{string(target)},{port},"RequestProtocol":{string(protocol)},'
        f'"RequestScheme":"{"https" if tls_version else "http"}","RetryAttempts":{retries},'
        f'{_route_fields(route, endpoint, service)},"StartUTC":"{_rfc3339(started)}",'
        f"{_connection_fields(tls_cipher, tls_version, entry_point)},"
        f'"kroute_outcome":"{outcome}","level":"info","msg":"",'
        f'"time":"{_second(int(started + seconds))}Z"{extra}}}'
    )


def _quoted(value: str) -> str:
    """A CLF field between quotes: quotes and control characters escaped (one line)."""
    return '"' + json.dumps(value, ensure_ascii=True)[1:-1] + '"'


def common_line(event: RequestEvent, count: int = 0) -> str:
    """`event` in Traefik's Common Log Format (no newline)."""
    named = {n.lower(): v for n, v in event.request_headers}

    def header(name: bytes) -> str:
        value = named.get(name)
        return "-" if value is None else value.decode("latin-1")

    endpoint = event.endpoints[-1] if event.endpoints and event.origin_status else ""
    when = datetime.fromtimestamp(event.started, UTC).strftime("%d/%b/%Y:%H:%M:%S +0000")
    request = f"{event.method} {event.target} {event.protocol}"
    service = f"http://{endpoint}" if endpoint else "-"
    return (
        f"{event.client_ip or '-'} - - [{when}] {_quoted(request)} {event.status} "
        f"{event.bytes_sent} {_quoted(header(b'referer'))} {_quoted(header(b'user-agent'))} "
        f"{count} {_quoted(event.route or '-')} {_quoted(service)} "
        f"{round(event.seconds * 1000)}ms"
    )

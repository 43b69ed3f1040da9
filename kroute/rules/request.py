"""The request as routing sees it, and the one normalisation every matcher relies on.

Routing must not be fooled by spelling: `/api/%2E%2E/admin`, `//admin` and `/api/../admin` all
name `/admin`, and a rule written for `/admin` must see them as such, and a rule for `/api` must
not. So the request path is normalised once, here, and rule paths are normalised by the same
function when they are compiled (docs/rules.md, "Path normalisation"):

1. The query (after `?`) and fragment (after `#`) are split off; an absolute-form target
   (`http://host/path`) keeps only its path, and its authority is the request's host
   (`RequestHead.build`: RFC 9112 section 3.2.2, as Go's net/http sets `req.Host`).
2. Percent-encodings are decoded, except those of reserved characters (RFC 3986 section 2.2:
   `:/?#[]@!$&'()*+,;=`) and of `%` itself, which keep their form with upper-case hex digits
   (section 6.2.2.1): `%20` is a space and `%7B` a `{`, but `%2F` is not a segment separator.
   This is what Traefik v3.7 routes on (`pkg/muxer/http/mux.go`, `withRoutingPath`: "the rule
   PathPrefix(`/foo bar`) will match the request path `/foo%20bar`"). Two departures, both
   stricter: control characters (`%00`-`%1F`, `%7F`) stay encoded, so that no log line or
   explanation gains a raw newline, and bytes that are not UTF-8 stay encoded (Go would route
   on the raw bytes). A `%` that starts no valid escape is encoded as `%25`, which keeps the
   normalisation idempotent.
3. Empty segments from repeated slashes are dropped (`//a///b` is `/a/b`); a trailing slash is
   kept.
4. Dot segments are removed (RFC 3986 section 5.2.4) after decoding, so `%2E%2E` counts as `..`.

A request path with a `%` that starts no valid escape (`/foo%zz`, `/%4`) is refused with
InvalidRequest (400) by `RequestHead.build`: Go's `url.ParseRequestURI` fails on it ("invalid URL
escape"), so Traefik never routes it (net/http answers 400 Bad Request).

Hosts are lower-cased, lose their port and one trailing dot (what nginx does; Traefik's Host
matcher accepts the trailing dot too), and an IPv6 literal loses its brackets (`[10::10]:80` is
`10::10`: Traefik v3.7's Host matcher matches `[10::10]` against `Host(`10::10`)`, as kroute
issue 18 reports from its muxer tests). HostRegexp alone sees the trailing dot
(`RequestHead.trailing_dot`): Traefik matches it against `types.CanonicalDomain(parseHost(...))`,
which lower-cases and drops the port but keeps the dot (`pkg/middlewares/requestdecorator`).
The method is kept as it arrived: methods are case-sensitive (RFC 9110 section 9.1), so `get` is
not `GET`; rules upper-case their own value (Traefik `Method`).
"""

from __future__ import annotations

import ipaddress
import string
from collections.abc import Iterable, Mapping, Sequence
from urllib.parse import parse_qsl

import attrs

from kroute.errors import InvalidRequest

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Percent-encodings kept as they are: RFC 3986 section 2.2's reserved characters and `%`
#: (Traefik v3.7 `reservedCharacters`), and, ours, the control characters.
_KEEP_ENCODED = frozenset(":/?#[]@!$&'()*+,;=%" + "".join(map(chr, range(0x20))) + "\x7f")
_HEX = frozenset(string.hexdigits)


def _flush(raw: bytearray, out: list[str]) -> None:
    """Append the decoded UTF-8 of `raw` (bytes >= 0x80) to `out`; a byte that is not part of
    a valid sequence stays encoded."""
    if not raw:
        return
    for ch in raw.decode("utf-8", "surrogateescape"):
        out.append(f"%{ord(ch) - 0xDC00:02X}" if "\udc80" <= ch <= "\udcff" else ch)
    raw.clear()


def _decode_percent(path: str) -> str:
    out: list[str] = []
    high = bytearray()  # a run of encoded non-ASCII bytes, decoded together as UTF-8
    i = 0
    n = len(path)
    while i < n:
        ch = path[i]
        if ch == "%" and i + 2 < n and path[i + 1] in _HEX and path[i + 2] in _HEX:
            byte = int(path[i + 1 : i + 3], 16)
            i += 3
            if byte >= 0x80:
                high.append(byte)
                continue
            _flush(high, out)
            decoded = chr(byte)
            out.append(f"%{byte:02X}" if decoded in _KEEP_ENCODED else decoded)
            continue
        _flush(high, out)
        # A stray "%" is encoded itself, or "%4%42" would become "%4B" here and "K" on a
        # second pass: normalisation must be idempotent (RFC 3986 section 2.4).
        out.append("%25" if ch == "%" else ch)
        i += 1
    _flush(high, out)
    return "".join(out)


def split_absolute(target: str) -> tuple[str, str] | None:
    """(authority, origin-form target) of an absolute-form request target, or None for any
    other form: `http://user@Host:80/p?q` -> (`Host:80`, `/p?q`). RFC 9112 section 3.2.2 (a
    server uses the target's host and ignores Host); RFC 3986 section 3.2.1 (userinfo is not
    part of the host)."""
    scheme, sep, rest = target.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        return None
    end = len(rest)
    for delimiter in "/?#":
        found = rest.find(delimiter, 0, end)
        if found != -1:
            end = found
    tail = rest[end:]
    return rest[:end].rpartition("@")[2], tail if tail.startswith("/") else "/" + tail


def _check_escapes(target: str, origin: str) -> None:
    """InvalidRequest naming `target` unless every `%` in the path of `origin` (its origin
    form) starts a `%XX` escape: Go's `url.ParseRequestURI` refuses anything else, so Traefik
    answers 400 (the query is not checked: Go parses it only when a matcher reads it, and
    skips what does not decode)."""
    path = origin.split("?", 1)[0]
    at = path.find("%")
    while at != -1:
        if at + 2 >= len(path) or path[at + 1] not in _HEX or path[at + 2] not in _HEX:
            raise InvalidRequest(
                f"request target {target!r}: invalid percent-escape {path[at : at + 3]!r}"
            )
        at = path.find("%", at + 3)


def normalize_path(raw: str) -> str:
    """The routing path of a request target or of a rule path (see the module docstring)."""
    absolute = split_absolute(raw)
    path = (raw if absolute is None else absolute[1]).split("#", 1)[0].split("?", 1)[0]
    if not path.startswith("/"):
        path = "/" + path
    if "%" not in path and "//" not in path and "/." not in path:
        return path
    if "%" in path:
        path = _decode_percent(path)
    segments = path.split("/")[1:]
    last = len(segments) - 1
    out: list[str] = []
    for i, seg in enumerate(segments):
        if seg == "." or seg == "..":
            if seg == ".." and out:
                out.pop()
            if i == last:
                out.append("")
        elif seg or i == last:
            out.append(seg)
    return "/" + "/".join(out)


def _canonical_host(raw: str) -> str:
    """A Host header value lower-cased, without its port or an IPv6 literal's brackets, the
    trailing dot kept: Traefik's `types.CanonicalDomain(parseHost(req.Host))`."""
    host = raw.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[1:end] if end != -1 else host
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host


def normalize_host(raw: str) -> str:
    """The routing host of a Host header value: lower case, no port, no trailing dot, and an
    IPv6 literal without its brackets (`[10::10]:8080` -> `10::10`)."""
    return _canonical_host(raw).removesuffix(".")


def _port_of(raw: str) -> int | None:
    """The port of a Host header value (`host:8080`, `[::1]:8443`), or None."""
    tail = raw.strip().rpartition("]")[2] if raw.strip().startswith("[") else raw.strip()
    if tail.count(":") != 1:
        return None
    port = tail.rpartition(":")[2]
    return int(port) if port.isascii() and port.isdigit() and len(port) <= 5 else None


HeaderInput = Mapping[str, str | Sequence[str]] | Iterable[tuple[str, str]]


def _collect_headers(headers: HeaderInput | None) -> dict[str, tuple[str, ...]]:
    merged: dict[str, list[str]] = {}
    if headers is None:
        return {}
    items: Iterable[tuple[str, str | Sequence[str]]] = (
        headers.items() if isinstance(headers, Mapping) else headers
    )
    for name, value in items:
        values = [value] if isinstance(value, str) else list(value)
        merged.setdefault(name.lower(), []).extend(values)
    return {name: tuple(values) for name, values in merged.items()}


@attrs.frozen
class RequestHead:
    """What routing decides on: method, normalised host and path, query, headers, client IP.

    Build one with `RequestHead.build(...)`, which normalises; the constructor takes values as
    they are, for code that has normalised them already. Header names are lower case; every
    header and query parameter keeps all its values in order.
    """

    method: str
    host: str
    path: str
    query: Mapping[str, tuple[str, ...]] = attrs.field(factory=dict)
    headers: Mapping[str, tuple[str, ...]] = attrs.field(factory=dict)
    client_ip: IPAddress | None = None
    #: How the request arrived ("http" or "https") and the Host header's port, if any: what a
    #: redirect needs.
    scheme: str = "http"
    port: int | None = None
    #: The query as it arrived (without `?`), for redirects that keep it.
    query_string: str = ""
    #: The host arrived with a trailing dot (`example.com.`), which `host` has lost: only
    #: HostRegexp sees it (module docstring).
    trailing_dot: bool = False
    #: Element-wise prefixes of the path, as rule stems: "/a/b/" -> ("", "/a", "/a/b").
    stems: tuple[str, ...] = attrs.field(init=False)

    @stems.default
    def _stems(self) -> tuple[str, ...]:
        return path_stems(self.path)

    @classmethod
    def build(
        cls,
        method: str = "GET",
        host: str = "",
        target: str = "/",
        *,
        headers: HeaderInput | None = None,
        client_ip: str | IPAddress | None = None,
        scheme: str = "http",
    ) -> RequestHead:
        """A normalised request head from raw values as they arrive on the wire.

        An absolute-form `target` (`http://host/path`) names the host: `host` is then ignored
        (RFC 9112 section 3.2.2), unless the target's authority is empty. Raises InvalidRequest
        for a target with an invalid percent-escape in its path and for a client address that
        is not an IP address.
        """
        origin = target
        absolute = split_absolute(target)
        if absolute is not None and absolute[0]:
            host, origin = absolute
        _check_escapes(target, origin)
        canonical = _canonical_host(host)
        query_text = origin.split("#", 1)[0].partition("?")[2]
        query: dict[str, list[str]] = {}
        if query_text:
            for key, value in parse_qsl(query_text, keep_blank_values=True):
                query.setdefault(key, []).append(value)
        ip: IPAddress | None
        if client_ip is None or isinstance(client_ip, IPAddress):
            ip = client_ip
        else:
            try:
                ip = ipaddress.ip_address(client_ip.strip("[]"))
            except ValueError:
                raise InvalidRequest(f"client_ip {client_ip!r} is not an IP address") from None
        return cls(
            method=method,
            host=canonical.removesuffix("."),
            path=normalize_path(origin),
            query={key: tuple(values) for key, values in query.items()},
            headers=_collect_headers(headers),
            client_ip=ip,
            scheme=scheme,
            port=_port_of(host),
            query_string=query_text,
            trailing_dot=canonical.endswith("."),
        )

    def describe(self) -> str:
        """`GET host/path?query (from 10.0.0.1, x-env: prod)` as people write it."""
        query = "&".join(f"{k}={v}" for k, vs in self.query.items() for v in vs)
        text = f"{self.method} {self.host or '(no host)'}{self.path}{'?' + query if query else ''}"
        extras = [f"from {self.client_ip}"] if self.client_ip is not None else []
        extras += [f"{name}: {value}" for name, vs in self.headers.items() for value in vs]
        return f"{text} ({', '.join(extras)})" if extras else text


def path_stems(path: str) -> tuple[str, ...]:
    """The element-wise prefixes of a path, as rule stems (PathPrefix without its trailing
    slash): "/a/b/" -> ("", "/a", "/a/b"), "/a/b" -> ("", "/a", "/a/b"), "/" -> ("",)."""
    stems = [""]
    slash = path.find("/", 1)
    while slash != -1:
        stems.append(path[:slash])
        slash = path.find("/", slash + 1)
    if len(path) > 1 and not path.endswith("/"):
        stems.append(path)
    return tuple(stems)

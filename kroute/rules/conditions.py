"""Conditions a request must meet, and the boolean algebra that combines them.

Every condition is a frozen value with `matches(request)` and `describe()`. A route is a
conjunction of conditions; Traefik's `||` and `!` are brought into that shape by `to_dnf`, so that
the table can index host and path conditions wherever they occur (docs/rules.md).

Semantics shared by all families (docs/rules.md, "Matching"):
- hosts are compared after normalisation (lower case, no port, no trailing dot);
- header names are case-insensitive; a header or query condition holds when any one of the
  values the request carries for that name satisfies it;
- regular expressions run on RE2 (`kroute.rules.regex`: linear time, Go's syntax);
  `full=True` anchors at both ends (Gateway API, as Envoy does), `full=False` searches
  anywhere (Traefik, as Go's `MatchString` does).
"""

from __future__ import annotations

import ipaddress
from typing import Protocol

import attrs

from kroute.rules.regex import Regex
from kroute.rules.request import RequestHead


class Condition(Protocol):
    """Something a request satisfies or not."""

    def matches(self, request: RequestHead) -> bool: ...

    def describe(self) -> str: ...


@attrs.frozen
class HostIs:
    """The normalised host equals `host` (already lower case)."""

    host: str

    def matches(self, request: RequestHead) -> bool:
        return request.host == self.host

    def describe(self) -> str:
        return f"host {self.host}"


@attrs.frozen
class HostAny:
    """Every request, with a Host header or without: Traefik v3.7's catch-all `Host(`*`)`.

    The index files it like a route without a host condition (`RouteTable`)."""

    def matches(self, request: RequestHead) -> bool:
        return True

    def describe(self) -> str:
        return "any host (Host(`*`))"


@attrs.frozen
class HostWildcard:
    """The host ends in `.suffix`, with exactly one more label (Ingress) or any number (Gateway).

    Ingress: `*.foo.com` matches `bar.foo.com` only (Kubernetes Ingress, "Hostname wildcards").
    Gateway API: `*.foo.com` matches `bar.foo.com` and `baz.bar.foo.com` (HTTPRoute hostnames).
    Traefik v3.7 `Host(`*.foo.com`)`: one label; `Host(`**.foo.com`)`: any depth.
    """

    suffix: str
    any_depth: bool

    def matches(self, request: RequestHead) -> bool:
        host = request.host
        if not host.endswith("." + self.suffix):
            return False
        head = host[: -len(self.suffix) - 1]
        return bool(head) and (self.any_depth or "." not in head)

    def describe(self) -> str:
        return f"host *.{self.suffix}" + (" (any depth)" if self.any_depth else " (one label)")


@attrs.frozen
class HostRegex:
    """The host matches a regular expression (Traefik HostRegexp): the normalised host with
    its trailing dot, if it came with one, as Traefik v3.7 matches the canonical host
    (`pkg/muxer/http/matcher.go` hostRegexp; `kroute.rules.request`)."""

    pattern: Regex
    full: bool = False

    def matches(self, request: RequestHead) -> bool:
        host = request.host + "." if request.trailing_dot else request.host
        return _regex_ok(self.pattern, self.full, host)

    def describe(self) -> str:
        return f"host ~ {self.pattern.pattern}"


@attrs.frozen
class PathIs:
    """The normalised path equals `path` exactly, case-sensitively."""

    path: str

    def matches(self, request: RequestHead) -> bool:
        return request.path == self.path

    def describe(self) -> str:
        return f"path = {self.path}"


@attrs.frozen
class PathPrefix:
    """Element-wise prefix: `/foo` matches `/foo`, `/foo/` and `/foo/bar`, never `/foobar`.

    Kubernetes Ingress pathType Prefix and Gateway API PathPrefix. `stem` is the rule path
    without its trailing slash ("" for `/`, which matches every path).
    """

    stem: str

    def matches(self, request: RequestHead) -> bool:
        path = request.path
        return path == self.stem or path.startswith(self.stem + "/")

    def describe(self) -> str:
        return f"path prefix {self.stem or '/'} (element-wise)"


@attrs.frozen
class PathStartsWith:
    """Character-wise prefix: `/foo` matches `/foobar` too (Traefik PathPrefix)."""

    prefix: str

    def matches(self, request: RequestHead) -> bool:
        return request.path.startswith(self.prefix)

    def describe(self) -> str:
        return f"path starts with {self.prefix}"


@attrs.frozen
class PathRegex:
    """The normalised path matches a regular expression."""

    pattern: Regex
    full: bool

    def matches(self, request: RequestHead) -> bool:
        return _regex_ok(self.pattern, self.full, request.path)

    def describe(self) -> str:
        return f"path ~ {self.pattern.pattern}"


@attrs.frozen
class MethodIs:
    """The request method is `method` (upper case)."""

    method: str

    def matches(self, request: RequestHead) -> bool:
        return request.method == self.method

    def describe(self) -> str:
        return f"method {self.method}"


@attrs.frozen
class HeaderIs:
    """A value of header `name` (lower case) equals `value` exactly."""

    name: str
    value: str

    def matches(self, request: RequestHead) -> bool:
        return self.value in request.headers.get(self.name, ())

    def describe(self) -> str:
        return f"header {self.name} = {self.value!r}"


@attrs.frozen
class HeaderRegex:
    """A value of header `name` (lower case) matches a regular expression."""

    name: str
    pattern: Regex
    full: bool

    def matches(self, request: RequestHead) -> bool:
        return any(
            _regex_ok(self.pattern, self.full, v) for v in request.headers.get(self.name, ())
        )

    def describe(self) -> str:
        return f"header {self.name} ~ {self.pattern.pattern}"


@attrs.frozen
class QueryIs:
    """A value of query parameter `name` equals `value` exactly (names are case-sensitive)."""

    name: str
    value: str

    def matches(self, request: RequestHead) -> bool:
        return self.value in request.query.get(self.name, ())

    def describe(self) -> str:
        return f"query {self.name} = {self.value!r}"


@attrs.frozen
class QueryRegex:
    """A value of query parameter `name` matches a regular expression."""

    name: str
    pattern: Regex
    full: bool

    def matches(self, request: RequestHead) -> bool:
        return any(_regex_ok(self.pattern, self.full, v) for v in request.query.get(self.name, ()))

    def describe(self) -> str:
        return f"query {self.name} ~ {self.pattern.pattern}"


@attrs.frozen
class ClientIPIn:
    """The client address lies in one of `networks` (a single address is a /32 or /128)."""

    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]

    def matches(self, request: RequestHead) -> bool:
        ip = request.client_ip
        if ip is None:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self.networks)

    def describe(self) -> str:
        return "client IP in " + ", ".join(str(n) for n in self.networks)


@attrs.frozen
class Not:
    """The inner condition does not hold."""

    inner: Condition

    def matches(self, request: RequestHead) -> bool:
        return not self.inner.matches(request)

    def describe(self) -> str:
        return f"not ({self.inner.describe()})"


@attrs.frozen
class AllOf:
    """Every part holds."""

    parts: tuple[Condition, ...]

    def matches(self, request: RequestHead) -> bool:
        return all(c.matches(request) for c in self.parts)

    def describe(self) -> str:
        return "(" + " and ".join(c.describe() for c in self.parts) + ")"


@attrs.frozen
class AnyOf:
    """At least one part holds."""

    parts: tuple[Condition, ...]

    def matches(self, request: RequestHead) -> bool:
        return any(c.matches(request) for c in self.parts)

    def describe(self) -> str:
        return "(" + " or ".join(c.describe() for c in self.parts) + ")"


#: Conditions decided by the method, the Host header and the request target (path, query).
_TARGET_ONLY = (HostAny, HostIs, HostWildcard, HostRegex, PathIs, PathPrefix, PathStartsWith,
                PathRegex, MethodIs, QueryIs, QueryRegex)  # fmt: skip


def target_only(condition: Condition) -> bool:
    """Whether `condition` is decided by the method, Host and request target alone: no other
    header, no client address. Unknown conditions count as reading everything."""
    if isinstance(condition, _TARGET_ONLY):
        return True
    if isinstance(condition, Not):
        return target_only(condition.inner)
    if isinstance(condition, AllOf | AnyOf):
        return all(target_only(part) for part in condition.parts)
    return False


def _regex_ok(pattern: Regex, full: bool, value: str) -> bool:
    return pattern.fullmatch(value) if full else pattern.search(value)


Conjunction = tuple[Condition, ...]

#: Past this many alternatives a rule is kept whole as one unindexed condition: an expression
#: like (a||b)&&(c||d)&&... would otherwise multiply out exponentially.
MAX_ALTERNATIVES = 64


def to_dnf(condition: Condition, *, limit: int = MAX_ALTERNATIVES) -> list[Conjunction]:
    """Alternatives (an OR of ANDs) equivalent to `condition`.

    Negations are pushed down to single conditions with De Morgan's laws. When the expansion
    would exceed `limit` alternatives, the condition comes back whole, as the only alternative.
    """
    try:
        return _dnf(condition, negate=False, limit=limit)
    except _TooLarge:
        return [(condition,)]


class _TooLarge(Exception):
    pass


def _dnf(cond: Condition, *, negate: bool, limit: int) -> list[Conjunction]:
    if isinstance(cond, Not):
        return _dnf(cond.inner, negate=not negate, limit=limit)
    if isinstance(cond, AllOf | AnyOf):
        conjunctive = isinstance(cond, AllOf) != negate
        parts = [_dnf(p, negate=negate, limit=limit) for p in cond.parts]
        if not conjunctive:
            out = [alt for part in parts for alt in part]
        else:
            out = [()]
            for part in parts:
                out = [a + b for a in out for b in part]
                if len(out) > limit:
                    raise _TooLarge
        if len(out) > limit:
            raise _TooLarge
        return out
    return [(Not(cond),)] if negate else [(cond,)]

"""Hostnames in Ingress rules and Gateway API listeners and routes: validation and intersection.

Both specs allow an RFC 1123 DNS name, optionally with `*.` as its whole first label. They differ
in what the wildcard covers: one label for Ingress, one or more for Gateway API (see
`HostWildcard`). Gateway API listeners and routes narrow each other ("hostname intersection",
HTTPRoute spec `Hostnames`).
"""

from __future__ import annotations

import re

from kroute.objects import FieldError
from kroute.rules.conditions import HostIs, HostWildcard

_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS = re.compile(rf"{_LABEL}(\.{_LABEL})*")


def check_hostname(value: str, field: str) -> str:
    """The lower-cased hostname, or a FieldError saying why it is not one."""
    host = value.lower()
    bare = host[2:] if host.startswith("*.") else host
    if len(host) > 253 or _DNS.fullmatch(bare) is None:
        raise FieldError(field, f"{value!r} is not a DNS name (optionally with a leading '*.')")
    if any(len(label) > 63 for label in bare.split(".")):
        raise FieldError(field, f"{value!r} has a label longer than 63 characters")
    return host


def host_condition(host: str, *, any_depth: bool) -> HostIs | HostWildcard:
    """The condition for a checked hostname."""
    if host.startswith("*."):
        return HostWildcard(host[2:], any_depth=any_depth)
    return HostIs(host)


def covers(pattern: str, host: str) -> bool:
    """Gateway API: whether `pattern` (exact or `*.suffix`) admits every name `host` admits.

    `*.example.com` covers `foo.example.com`, `*.foo.example.com` and itself; an exact name
    covers only itself.
    """
    if pattern == host:
        return True
    if not pattern.startswith("*."):
        return False
    suffix = pattern[1:]  # ".example.com"
    bare = host[2:] if host.startswith("*.") else host
    return bare.endswith(suffix) and len(bare) > len(suffix)


def intersect(listener: str | None, route: str | None) -> tuple[bool, str | None]:
    """Whether a route hostname survives a listener's, and the hostname served (None = any).

    HTTPRoute spec, Hostnames: a route hostname survives if it equals the listener's, or one of
    them is a wildcard that covers the other; the narrower of the two is what is served.
    """
    if listener is None:
        return True, route
    if route is None:
        return True, listener
    if covers(listener, route):
        return True, route
    if covers(route, listener):
        return True, listener
    return False, None

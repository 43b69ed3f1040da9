"""The built-in steps: header edits, URL rewrites, refusals and users' own functions.

Each is a frozen value built at compile time (`kroute.rules.gateway` builds them from HTTPRoute
filters; `kroute.rules.traefik` and `kroute.rules.ingress` build `Refuse` for what kroute does
not implement). Gateway API references are to the v1.6 standard channel (HTTPRouteFilter).
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from kroute.pipeline.paths import replace_prefix, wire_path
from kroute.pipeline.steps import Answer, Header, Step, UpstreamRequest

#: What a client sees when a route fails closed: no object names, no reasons (those are in
#: explain, the admin API and the logs).
REFUSED_BODY = b"500 Internal Server Error: this route cannot be served as configured\n"


@attrs.frozen
class HeaderEdits:
    """HTTPHeaderFilter: `set` replaces, `add` appends to the existing value (comma-joined, as
    the spec's example shows: `my-header: foo` + add `bar,baz` -> `my-header: foo,bar,baz`),
    `remove` drops the field; names compare case-insensitively."""

    set: tuple[Header, ...] = ()
    add: tuple[Header, ...] = ()
    remove: tuple[bytes, ...] = ()

    def apply(self, request: UpstreamRequest) -> None:
        for name, value in self.set:
            request.set(name, value)
        for name, value in self.add:
            lower = name.lower()
            values = [v for n, v in request.headers if n.lower() == lower]
            if values and lower != b"set-cookie":  # (Set-Cookie is never combined: RFC 6265)
                request.set(name, b",".join([*values, value]))
            else:
                request.headers.append((name, value))
        for name in self.remove:
            request.remove(name)

    def describe(self) -> str:
        parts = [f"set {n.decode()}: {v.decode()}" for n, v in self.set]
        parts += [f"add {n.decode()}: {v.decode()}" for n, v in self.add]
        parts += [f"remove {n.decode()}" for n in self.remove]
        return ", ".join(parts)


@attrs.frozen
class RequestHeaderModifier(Step):
    edits: HeaderEdits = attrs.field(kw_only=True)

    def request(self, request: UpstreamRequest) -> Answer | None:
        self.edits.apply(request)
        return None


@attrs.frozen
class ResponseHeaderModifier(Step):
    on_request = False
    on_response = True
    edits: HeaderEdits = attrs.field(kw_only=True)

    def response(self, status: int, headers: list[Header], request: UpstreamRequest) -> None:
        view = UpstreamRequest("", "", None, headers)  # the same edits, on the response's fields
        self.edits.apply(view)


@attrs.frozen
class URLRewrite(Step):
    """HTTPURLRewriteFilter: the Host the backend sees, and its path (`full_path` for
    ReplaceFullPath; `prefix` = (the match's path prefix, its replacement) for
    ReplacePrefixMatch), from the path as routed (`kroute.pipeline.paths`). The query is kept."""

    hostname: str | None = attrs.field(default=None, kw_only=True)
    full_path: str | None = attrs.field(default=None, kw_only=True)
    prefix: tuple[str, str] | None = attrs.field(default=None, kw_only=True)

    def request(self, request: UpstreamRequest) -> Answer | None:
        if self.hostname is not None:
            request.set(b"Host", self.hostname.encode("ascii"))
        if self.full_path is not None:
            request.routed = self.full_path
        elif self.prefix is not None:
            request.routed = replace_prefix(request.routed, *self.prefix)
        else:
            return None
        request.path = wire_path(request.routed)
        return None


@attrs.frozen
class Refuse(Step):
    """Fail closed: answer `status` (500) instead of forwarding, because the route says
    something kroute cannot do (`reason` names it; the client is not told)."""

    status: int = attrs.field(default=500, kw_only=True)
    reason: str = attrs.field(kw_only=True)

    def request(self, request: UpstreamRequest) -> Answer | None:
        return Answer(self.status, self.reason, body=REFUSED_BODY)


@attrs.frozen
class Function(Step):
    """A user's synchronous step (`kroute.pipeline.registry`): it edits the request in place
    and returns None, or returns the Answer to give instead."""

    name: str = attrs.field(kw_only=True)
    function: Callable[[UpstreamRequest], Answer | None] = attrs.field(kw_only=True, eq=False)

    @property
    def label(self) -> str:
        return f"Filter {self.name} ({self.field})"

    def request(self, request: UpstreamRequest) -> Answer | None:
        return self.function(request)

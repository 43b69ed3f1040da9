"""The built-in steps: header edits, URL rewrites, refusals and users' own functions.

Each is a frozen value built at compile time (`kroute.rules.gateway` builds them from HTTPRoute
filters; `kroute.rules.traefik` and `kroute.rules.ingress` build `Refuse` for what kroute does
not implement). Gateway API references are to the v1.6 standard channel (HTTPRouteFilter).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import attrs

from kroute.objects import BackendRef, FieldError
from kroute.pipeline.cors import TOKEN
from kroute.pipeline.patch import Edit, fold
from kroute.pipeline.paths import replace_prefix, wire_path
from kroute.pipeline.request import HOP_BY_HOP
from kroute.pipeline.steps import Answer, Header, Step, UpstreamRequest

#: What a header value must not contain (CR, LF, NUL); a name is a token (HTTPHeaderName).
_BAD_VALUE = re.compile(r"[\r\n\x00]")
#: What a client sees when a route fails closed: no object names, no reasons (those are in
#: explain, the admin API and the logs).
_NOT_EDITABLE = HOP_BY_HOP | {b"content-length"}
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

    @property
    def names(self) -> frozenset[bytes]:
        """The header names these edits touch, lower case."""
        return frozenset(n.lower() for n, _ in (*self.set, *self.add)) | {
            n.lower() for n in self.remove
        }


def header_name(name: str, field: str) -> bytes:
    """A header name (a token, RFC 9110 section 5.1) as bytes; FieldError otherwise."""
    if not TOKEN.fullmatch(name):
        raise FieldError(field, f"{name!r} is not a valid header name")
    return name.encode("ascii")


def edited_name(name: str, field: str) -> bytes:
    """A header name a step sets or adds: a token that neither frames the message
    (Content-Length, Transfer-Encoding: RFC 9112 section 6) nor belongs to one connection
    (RFC 9110 section 7.6.1). Every front writes those itself, so a step's copy would frame the
    message twice; Traefik, on Go's net/http, drops such a setting without a word."""
    encoded = header_name(name, field)
    if encoded.lower() in _NOT_EDITABLE:
        raise FieldError(field, f"{name} frames the message or belongs to one connection: the "
                         "gateway writes it itself, a step cannot set it")  # fmt: skip
    return encoded


def canonical_name(name: str) -> str:
    """Go's `http.CanonicalHeaderKey`: `x-auth-user` -> `X-Auth-User` (what Traefik matches
    forwardAuth's `authResponseHeadersRegex` against, and names access log fields with); a
    name that is not a token stays as it is."""
    if not TOKEN.fullmatch(name):
        return name
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def header_value(value: str, field: str) -> bytes:
    """A header value without CR, LF or NUL (RFC 9110 section 5.5), as bytes."""
    if _BAD_VALUE.search(value):
        raise FieldError(field, "a header value must not contain CR, LF or NUL")
    return value.encode("utf-8")


@attrs.frozen
class RequestHeaderModifier(Step):
    declarative = True
    edits: HeaderEdits = attrs.field(kw_only=True)

    @property
    def touches(self) -> frozenset[bytes]:
        return self.edits.names

    def request(self, request: UpstreamRequest) -> Answer | None:
        self.edits.apply(request)
        return None


@attrs.frozen
class ResponseHeaderModifier(Step):
    on_request = False
    on_response = True
    edits: HeaderEdits = attrs.field(kw_only=True)

    def response_edits(self, scheme: str) -> tuple[Edit, ...] | None:
        """Sets and removals are the same on every response (`kroute.pipeline.patch`); an
        `add` joins the response's own value, so a step with one edits each response."""
        if self.edits.add:
            return None
        return (*self.edits.set, *((name, None) for name in self.edits.remove))

    def response(self, status: int, headers: list[Header], request: UpstreamRequest) -> None:
        edits = self.response_edits(request.scheme)
        if edits is not None:
            fold(edits).apply(headers)
            return
        view = UpstreamRequest("", "", None, headers)  # the same edits, on the response's fields
        self.edits.apply(view)


@attrs.frozen
class URLRewrite(Step):
    """HTTPURLRewriteFilter: the Host the backend sees, and its path (`full_path` for
    ReplaceFullPath; `prefix` = (the match's path prefix, its replacement) for
    ReplacePrefixMatch), from the path as routed (`kroute.pipeline.paths`). The query is kept."""

    declarative = True

    hostname: str | None = attrs.field(default=None, kw_only=True)
    full_path: str | None = attrs.field(default=None, kw_only=True)
    prefix: tuple[str, str] | None = attrs.field(default=None, kw_only=True)

    @property
    def touches(self) -> frozenset[bytes]:
        return frozenset({b"host"} if self.hostname is not None else ())

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

    @property
    def touches(self) -> frozenset[bytes]:
        return frozenset()

    def request(self, request: UpstreamRequest) -> Answer | None:
        return Answer(self.status, self.reason, body=REFUSED_BODY)


@attrs.frozen
class Share:
    """The share of requests a RequestMirror copies, `numerator` / `denominator`
    (HTTPRequestMirrorFilter: `percent` p is p/100, `fraction` is as given, neither is all)."""

    numerator: int = 1
    denominator: int = 1

    def takes(self, draw: float) -> bool:
        """Whether a request is copied, given its random `draw` (uniform in [0, 1)); the draw
        is passed in, so this is pure: the Router draws from its seeded `rng`."""
        return self.numerator >= self.denominator or draw * self.denominator < self.numerator

    def __str__(self) -> str:
        if self.denominator == 100:
            return f"{self.numerator}%"
        return f"{self.numerator}/{self.denominator}"


@attrs.frozen
class MirrorCopy:
    """A request as a RequestMirror step saw it (the steps before it applied), to send to
    `step.backend` if `step.share` takes it (`UpstreamRequest.mirrors`)."""

    step: Mirror
    method: str
    target: str
    headers: tuple[Header, ...]
    #: The request's body, when the step copies bodies (`Mirror.body_limit`) and it had one.
    body: bytes = b""


@attrs.frozen
class Mirror(Step):
    """HTTPRequestMirrorFilter: a copy of the request, as the steps before this one left it,
    goes to `backend` (fire and forget: its response is discarded and it never delays or fails
    the request). The step only records the copy; the front hands the copies to the Router
    (`Router.mirror`), which draws the share and queues them. A `backend` with an `error`
    (RefNotPermitted, InvalidKind) is not configured: the spec says such a backendRef "must be
    dropped", so nothing is copied (and the compile notes say why)."""

    backend: BackendRef = attrs.field(kw_only=True)
    share: Share = attrs.field(default=Share(), kw_only=True)
    #: Backends a copy is spread over by their weights (a TraefikService mirror target, its
    #: Services by their share); empty: every copy goes to `backend`.
    spread: tuple[BackendRef, ...] = attrs.field(default=(), kw_only=True)
    #: The largest request body a copy carries (Traefik's mirroring `maxBodySize`); a request
    #: with a larger body, or any body when 0 (HTTPRoute's RequestMirror), is not copied.
    body_limit: int = attrs.field(default=0, kw_only=True)

    @property
    def backends(self) -> tuple[BackendRef, ...]:
        return self.spread or (self.backend,)

    def target(self, draw: float) -> BackendRef:
        """Where one copy goes, given a random `draw` uniform in [0, 1) (pure: the Router
        draws)."""
        if not self.spread:
            return self.backend
        point = draw * sum(b.weight for b in self.spread)
        for backend in self.spread:
            if point < backend.weight:
                return backend
            point -= backend.weight
        return self.spread[-1]

    @property
    def label(self) -> str:
        return f"RequestMirror to {self.backend} ({self.share}, {self.field})"

    def request(self, request: UpstreamRequest) -> Answer | None:
        if self.backend.error is None and self.share.numerator:
            copy = MirrorCopy(self, request.method, request.target, tuple(request.headers))
            request.mirrors += (copy,)
        return None


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

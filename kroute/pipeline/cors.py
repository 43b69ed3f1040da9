"""The HTTPRoute CORS filter (Gateway API v1.6 HTTPCORSFilter, GEP-1767) as one step.

A browser sends `Origin` with a cross-origin request, and before one that is not "simple" it
asks first: a CORS-preflight request, OPTIONS with `Origin` and `Access-Control-Request-Method`
(Fetch standard, 3.2.2 "HTTP requests"). The step answers a preflight itself, 200 and never
forwarded: with the allow headers when the origin is allowed, without them otherwise (the
spec's "returns 204/200 response but doesn't set the relevant cross-origin response headers";
the browser then refuses the actual request). On the response to an actual request from an
allowed origin it adds Access-Control-Allow-Origin, -Credentials and -Expose-Headers.

The filter owns the CORS response headers of its route: what a backend sent of them is removed
first, so a response carries Access-Control-Allow-Origin only for an origin the route allows,
whatever the backend does. `Vary: Origin` goes on every response, since what it carries depends
on the request's Origin (Fetch 3.2.5 "CORS protocol and HTTP caches").

Credentials (Fetch 3.2.3 "HTTP responses", and the spec on each field): when
`allowCredentials` is true, `*` is not a wildcard to a browser in any of the allow or expose
headers, so the step never sends it then: the Origin, the requested method and the requested
header names are echoed instead, and `exposeHeaders: ["*"]` becomes the response's own field
names. Without credentials the origin `*` is sent as `*`; methods and headers of `*` are
echoed all the same, because `*` never covers `Authorization` (Fetch, CORS non-wildcard
request-header name) and an echo is valid in both modes.
"""

from __future__ import annotations

import re
from typing import Any, Protocol

import attrs

from kroute.objects import FieldError, as_int, as_list, as_map, req_str
from kroute.pipeline.steps import Answer, Header, Step, UpstreamRequest

#: RFC 9110 section 5.6.2 token: what a method or a field name is made of.
TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`|~]+")
#: A serialised origin, lowercased (RFC 6454 section 6.1): scheme "://" host [":" port], the
#: host a DNS name or an IP literal; in allowOrigins, `*` may start the host (the 2nd group).
_ORIGIN = re.compile(r"(https?)://(\*?)([a-z0-9._\-]*|\[[0-9a-f:.]+\])(?::([0-9]{1,5}))?")
_PORTS = {"http": 80, "https": 443}
#: HTTPMethodWithWildcard (the enum of the spec's type).
_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "*")
#: The response fields the filter owns (Fetch 3.2.3).
_OWNED = frozenset({
    b"access-control-allow-origin", b"access-control-allow-credentials",
    b"access-control-allow-methods", b"access-control-allow-headers",
    b"access-control-expose-headers", b"access-control-max-age",
})  # fmt: skip
_VARY = (b"Vary", b"Origin")

Origin = tuple[str, int, str]  # (scheme, port, host)


def parse_origin(text: str) -> Origin | None:
    """An Origin field's value as (scheme, port, host), the port made explicit (the spec: "if
    not included, port 80 is assumed for http ... and port 443 for https"); None when it is
    not an http(s) origin (`null`, a path, garbage)."""
    found = _ORIGIN.fullmatch(text.lower())
    if found is None or found.group(2) or not found.group(3):
        return None
    scheme, _, host, port = found.groups()
    number = _PORTS[scheme] if port is None else int(port)
    return (scheme, number, host) if 0 < number < 65536 else None


@attrs.frozen
class OriginPattern:
    """One allowOrigins entry. With `wildcard`, `host` is what follows the `*` and at least one
    character must precede it: the spec's `*` "is a greedy match to the left, including any
    number of DNS labels", so `https://*.example.com` allows `https://a.b.example.com` but not
    `https://example.com`, and `https://*` any host."""

    scheme: str
    port: int
    host: str
    wildcard: bool = False

    def matches(self, origin: Origin) -> bool:
        scheme, port, host = origin
        if scheme != self.scheme or port != self.port:
            return False
        if not self.wildcard:
            return host == self.host
        return len(host) > len(self.host) and host.endswith(self.host)


class OriginMatcher(Protocol):
    """A regular expression an Origin may match (Traefik's accessControlAllowOriginListRegex;
    `kroute.rules.regex.Regex`)."""

    def search(self, value: str) -> bool: ...


@attrs.frozen
class CORS(Step):
    """HTTPCORSFilter. `any_origin` is `allowOrigins: ["*"]`; `methods` / `headers` /
    `expose` of `("*",)` are the spec's wildcards.

    For Traefik's headers middleware (`kroute.rules.middlewares.headers`): `origin_regexes`
    allow an Origin that one of them matches, as received; with `literal_wildcard`, an
    allowed `*` is sent as `*` even with credentials, as Traefik does (browsers then refuse
    credentialed responses: echoing the Origin instead would open to every site what Traefik
    never opened)."""

    on_response = True
    origins: tuple[OriginPattern, ...] = attrs.field(default=(), kw_only=True)
    any_origin: bool = attrs.field(default=False, kw_only=True)
    credentials: bool = attrs.field(default=False, kw_only=True)
    methods: tuple[str, ...] = attrs.field(default=(), kw_only=True)
    headers: tuple[str, ...] = attrs.field(default=(), kw_only=True)
    expose: tuple[str, ...] = attrs.field(default=(), kw_only=True)
    max_age: int = attrs.field(default=5, kw_only=True)  # the spec's default
    origin_regexes: tuple[OriginMatcher, ...] = attrs.field(default=(), kw_only=True)
    literal_wildcard: bool = attrs.field(default=False, kw_only=True)

    def allows(self, origin: bytes) -> bool:
        if self.any_origin:
            return True
        text = origin.decode("latin-1")
        if any(r.search(text) for r in self.origin_regexes):
            return True
        parsed = parse_origin(text)
        return parsed is not None and any(p.matches(parsed) for p in self.origins)

    def request(self, request: UpstreamRequest) -> Answer | None:
        origin = request.get(b"origin")
        if origin is None:
            return None
        allowed = self.allows(origin)
        method = request.get(b"access-control-request-method")
        if request.method == "OPTIONS" and method is not None:
            return self.preflight(request, origin, method, allowed)
        if allowed:
            request.notes[self.field] = origin
        return None

    def preflight(
        self, request: UpstreamRequest, origin: bytes, method: bytes, allowed: bool
    ) -> Answer:
        """The answer to a preflight: an OK status either way (the spec: "always an OK status
        (i.e., 204 or 200)"); the allow headers only for an allowed origin."""
        if not allowed:
            return Answer(200, "CORS preflight from an origin the route does not allow",
                          headers=(_VARY,))  # fmt: skip
        out = self._origin(origin)
        methods = _listed(self.methods, [method])
        if methods:
            out.append((b"Access-Control-Allow-Methods", methods))
        asked = (request.get(b"access-control-request-headers") or b"").split(b",")
        headers = _listed(self.headers, [h.strip().lower() for h in asked])
        if headers:
            out.append((b"Access-Control-Allow-Headers", headers))
        out += self._expose([])
        out += [(b"Access-Control-Max-Age", b"%d" % self.max_age), _VARY]
        return Answer(200, "CORS preflight answered", headers=tuple(out))

    def response(self, status: int, headers: list[Header], request: UpstreamRequest) -> None:
        headers[:] = [f for f in headers if f[0].lower() not in _OWNED]
        origin = request.notes.get(self.field)
        if origin is not None:
            names = [n for n, _ in headers]
            headers += self._origin(origin) + self._expose(names)
        if not any(n.lower() == b"vary" and _varies(v) for n, v in headers):
            headers.append(_VARY)

    def _origin(self, origin: bytes) -> list[Header]:
        """Access-Control-Allow-Origin (and -Credentials) for an allowed `origin`."""
        star = self.any_origin and (not self.credentials or self.literal_wildcard)
        out = [(b"Access-Control-Allow-Origin", b"*" if star else origin)]
        if self.credentials:
            out.append((b"Access-Control-Allow-Credentials", b"true"))
        return out

    def _expose(self, names: list[bytes]) -> list[Header]:
        """Access-Control-Expose-Headers; with `*` and credentials, the response's own field
        names (`names`; none for a preflight)."""
        if self.expose != ("*",):
            value = ", ".join(self.expose).encode("ascii")
        elif not self.credentials:
            value = b"*"
        else:
            value = b", ".join(dict.fromkeys(n.lower() for n in names))
        return [(b"Access-Control-Expose-Headers", value)] if value else []


def _listed(configured: tuple[str, ...], asked: list[bytes]) -> bytes:
    """An allow header's value: the configured names, or for `*` those asked for (the valid
    ones)."""
    if configured == ("*",):
        return b", ".join(a for a in asked if TOKEN.fullmatch(a.decode("latin-1")))
    return ", ".join(configured).encode("ascii")


def _varies(value: bytes) -> bool:
    names = {v.strip().lower() for v in value.split(b",")}
    return b"origin" in names or b"*" in names


# -- the HTTPRoute filter -> the step -------------------------------------------------------------


def cors_filter(value: Any, field: str) -> CORS:
    """An HTTPRouteFilter's `cors` (at `field`) -> the step. What the API server's validation
    would refuse is a FieldError naming the field: an origin that is not `http(s)://host[:port]`
    or puts `*` anywhere but at the start of the host, `*` beside other origins or methods, a
    method outside the enum, an invalid header name, a repeated entry, more entries than the
    spec allows, a maxAge below 1."""
    where = f"{field}.cors"
    spec = as_map(value, where)
    origins = _names(spec.get("allowOrigins"), f"{where}.allowOrigins", most=64)
    methods = _names(spec.get("allowMethods"), f"{where}.allowMethods", most=9)
    for i, method in enumerate(methods):
        if method not in _METHODS:
            raise FieldError(f"{where}.allowMethods[{i}]", f"{method!r} is not one of {_METHODS}")
    headers = _names(spec.get("allowHeaders"), f"{where}.allowHeaders", most=64, token=True)
    expose = _names(spec.get("exposeHeaders"), f"{where}.exposeHeaders", most=64, token=True)
    credentials = spec.get("allowCredentials")
    credentials = False if credentials is None else credentials
    if not isinstance(credentials, bool):
        raise FieldError(f"{where}.allowCredentials", "expected a boolean")
    return CORS(
        field,
        origins=tuple(_pattern(o, f"{where}.allowOrigins[{i}]") for i, o in enumerate(origins)
                      if o != "*"),
        any_origin=origins == ("*",),
        credentials=credentials,
        methods=methods,
        headers=("*",) if "*" in headers else headers,
        expose=("*",) if "*" in expose else expose,
        max_age=as_int(spec.get("maxAge"), f"{where}.maxAge", default=5, low=1, high=2**31 - 1),
    )  # fmt: skip


def _names(value: Any, field: str, *, most: int, token: bool = False) -> tuple[str, ...]:
    """A list of distinct strings (the spec's `listType=set`, `MaxItems`); `*` may stand alone
    only in allowOrigins and allowMethods (their CEL rules)."""
    out = tuple(req_str(v, f"{field}[{i}]") for i, v in enumerate(as_list(value, field)))
    if len(out) > most:
        raise FieldError(field, f"at most {most} entries are allowed, got {len(out)}")
    for i, name in enumerate(out):
        if name in out[:i]:
            raise FieldError(f"{field}[{i}]", f"{name!r} is listed twice")
        if token and not TOKEN.fullmatch(name):
            raise FieldError(f"{field}[{i}]", f"{name!r} is not a valid header name")
    if not token and "*" in out and len(out) > 1:
        raise FieldError(field, "'*' cannot be listed alongside other entries")
    return out


def _pattern(text: str, field: str) -> OriginPattern:
    found = _ORIGIN.fullmatch(text.lower())
    if (
        found is None
        or not (found.group(2) or found.group(3))
        or (found.group(2) and found.group(3).startswith("["))
    ):
        raise FieldError(field, f"{text!r} is not an origin: <scheme>://<host>(:<port>), "
                         "scheme http or https, `*` only at the start of the host")  # fmt: skip
    scheme, star, host, port = found.groups()
    number = _PORTS[scheme] if port is None else int(port)
    if not 0 < number < 65536:
        raise FieldError(field, f"port {number} is out of range [1, 65535]")
    return OriginPattern(scheme, number, host, wildcard=bool(star))

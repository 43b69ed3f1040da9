"""Traefik's forwardAuth middleware (Traefik v3 docs, "HTTP Middlewares" > ForwardAuth; traefik
`pkg/middlewares/auth/forward.go`) as a step that waits.

Before the request goes on, the gateway asks the auth service at `address` (a GET, or the
request's own method with `preserveRequestMethod`, without a body) with the request's headers
(only `authRequestHeaders` when given; hop-by-hop ones never) and X-Forwarded-Method, -Proto,
-Host, -Uri and -For describing the request as it is at this step (after the rewrites before
it). With `trustForwardHeader` the request's own X-Forwarded-* values are passed instead where
it has them: those are the values the front kept, which kroute only takes from trusted proxies
(`kroute.transport.proxy`), so a client cannot make them up unless its proxy is trusted.

- A 2xx answer lets the request through; the auth answer's `authResponseHeaders` (and the
  headers whose canonical name `authResponseHeadersRegex` matches: RE2, `kroute.rules.regex`)
  replace the request's fields of those names; its cookies named in
  `addAuthCookiesToResponse` go on the response, replacing the backend's of those names.
- Any other answer is the client's: its status, headers (a relative Location made absolute
  against `address`, unless `preserveLocationHeader`) and body. The backend never sees the
  request.
- No usable answer (the service down, no whole answer within 30 s as Traefik's client, an
  invalid response, a body over 1 MiB where Traefik reads any size): 500, as Traefik, and the
  request is never let through.

`decide` and `call` are pure: the I/O is the front's `fetch` (`kroute.pipeline.fetch`).
Logs and explain show the address without its query (`Address.shown`: it may carry a token).
Not yet: `tls` (a client certificate or CA for the auth service), `forwardBody` /
`maxBodySize` and `headerField` (the header whose value Traefik's access log shows as the user
name: kroute's access log, `kroute.gateway.access`, does not take it yet): they fail closed.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urljoin, urlsplit

import attrs

from kroute.objects import FieldError, as_flag, as_list, req_str
from kroute.pipeline.cors import TOKEN
from kroute.pipeline.fetch import Call, Fetch, FetchFailed, Reply
from kroute.pipeline.filters import Refuse, canonical_name
from kroute.pipeline.steps import Answer, Awaited, Header, Step, UpstreamRequest
from kroute.rules.middlewares.paths import options_of, regex_of
from kroute.rules.regex import Regex

#: Traefik's auth client: `Timeout: 30 * time.Second`.
TIMEOUT = 30.0
#: The largest auth answer body kroute reads (Traefik reads any).
LIMIT = 1 << 20
_HOP = frozenset({b"connection", b"keep-alive", b"te", b"trailer", b"transfer-encoding",
                  b"upgrade", b"content-length", b"host"})  # fmt: skip
_NOT_YET = ("tls", "forwardBody", "maxBodySize", "headerField")
_KNOWN = ("address", "trustForwardHeader", "authResponseHeaders", "authResponseHeadersRegex",
          "authRequestHeaders", "addAuthCookiesToResponse", "preserveLocationHeader",
          "preserveRequestMethod", *_NOT_YET)  # fmt: skip


@attrs.frozen
class Address:
    """Where the auth service is: `url` as configured, split for the call."""

    url: str
    host: str
    port: int
    https: bool
    target: str
    authority: bytes

    @property
    def shown(self) -> str:
        """The address for logs, explain and the admin API: scheme://host:port/path, without
        the query (which may carry a token)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        path = self.target.partition("?")[0]
        return f"{'https' if self.https else 'http'}://{host}:{self.port}{path}"


@attrs.frozen
class ForwardAuth(Awaited):
    on_response = True  # (the auth cookies, `addAuthCookiesToResponse`)
    address: Address = attrs.field(kw_only=True)
    trust: bool = attrs.field(default=False, kw_only=True)
    response_headers: tuple[bytes, ...] = attrs.field(default=(), kw_only=True)
    response_regex: Regex | None = attrs.field(default=None, kw_only=True)
    request_headers: frozenset[bytes] = attrs.field(default=frozenset(), kw_only=True)
    cookies: frozenset[str] = attrs.field(default=frozenset(), kw_only=True)
    preserve_method: bool = attrs.field(default=False, kw_only=True)
    preserve_location: bool = attrs.field(default=False, kw_only=True)
    timeout: float = attrs.field(default=TIMEOUT, kw_only=True)
    limit: int = attrs.field(default=LIMIT, kw_only=True)

    @property
    def label(self) -> str:
        return f"ForwardAuth to {self.address.shown} ({self.field})"

    def call(self, request: UpstreamRequest) -> Call:
        """What is sent to the auth service about `request` (see the module)."""
        wanted = self.request_headers
        headers: list[Header] = [(b"Host", self.address.authority)]
        headers += [(n, v) for n, v in request.headers if n.lower() not in _HOP
                    and (not wanted or n.lower() in wanted)]  # fmt: skip
        view = UpstreamRequest("", "", None, headers)
        own = {
            b"X-Forwarded-For": request.client.encode("latin-1"),
            b"X-Forwarded-Method": request.method.encode("latin-1"),
            b"X-Forwarded-Proto": request.scheme.encode("latin-1"),
            b"X-Forwarded-Host": request.get(b"host") or b"",
            b"X-Forwarded-Uri": request.target.encode("latin-1"),
        }
        for name, value in own.items():
            given = request.get(name) if self.trust else None
            if given or value:
                view.set(name, given or value)
            else:
                view.remove(name)
        method = request.method if self.preserve_method else "GET"
        address = self.address
        return Call(address.host, address.port, address.https, method, address.target,
                    tuple(headers), self.timeout, self.limit)  # fmt: skip

    def decide(self, request: UpstreamRequest, reply: Reply) -> Answer | None:
        """What the auth service's `reply` means for `request`: None (through, its headers
        copied) or the answer the client gets."""
        if not 200 <= reply.status < 300:
            return self._denied(reply)
        for name in self.response_headers:
            request.remove(name)
            request.headers += [(n, v) for n, v in reply.headers if n.lower() == name.lower()]
        if self.response_regex is not None:
            matches = self.response_regex.search
            request.headers[:] = [
                f for f in request.headers if not matches(canonical_name(f[0].decode("latin-1")))
            ]
            request.headers += [
                (n, v) for n, v in reply.headers if matches(canonical_name(n.decode("latin-1")))
            ]
        if self.cookies:
            cookies = (v for n, v in reply.headers if n.lower() == b"set-cookie")
            kept = tuple(v for v in cookies if _cookie_name(v) in self.cookies)
            if kept:
                request.notes[self.field] = kept
        return None

    def _denied(self, reply: Reply) -> Answer:
        headers = [(n, v) for n, v in reply.headers if n.lower() not in _HOP]
        if not self.preserve_location:
            headers = [(n, _absolute(self.address.url, v) if n.lower() == b"location" else v)
                       for n, v in headers]  # fmt: skip
        return Answer(reply.status, f"the auth service at {self.address.shown} answered "
                      f"{reply.status}", headers=tuple(headers), body=reply.body)  # fmt: skip

    async def request_async(self, request: UpstreamRequest, fetch: Fetch | None) -> Answer | None:
        if fetch is None:
            return _refused(f"{self.label}: no front to call the auth service from")
        try:
            reply = await fetch(self.call(request))
        except FetchFailed as exc:
            return _refused(f"the auth service at {self.address.shown} failed: {exc}")
        return self.decide(request, reply)

    def response(self, status: int, headers: list[Header], request: UpstreamRequest) -> None:
        kept: tuple[bytes, ...] = request.notes.get(self.field, ())
        if kept:
            names = {_cookie_name(v) for v in kept}
            headers[:] = [(n, v) for n, v in headers if n.lower() != b"set-cookie"
                          or _cookie_name(v) not in names]  # fmt: skip
            headers += [(b"Set-Cookie", v) for v in kept]


def _refused(reason: str) -> Answer:
    """Traefik answers 500 when the auth call fails; the request is never let through."""
    return Answer(500, reason, body=b"500 Internal Server Error\n")


def _cookie_name(value: bytes) -> str:
    return value.split(b";", 1)[0].split(b"=", 1)[0].strip().decode("latin-1")


def _absolute(base: str, location: bytes) -> bytes:
    """A Location relative to the auth service's address, made absolute (Go's
    `Response.Location`)."""
    text = location.decode("latin-1")
    return urljoin(base, text).encode("latin-1") if text else location


def address_of(text: str, field: str) -> Address:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FieldError(field, f"{text!r} is not an http:// or https:// URL with a host")
    if not text.isascii():
        raise FieldError(field, f"{text!r}: write the host in its ASCII (punycode) form")
    if parts.username is not None or parts.fragment:
        raise FieldError(field, f"{text!r}: user information and fragments are not allowed")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise FieldError(field, f"{text!r} has an invalid port") from None
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    https = parts.scheme == "https"
    return Address(text, parts.hostname, port, https, target, parts.netloc.encode("ascii"))


def _names(options: dict[str, Any], name: str, field: str) -> tuple[str, ...]:
    listed = as_list(options.get(name), f"{field}.{name}")
    out = tuple(req_str(v, f"{field}.{name}[{i}]") for i, v in enumerate(listed))
    for i, value in enumerate(out):
        if name != "addAuthCookiesToResponse" and not TOKEN.fullmatch(value):
            raise FieldError(f"{field}.{name}[{i}]", f"{value!r} is not a valid header name")
    return out


def forward_auth(spec: Any, field: str) -> Step:
    options = options_of(spec, field, _KNOWN)
    for name in _NOT_YET:
        if options.get(name) not in (None, False):
            return Refuse(f"{field}.{name}", reason=f"forwardAuth.{name} is not supported by "
                          "kroute yet")  # fmt: skip
    address = address_of(req_str(options.get("address"), f"{field}.address"), f"{field}.address")
    regex = None
    text = options.get("authResponseHeadersRegex")
    if text:
        regex = regex_of(req_str(text, f"{field}.authResponseHeadersRegex"),
                         f"{field}.authResponseHeadersRegex", strip=False)  # fmt: skip
    return ForwardAuth(
        field, address=address, trust=as_flag(options, "trustForwardHeader", field),
        response_headers=tuple(n.encode() for n in _names(options, "authResponseHeaders", field)),
        response_regex=regex,
        request_headers=frozenset(n.lower().encode()
                                  for n in _names(options, "authRequestHeaders", field)),
        cookies=frozenset(_names(options, "addAuthCookiesToResponse", field)),
        preserve_method=as_flag(options, "preserveRequestMethod", field),
        preserve_location=as_flag(options, "preserveLocationHeader", field),
        timeout=TIMEOUT,
    )  # fmt: skip

"""Traefik's redirectScheme and redirectRegex middlewares as steps (Traefik v3 docs, "HTTP
Middlewares" > RedirectScheme, RedirectRegex; traefik `pkg/middlewares/redirect`).

Both compare the request's URL as Traefik rebuilds it (scheme, the Host header, the target as
received) with the URL they would send the client to: when the two differ the gateway answers
the redirect and the request never reaches a backend; when they are the same it goes on.
`permanent` gives 301 to GET and 308 to other methods, otherwise 302 and 307 (Traefik's
`moveHandler`, which keeps the method of non-GET requests).

redirectScheme: the scheme becomes `scheme` and the port `port` (left out when it is the
scheme's own, and when no port is given: the request's port is dropped, as Traefik's
replacement `scheme://host` + port does). The request's scheme is the one it arrived with,
or X-Forwarded-Proto (http/ws, https/wss), which kroute's fronts only pass on from trusted
proxies. The Location is built by `kroute.rules.redirect.Redirect`, like every redirect
kroute answers.

redirectRegex: `regex` is searched in `scheme://host[:port]/path?query` and every match
replaced by `replacement` (Go's `ReplaceAllString`: `$1`, `${name}`); characters a Location
cannot carry are percent-encoded.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import attrs

from kroute.objects import FieldError, as_str, req_str
from kroute.pipeline.steps import Answer, Step, UpstreamRequest
from kroute.rules.middlewares.paths import options_of, regex_of
from kroute.rules.redirect import WELL_KNOWN_PORTS, Redirect
from kroute.rules.regex import Regex

_STATUS_TEXT = {301: b"Moved Permanently", 302: b"Found", 307: b"Temporary Redirect",
                308: b"Permanent Redirect"}  # fmt: skip
#: What a Location keeps as it is (RFC 3986 section 2: reserved, unreserved and `%`).
_URI_SAFE = ":/?#[]@!$&'()*+,;=%~-._"
_FORWARDED_SCHEMES = {b"http": "http", b"ws": "http", b"https": "https", b"wss": "https"}


def moved(location: str, permanent: bool, method: str) -> Answer:
    """The redirect answer (Traefik's `moveHandler`)."""
    get = method == "GET"
    status = (301 if get else 308) if permanent else (302 if get else 307)
    return Answer(status, f"redirect to {location}", headers=((b"Location",
                  location.encode("latin-1")),), body=_STATUS_TEXT[status])  # fmt: skip


def _host_port(request: UpstreamRequest) -> tuple[str, int | None]:
    """The Host header's host (IPv6 without brackets) and port."""
    raw = (request.get(b"host") or b"").decode("latin-1")
    host, _, port = raw.rpartition(":") if not raw.endswith("]") else (raw, "", "")
    if not host or not (port.isascii() and port.isdigit()):
        host, port = raw, ""
    return host.strip("[]"), int(port) if port else None


@attrs.frozen
class RedirectScheme(Step):
    redirect: Redirect = attrs.field(kw_only=True)
    permanent: bool = attrs.field(kw_only=True)

    @property
    def touches(self) -> frozenset[bytes]:
        return frozenset({b"host", b"x-forwarded-proto"})

    def request(self, request: UpstreamRequest) -> Answer | None:
        forwarded = (request.get(b"x-forwarded-proto") or b"").lower()
        scheme = _FORWARDED_SCHEMES.get(forwarded, "https" if request.scheme == "https" else "http")
        host, port = _host_port(request)
        url = {"host": host, "path": request.path, "query": request.query or ""}
        old = Redirect().location(scheme=scheme, port=port, **url)
        new = self.redirect.location(scheme=scheme, port=None, **url)
        return None if new == old else moved(new, self.permanent, request.method)


@attrs.frozen
class RedirectRegex(Step):
    regex: Regex = attrs.field(kw_only=True)
    replacement: str = attrs.field(kw_only=True)
    permanent: bool = attrs.field(kw_only=True)

    @property
    def touches(self) -> frozenset[bytes]:
        return frozenset({b"host"})

    def request(self, request: UpstreamRequest) -> Answer | None:
        scheme = "https" if request.scheme == "https" else "http"
        host = (request.get(b"host") or b"").decode("latin-1")
        old = f"{scheme}://{host}{request.target}"
        if not self.regex.search(old):
            return None
        new = quote(self.regex.replace_all(old, self.replacement), safe=_URI_SAFE)
        return None if new == old else moved(new, self.permanent, request.method)


def _permanent(options: dict[str, Any], field: str) -> bool:
    value = options.get("permanent", False)
    if not isinstance(value, bool):
        raise FieldError(f"{field}.permanent", "expected a boolean")
    return value


def redirect_scheme(spec: Any, field: str) -> Step:
    options = options_of(spec, field, ("scheme", "port", "permanent"))
    scheme = req_str(options.get("scheme"), f"{field}.scheme")
    if scheme not in WELL_KNOWN_PORTS:
        raise FieldError(f"{field}.scheme", f"{scheme!r} is not http or https")
    text = options.get("port")  # (a string in the CRD; a number is taken too)
    if isinstance(text, int) and not isinstance(text, bool):
        text = str(text)
    text = as_str(text, f"{field}.port")
    port = None
    if text:
        if not (text.isascii() and text.isdigit()) or not 0 < int(text) < 65536:
            raise FieldError(f"{field}.port", f"{text!r} is not a port number")
        port = int(text)
    return RedirectScheme(field, redirect=Redirect(scheme=scheme, port=port),
                          permanent=_permanent(options, field))  # fmt: skip


def redirect_regex(spec: Any, field: str) -> Step:
    options = options_of(spec, field, ("regex", "replacement", "permanent"))
    regex = regex_of(req_str(options.get("regex"), f"{field}.regex"), f"{field}.regex", strip=False)
    replacement = req_str(options.get("replacement"), f"{field}.replacement")
    return RedirectRegex(field, regex=regex, replacement=replacement,
                         permanent=_permanent(options, field))  # fmt: skip

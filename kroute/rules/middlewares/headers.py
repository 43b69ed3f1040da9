"""Traefik's `headers` middleware as steps (Traefik v3 docs, "HTTP Middlewares" > Headers;
traefik `pkg/middlewares/headers`, whose security headers come from unrolled/secure).

One middleware becomes up to four steps, in the order Traefik applies them:
- CORS (`kroute.pipeline.cors.CORS`): a preflight (OPTIONS with Origin and
  Access-Control-Request-Method) is answered 200 by the gateway, never forwarded; responses to
  an allowed Origin get Access-Control-Allow-Origin (and -Credentials, -Expose-Headers);
- customRequestHeaders (`RequestHeaderModifier`): a value replaces the field, an empty value
  removes it; `Host` sets the Host the backend sees;
- the security headers (`SecurityHeaders`) on every response;
- customResponseHeaders (`ResponseHeaderModifier`), the same way on responses.

Where kroute differs from Traefik, and why (docs/middlewares.md):
- the CORS step owns the CORS response headers: a backend's own Access-Control-* fields are
  removed, so only origins the middleware allows ever get them; Vary: Origin is always added
  (addVaryHeader is accepted), since the response depends on the Origin either way;
- an allowed origin is compared as an origin (`https://a.example` and `https://a.example:443`
  are the same); an entry that is not an origin, or has a `*` anywhere but alone (Traefik
  compares literally, so `https://*.example.com` never matched there), is a field error;
- `$NONCE` in contentSecurityPolicy (unrolled/secure puts a random per-request nonce there,
  which no backend can learn) fails closed.
Options of unrolled/secure that need more than header values (allowedHosts,
hostsProxyHeaders, sslProxyHeaders) fail closed for now; the options Traefik v3 removed
(sslRedirect, sslTemporaryRedirect, sslHost, sslForceHost, featurePolicy) fail closed and say
what replaces them.
"""

from __future__ import annotations

from typing import Any

import attrs

from kroute.objects import FieldError, as_flag, as_int, as_list, as_map, as_str, req_str
from kroute.pipeline.cors import CORS, TOKEN, OriginPattern, parse_origin
from kroute.pipeline.filters import (
    HeaderEdits,
    Refuse,
    RequestHeaderModifier,
    ResponseHeaderModifier,
    edited_name,
    header_name,
    header_value,
)
from kroute.pipeline.patch import Edit, fold
from kroute.pipeline.steps import Header, Step, UpstreamRequest
from kroute.rules.regex import compile_regex

_CORS_OPTIONS = ("accessControlAllowCredentials", "accessControlAllowHeaders",
                 "accessControlAllowMethods", "accessControlAllowOriginList",
                 "accessControlAllowOriginListRegex", "accessControlExposeHeaders",
                 "accessControlMaxAge", "addVaryHeader")  # fmt: skip
_SECURITY_OPTIONS = ("stsSeconds", "stsIncludeSubdomains", "stsPreload", "forceSTSHeader",
                     "frameDeny", "customFrameOptionsValue", "contentTypeNosniff",
                     "browserXssFilter", "customBrowserXSSValue", "contentSecurityPolicy",
                     "contentSecurityPolicyReportOnly", "publicKey", "referrerPolicy",
                     "permissionsPolicy", "isDevelopment")  # fmt: skip
_LATER = ("allowedHosts", "hostsProxyHeaders", "sslProxyHeaders")
#: Removed in Traefik v3 (its migration guide), with what replaces each.
_REMOVED = {
    **dict.fromkeys(("sslRedirect", "sslTemporaryRedirect", "sslHost", "sslForceHost"),
                    "a redirectScheme middleware"),
    "featurePolicy": "permissionsPolicy",
}  # fmt: skip
OPTIONS = ("customRequestHeaders", "customResponseHeaders", *_CORS_OPTIONS,
           *_SECURITY_OPTIONS, *_LATER, *_REMOVED)  # fmt: skip


@attrs.frozen
class SecurityHeaders(Step):
    """Response header fields set on every response (`always`), and those only for requests
    that arrived over TLS (`secure`: Strict-Transport-Security unless forceSTSHeader, and
    Public-Key-Pins), replacing what the backend sent (unrolled/secure `ModifyResponseHeaders`)."""

    on_request = False
    on_response = True
    always: tuple[Header, ...] = attrs.field(default=(), kw_only=True)
    secure: tuple[Header, ...] = attrs.field(default=(), kw_only=True)

    def response_edits(self, scheme: str) -> tuple[Edit, ...]:
        """The same on every response (`kroute.pipeline.patch`): a response's fields of these
        names are replaced."""
        return (*self.always, *(self.secure if scheme == "https" else ()))

    def response(self, status: int, headers: list[Header], request: UpstreamRequest) -> None:
        fold(self.response_edits(request.scheme)).apply(headers)


def _text(options: dict[str, Any], key: str, field: str) -> str:
    return as_str(options.get(key), f"{field}.{key}") or ""


def _custom(value: Any, field: str, *, request: bool) -> HeaderEdits | None:
    """customRequestHeaders / customResponseHeaders: a value sets, "" removes."""
    spec = as_map(value, field)
    if not spec:
        return None
    seen: dict[bytes, str] = {}
    set_: list[Header] = []
    removed: list[bytes] = []
    for name, raw in spec.items():
        where = f"{field}[{name}]"
        encoded = header_name(str(name), where)
        if encoded.lower() in seen:
            raise FieldError(where, f"the same header as {seen[encoded.lower()]!r} (names are "
                             "case-insensitive; Go's map order would pick one)")  # fmt: skip
        seen[encoded.lower()] = str(name)
        text = as_str(raw, where) or ""
        if not text:
            if request and encoded.lower() == b"host":
                raise FieldError(where, "the Host of a request cannot be removed")
            removed.append(encoded)
        else:
            set_.append((edited_name(str(name), where), header_value(text, where)))
    return HeaderEdits(set=tuple(set_), remove=tuple(removed))


def _names(options: dict[str, Any], key: str, field: str, *, token: bool) -> tuple[str, ...]:
    out = tuple(req_str(v, f"{field}.{key}[{i}]")
                for i, v in enumerate(as_list(options.get(key), f"{field}.{key}")))  # fmt: skip
    for i, name in enumerate(out):
        if name != "*" and (not TOKEN.fullmatch(name) if token else False):
            raise FieldError(f"{field}.{key}[{i}]", f"{name!r} is not a valid header name")
    return out


def _cors(options: dict[str, Any], field: str) -> CORS | None:
    if not any(k in options for k in _CORS_OPTIONS):
        return None
    origins: list[OriginPattern] = []
    listed = _names(options, "accessControlAllowOriginList", field, token=False)
    for i, text in enumerate(listed):
        parsed = parse_origin(text) if text != "*" else None
        if text != "*" and parsed is None:
            raise FieldError(f"{field}.accessControlAllowOriginList[{i}]",
                             f"{text!r} is not an origin (scheme://host[:port]; Traefik "
                             "compares origins literally, so a pattern never matched: use "
                             "accessControlAllowOriginListRegex)")  # fmt: skip
        if parsed is not None:
            origins.append(OriginPattern(*parsed))
    regexes = []
    for i, text in enumerate(_names(options, "accessControlAllowOriginListRegex", field,
                                    token=False)):  # fmt: skip
        try:
            regexes.append(compile_regex(text))
        except ValueError as exc:
            raise FieldError(f"{field}.accessControlAllowOriginListRegex[{i}]", str(exc)) from None
    methods = _names(options, "accessControlAllowMethods", field, token=True)
    headers = _names(options, "accessControlAllowHeaders", field, token=True)
    expose = _names(options, "accessControlExposeHeaders", field, token=True)
    as_flag(options, "addVaryHeader", field)  # (Vary: Origin is always added)
    return CORS(
        field,
        origins=tuple(origins),
        any_origin="*" in listed,
        credentials=as_flag(options, "accessControlAllowCredentials", field),
        methods=("*",) if "*" in methods else methods,
        headers=("*",) if "*" in headers else headers,
        expose=("*",) if "*" in expose else expose,
        max_age=as_int(options.get("accessControlMaxAge"), f"{field}.accessControlMaxAge",
                       default=0, low=0, high=2**63 - 1),
        origin_regexes=tuple(regexes),
        literal_wildcard=True,
    )  # fmt: skip


def _security(options: dict[str, Any], field: str) -> SecurityHeaders | Refuse | None:
    """unrolled/secure's response headers, as Traefik configures it."""
    if not any(k in options for k in _SECURITY_OPTIONS):
        return None
    development = as_flag(options, "isDevelopment", field)
    always: list[Header] = []
    secure: list[Header] = []

    def put(target: list[Header], name: bytes, value: str, key: str) -> None:
        target.append((name, header_value(value, f"{field}.{key}")))

    seconds = as_int(options.get("stsSeconds"), f"{field}.stsSeconds", default=0, low=0,
                     high=2**63 - 1)  # fmt: skip
    if seconds and not development:
        sts = f"max-age={seconds}"
        sts += "; includeSubDomains" if as_flag(options, "stsIncludeSubdomains", field) else ""
        sts += "; preload" if as_flag(options, "stsPreload", field) else ""
        forced = as_flag(options, "forceSTSHeader", field)
        put(always if forced else secure, b"Strict-Transport-Security", sts, "stsSeconds")
    frame = _text(options, "customFrameOptionsValue", field)
    frame = frame or ("DENY" if as_flag(options, "frameDeny", field) else "")
    if frame:
        put(always, b"X-Frame-Options", frame, "customFrameOptionsValue")
    if as_flag(options, "contentTypeNosniff", field):
        always.append((b"X-Content-Type-Options", b"nosniff"))
    xss = _text(options, "customBrowserXSSValue", field)
    xss = xss or ("1; mode=block" if as_flag(options, "browserXssFilter", field) else "")
    if xss:
        put(always, b"X-XSS-Protection", xss, "customBrowserXSSValue")
    for key, name in (("contentSecurityPolicy", b"Content-Security-Policy"),
                      ("contentSecurityPolicyReportOnly", b"Content-Security-Policy-Report-Only"),
                      ("referrerPolicy", b"Referrer-Policy"),
                      ("permissionsPolicy", b"Permissions-Policy")):  # fmt: skip
        value = _text(options, key, field)
        if "$NONCE" in value and key.startswith("contentSecurity"):
            return Refuse(f"{field}.{key}", reason="$NONCE (a random nonce per request) is "
                          "not supported by kroute")  # fmt: skip
        if value:
            put(always, name, value, key)
    public_key = _text(options, "publicKey", field)
    if public_key and not development:
        put(secure, b"Public-Key-Pins", public_key, "publicKey")
    return SecurityHeaders(field, always=tuple(always), secure=tuple(secure))


def headers(spec: Any, field: str) -> tuple[Step, ...]:
    """A `headers` middleware (at `field`) -> its steps; options set to what means "off"
    (false, empty) are what Traefik does without them and fail nothing."""
    options = dict(as_map(spec, field))
    steps: list[Step] = []
    for key, value in options.items():
        if key not in OPTIONS:
            raise FieldError(f"{field}.{key}", "unknown option of the headers middleware")
        if key in _REMOVED and value not in (False, "", None):
            steps.append(Refuse(f"{field}.{key}", reason=f"headers.{key} was removed in "
                                f"Traefik v3: use {_REMOVED[key]}"))  # fmt: skip
        elif key in _LATER and value not in (None, [], {}):
            steps.append(Refuse(f"{field}.{key}", reason=f"headers.{key} is not supported "
                                "by kroute yet"))  # fmt: skip
    cors = _cors(options, field)
    steps += [cors] if cors is not None else []
    edits = _custom(options.get("customRequestHeaders"), f"{field}.customRequestHeaders",
                    request=True)  # fmt: skip
    steps += [RequestHeaderModifier(field, edits=edits)] if edits is not None else []
    security = _security(options, field)
    steps += [security] if security is not None else []
    edits = _custom(options.get("customResponseHeaders"), f"{field}.customResponseHeaders",
                    request=False)  # fmt: skip
    steps += [ResponseHeaderModifier(field, edits=edits)] if edits is not None else []
    # What fails closed goes first: nothing (a preflight answer either) happens before it.
    return tuple(sorted(steps, key=lambda step: not isinstance(step, Refuse)))

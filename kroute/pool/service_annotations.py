"""Traefik's Service annotations (`traefik.ingress.kubernetes.io/service.*`): those kroute
applies become the Service's `ServiceOptions`; any other, or a malformed value, leaves the
Service without endpoints in kroute, with the reason, so nothing is forwarded to it as if the
annotation were not there (fail closed).

In Traefik v3 these go on the Kubernetes Service, not the Ingress (its "Kubernetes Ingress"
page, "On Service"):

- `service.sticky.cookie: "true"` (and `.name`, `.secure`, `.httponly`, `.samesite`,
  `.maxage`, `.path`, `.domain`) turns on sticky sessions between the Service's endpoints:
  `ServiceOptions.sticky`, the cookie as IngressRoute `sticky.cookie` makes it (its default
  name Traefik's, from `namespace-name-port`);
- `service.passhostheader: "false"` sends the endpoint's address as Host;
- `service.serversscheme`, `service.serverstransport`, `service.nativelb`,
  `service.nodeportlb` change how endpoints are reached: only values meaning Traefik's default
  are accepted (`http`, `"false"`).

Booleans are read as Go's strconv.ParseBool reads them, as Traefik does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from kroute.objects import (
    SAME_SITE,
    FieldError,
    Obj,
    StickyCookie,
    annotations_of,
    cookie_attribute,
    cookie_name,
    sanitize,
)

PREFIX = "traefik.ingress.kubernetes.io/service."
#: Annotation (after PREFIX) -> the values that mean Traefik's default, compared lower-cased.
_DEFAULTS = {
    "serversscheme": ("http",),
    "nativelb": ("false", "0", "f"),
    "nodeportlb": ("false", "0", "f"),
}
_APPLIED = frozenset({"passhostheader", "sticky.cookie", *(
    f"sticky.cookie.{k}" for k in ("name", "secure", "httponly", "samesite", "maxage", "path",
                                   "domain"))})  # fmt: skip
_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_FALSE = ("0", "f", "F", "FALSE", "false", "False")


@attrs.frozen
class ServiceOptions:
    """What a Service's Traefik annotations ask of the way to its endpoints."""

    sticky: StickyCookie | None = None
    pass_host_header: bool = True


NO_OPTIONS = ServiceOptions()


def service_options(service: Obj, port: int | str) -> ServiceOptions:
    """The options of `service` (reached at `port`, for the cookie's default name); a
    FieldError naming the annotation for one kroute does not apply or cannot read."""
    annotations = annotations_of(service)
    ours = {name[len(PREFIX) :]: value for name, value in annotations.items()
            if name.startswith(PREFIX)}  # fmt: skip
    for key in sorted(ours):
        if key not in _APPLIED and str(ours[key]).strip().lower() not in _DEFAULTS.get(key, ()):
            raise FieldError(f"metadata.annotations[{PREFIX}{key}]",
                             f"{ours[key]!r}: not supported by kroute")  # fmt: skip
    if not ours:
        return NO_OPTIONS
    sticky = None
    if _bool(ours, "sticky.cookie", False):
        meta = service.get("metadata") or {}
        name = _text(ours, "sticky.cookie.name")
        if not name:
            name = cookie_name(f"{meta.get('namespace')}-{meta.get('name')}-{port}")
        same_site = _text(ours, "sticky.cookie.samesite")
        if same_site and same_site.lower() not in SAME_SITE:
            raise _error("sticky.cookie.samesite", f"{same_site!r} is not none, lax or strict")
        sticky = StickyCookie(
            name=sanitize(name),
            secure=_bool(ours, "sticky.cookie.secure", False),
            http_only=_bool(ours, "sticky.cookie.httponly", False),
            same_site=SAME_SITE.get(same_site.lower(), ""),
            max_age=_int(ours, "sticky.cookie.maxage"),
            path=_cookie(ours, "sticky.cookie.path") or "/",
            domain=_cookie(ours, "sticky.cookie.domain", domain=True),
        )
    return ServiceOptions(sticky, _bool(ours, "passhostheader", True))


def _error(key: str, reason: str) -> FieldError:
    return FieldError(f"metadata.annotations[{PREFIX}{key}]", reason)


def _text(ours: Mapping[str, Any], key: str) -> str:
    return str(ours.get(key) or "").strip()


def _cookie(ours: Mapping[str, Any], key: str, *, domain: bool = False) -> str:
    value = _text(ours, key)
    if value:
        cookie_attribute(value, f"metadata.annotations[{PREFIX}{key}]", domain=domain)
    return value


def _bool(ours: Mapping[str, Any], key: str, default: bool) -> bool:
    value = _text(ours, key)
    if not value:
        return default
    if value in _TRUE or value in _FALSE:
        return value in _TRUE
    raise _error(key, f"{value!r} is not a boolean (true, false, 1, 0, ...)")


def _int(ours: Mapping[str, Any], key: str) -> int:
    value = _text(ours, key)
    try:
        return int(value) if value else 0
    except ValueError:
        raise _error(key, f"{value!r} is not an integer") from None

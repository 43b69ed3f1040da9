"""A Traefik service reference (IngressRoute `services[]`, a TraefikService's children) -> the
backend it names, the steps it adds and what of it fails closed.

Traefik v3's LoadBalancerSpec (the CRD's `services[]` items) has more fields than a backend
reference; each is applied, accepted because kroute does what it asks anyway, or refused (a
`Refuse` step: the route answers 500 and never forwards, saying why):

- `kind` (Service, TraefikService), `name`, `namespace`, `port`, `weight`: the reference;
  another namespace only with `allow_cross_namespace` (Traefik's allowCrossNamespace), else
  the reference's share of traffic answers 500;
- `middlewares`: the service's own Middlewares, run after the route's when this service is
  the one chosen (a backend chain);
- `strategy`: `wrr` (the default) and its deprecated name `RoundRobin` mean the gateway's own
  balancing of the Service's endpoints; `p2c`, `hrw`, `leasttime` choose a balancer per route,
  which kroute does per gateway (`Router(balancer=...)`): refused;
- `passHostHeader: false`: the endpoint's address (`10.0.0.5:8080`) is sent as Host, after the
  route's steps, on every front (`BackendRef.pass_host_header`);
- `responseForwarding.flushInterval`: accepted, changes nothing: every kroute front writes each
  part of a response body as it arrives (Traefik's `-1`);
- `sticky.cookie` (name, secure, httpOnly, sameSite, maxAge, path, domain): the client is kept
  on one endpoint of the Service (`BackendRef.sticky`, `sticky_cookie`);
- `healthCheck` and `passiveHealthCheck`: empty is accepted; settings are refused: a Service's
  health is set on the Service (`kroute.dev/*` annotations, docs/pools.md);
- `scheme: http` is the default; `https`, `h2c`, `serversTransport`, `nativeLB: true`,
  `nodePortLB: true` are refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from kroute.objects import (
    SAME_SITE,
    BackendRef,
    FieldError,
    StickyCookie,
    as_flag,
    as_int,
    as_map,
    as_str,
    cookie_attribute,
    cookie_name,
    req_str,
    sanitize,
)
from kroute.pipeline.filters import Refuse
from kroute.pipeline.steps import Step
from kroute.rules.middlewares.paths import options_of
from kroute.rules.middlewares.refs import crd_refs

KIND = "TraefikService"
_CROSS = "cross-namespace references are disabled (Traefik's allowCrossNamespace)"


@attrs.frozen
class ServiceRef(BackendRef):
    """A route's reference to a TraefikService, replaced by the backends it stands for when the
    routes are resolved (`kroute.rules.traefik_services`); one left unresolved answers 500."""

    error: str | None = "the TraefikService reference was not resolved"
    field: str = attrs.field(default="", kw_only=True)

    def __str__(self) -> str:
        return f"{KIND} {self.namespace}/{self.name}"


@attrs.frozen
class Reference:
    """One service reference: the backend (a `ServiceRef` for a TraefikService), the steps it
    adds when chosen (its Middlewares), and what of it fails closed."""

    backend: BackendRef
    steps: tuple[Step, ...] = ()
    refused: tuple[Refuse, ...] = ()


#: Fields whose value (or absence) means what kroute does anyway.
_DEFAULTS: dict[str, tuple[Any, ...]] = {
    "strategy": (None, "wrr", "RoundRobin"),
    "scheme": (None, "http"),
    "nativeLB": (None, False),
    "nodePortLB": (None, False),
    "healthCheck": (None, {}),
    "passiveHealthCheck": (None, {}),
    "serversTransport": (None, ""),
}
_WHY = {
    "strategy": "kroute balances a Service's endpoints as the gateway is configured "
    "(Router(balancer=...)), not per route: only wrr (RoundRobin) is accepted",
    "healthCheck": "a Service's health checks are set on the Service (kroute.dev/* "
    "annotations, docs/pools.md)",
    "passiveHealthCheck": "a Service's passive health is set on the Service (kroute.dev/* "
    "annotations, docs/pools.md)",
    "sticky": "it applies to a Kubernetes Service: set it on the TraefikService's own "
    "services (or weighted.sticky)",
    "passHostHeader": "it applies to a Kubernetes Service: set it on the TraefikService's "
    "own services",
}
#: The fields of a reference itself, and those applied to a Service's.
_REFERENCE = frozenset({"kind", "name", "namespace", "weight", "middlewares"})
_SERVICE = frozenset({*_REFERENCE, "port", "responseForwarding", "sticky", "passHostHeader"})


def reference(value: Any, field: str, namespace: str, cross_namespace: bool,
              extra: frozenset[str] = frozenset()) -> Reference:  # fmt: skip
    """The reference `value` at `field` of an object in `namespace` (`extra`: fields the caller
    reads itself, such as a mirror's `percent`); FieldError when malformed."""
    item = as_map(value, field)
    kind = item.get("kind", "Service")
    if kind not in ("Service", KIND):
        raise FieldError(f"{field}.kind", f"{kind!r} is not Service or {KIND}")
    name = req_str(item.get("name"), f"{field}.name")
    other = as_str(item.get("namespace"), f"{field}.namespace") or namespace
    weight = as_int(item.get("weight"), f"{field}.weight", default=1, low=0, high=1_000_000)
    error = _CROSS if other != namespace and not cross_namespace else None
    backend: BackendRef
    if kind == KIND and error is None:
        backend = ServiceRef(other, name, None, weight, field=field)
    elif kind == KIND:
        backend = BackendRef(other, name, None, weight, error)
    else:
        port = _port(item.get("port"), f"{field}.port")
        passed = item.get("passHostHeader", True)
        if not isinstance(passed, bool):
            raise FieldError(f"{field}.passHostHeader", "expected a boolean")
        cookie = sticky_cookie(item.get("sticky"), f"{field}.sticky", f"{other}-{name}-{port}")
        backend = BackendRef(other, name, port, weight, error, sticky=cookie,
                             pass_host_header=passed)  # fmt: skip
    steps = crd_refs(item.get("middlewares"), f"{field}.middlewares", namespace, cross_namespace)
    known = (_REFERENCE if kind == KIND else _SERVICE) | extra
    return Reference(backend, steps, _refused(item, field, known))


def sticky_cookie(value: Any, field: str, service: str) -> StickyCookie | None:
    """Traefik's `sticky: {cookie: {...}}` at `field` (None without a cookie, as Traefik); the
    default name is Traefik's: `_` and 5 hex digits of the SHA-1 of the `service`'s name; a
    given name has the characters a cookie name may not have replaced by `_`, as Traefik does."""
    options = options_of(value, field, ("cookie",))
    if options.get("cookie") is None:
        return None
    where = f"{field}.cookie"
    cookie = options_of(options["cookie"], where, ("name", "secure", "httpOnly", "sameSite",
                                                   "maxAge", "path", "domain"))  # fmt: skip
    name = as_str(cookie.get("name"), f"{where}.name")
    if name is None:
        name = cookie_name(service)
    same_site = as_str(cookie.get("sameSite"), f"{where}.sameSite") or ""
    if same_site and same_site.lower() not in SAME_SITE:
        raise FieldError(f"{where}.sameSite", f"{same_site!r} is not none, lax or strict")
    max_age = as_int(cookie.get("maxAge"), f"{where}.maxAge", default=0, low=-(2**31),
                     high=2**31 - 1)  # fmt: skip
    return StickyCookie(
        name=sanitize(name),
        secure=as_flag(cookie, "secure", where),
        http_only=as_flag(cookie, "httpOnly", where),
        same_site=SAME_SITE.get(same_site.lower(), ""),
        max_age=max_age,
        path="/" if cookie.get("path") is None else _attribute(cookie, "path", where),
        domain=_attribute(cookie, "domain", where),
    )


def _attribute(cookie: Mapping[str, Any], key: str, where: str) -> str:
    value = as_str(cookie.get(key), f"{where}.{key}") or ""
    return cookie_attribute(value, f"{where}.{key}", domain=key == "domain") if value else ""


def _port(value: Any, field: str) -> int | str:
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        return value  # a port name
    port = as_int(int(value) if isinstance(value, str) else value, field, default=0, low=1,
                  high=65535)  # fmt: skip
    if port == 0:
        raise FieldError(field, "required")
    return port


def _refused(item: Mapping[str, Any], field: str, known: frozenset[str]) -> tuple[Refuse, ...]:
    out = []
    for name, value in item.items():
        if name == "responseForwarding" and name in known:
            forwarding = as_map(value, f"{field}.{name}")
            out += [Refuse(f"{field}.{name}.{k}", reason=f"{k} is not supported by kroute")
                    for k in forwarding if k != "flushInterval"]  # fmt: skip
        elif name not in known and value not in _DEFAULTS.get(name, ()):
            why = _WHY.get(name, f"{name} is not supported by kroute yet")
            out.append(Refuse(f"{field}.{name}", reason=f"{name} {value!r}: {why}"))
    return tuple(out)

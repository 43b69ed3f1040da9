"""A Traefik Middleware object (traefik.io/v1alpha1, kind Middleware) -> its steps.

A Middleware's spec names exactly one type (Traefik refuses several: "multi-types middleware
not supported"; and none: "invalid middleware type"). The types kroute builds are listed in
`BUILT`; every other type of Traefik v3's MiddlewareSpec compiles to a `Refuse` step naming it,
so a route that uses it answers 500 and never forwards (docs/middlewares.md lists them); a
type Traefik does not have is a field error, as are malformed options.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs

from kroute.objects import FieldError, Obj, ObjectRef, as_map
from kroute.pipeline.filters import Refuse
from kroute.pipeline.registry import NO_FILTERS, Filters
from kroute.pipeline.steps import Step
from kroute.rules.middlewares import (
    basicauth,
    inflight,
    ipallowlist,
    paths,
    ratelimit,
    redirects,
    retry,
)
from kroute.rules.middlewares.breaker import circuit_breaker
from kroute.rules.middlewares.buffering import buffering
from kroute.rules.middlewares.compress import compress
from kroute.rules.middlewares.error_pages import error_pages
from kroute.rules.middlewares.forward_auth import forward_auth
from kroute.rules.middlewares.headers import headers
from kroute.rules.middlewares.plugin import plugin
from kroute.rules.middlewares.refs import Compiled, crd_refs

API_GROUPS = ("traefik.io", "traefik.containo.us")


Build = Callable[[Any, str, ObjectRef, bool], tuple[Step, ...]]


def _one(build: Callable[[Any, str], Step]) -> Build:
    return lambda spec, field, ref, cross: (build(spec, field),)


def _chain(spec: Any, field: str, ref: ObjectRef, cross: bool) -> tuple[Step, ...]:
    options = paths.options_of(spec, field, ("middlewares",))
    return crd_refs(options.get("middlewares"), f"{field}.middlewares", ref.namespace, cross)


BUILT: dict[str, Build] = {
    "stripPrefix": _one(paths.strip_prefix),
    "stripPrefixRegex": _one(paths.strip_prefix_regex),
    "addPrefix": _one(paths.add_prefix),
    "replacePath": _one(paths.replace_path),
    "replacePathRegex": _one(paths.replace_path_regex),
    "redirectScheme": _one(redirects.redirect_scheme),
    "redirectRegex": _one(redirects.redirect_regex),
    "headers": lambda spec, field, ref, cross: headers(spec, field),
    "chain": _chain,
    "ipAllowList": _one(ipallowlist.ip_allow_list),
    "ipWhiteList": _one(ipallowlist.ip_allow_list),  # (v2's name; deprecated in v3, still read)
    "rateLimit": _one(ratelimit.rate_limit),
    "inFlightReq": _one(inflight.in_flight),
    "retry": _one(retry.retry),
    "forwardAuth": _one(forward_auth),
    "circuitBreaker": _one(circuit_breaker),
    "compress": _one(compress),
    "buffering": _one(buffering),
    "errors": lambda spec, field, ref, cross: (error_pages(spec, field, ref, cross),),
}
#: The rest of Traefik v3's MiddlewareSpec: fail closed, for now.
#: The types kroute does not build, with why (the refusal says it).
NOT_YET = {
    "digestAuth": "kroute has no digest authentication (RFC 7616): use basicAuth over TLS, or "
    "forwardAuth",
    "passTLSClientCert": "kroute's TLS entry points do not ask clients for certificates",
    "contentType": "kroute does not sniff response bodies for a media type (Go's "
    "http.DetectContentType): the backend's Content-Type, or none, goes to the client",
    "grpcWeb": "kroute does not translate gRPC-Web to gRPC (its fronts speak HTTP/1.1)",
}


def compile_middleware(obj: Obj, ref: ObjectRef, allow_cross_namespace: bool,
                       secrets: basicauth.Secrets | None = None,
                       filters: Filters = NO_FILTERS) -> Compiled:  # fmt: skip
    """One Middleware; an invalid one carries its error (the field and why) instead of steps,
    so the routes that name it can say so. `secrets` are the Secrets by (namespace, name)
    (basicAuth reads its users there); `filters` the application's own steps (`plugin`)."""
    types: tuple[str, ...] = ()
    try:
        spec = as_map(obj.get("spec"), "spec")
        types = tuple(k for k in spec if spec[k] is not None)
        return attrs.evolve(_compile(spec, types, ref, allow_cross_namespace, secrets, filters),
                            types=types)  # fmt: skip
    except FieldError as exc:
        return Compiled(ref, error=exc, types=types)


def _compile(spec: Mapping[str, Any], types: tuple[str, ...], ref: ObjectRef, cross: bool,
             secrets: basicauth.Secrets | None, filters: Filters) -> Compiled:  # fmt: skip
    if len(types) != 1:
        raise FieldError("spec", f"a Middleware has exactly one type, found {len(types)}"
                         + (f" ({', '.join(types)})" if types else ""))  # fmt: skip
    kind = types[0]
    field = f"spec.{kind}"
    if kind in NOT_YET:
        step: Step = Refuse(field, reason=f"the {kind} middleware is not supported by "
                            f"kroute yet: {NOT_YET[kind]}")  # fmt: skip
        return Compiled(ref, (step,))
    if kind == "basicAuth":
        return Compiled(ref, (basicauth.basic_auth(spec[kind], field, ref, secrets or {}),))
    if kind == "plugin":
        return Compiled(ref, (plugin(spec[kind], field, filters),))
    build = BUILT.get(kind)
    if build is None:
        raise FieldError(field, f"unknown middleware type {kind!r}")
    return Compiled(ref, build(spec[kind], field, ref, cross))


def secret_of(obj: Obj) -> str | None:
    """The name of the Secret (in its namespace) a Middleware reads, or None."""
    spec = obj.get("spec")
    return basicauth.secret_name(spec.get("basicAuth")) if isinstance(spec, dict) else None

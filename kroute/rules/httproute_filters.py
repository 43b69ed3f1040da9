"""HTTPRoute filters (Gateway API v1.6 HTTPRouteFilter) -> a redirect and a chain of steps.

Supported, at rule level and (except RequestRedirect) at backendRef level:
RequestHeaderModifier, ResponseHeaderModifier, RequestRedirect, URLRewrite, CORS
(`kroute.pipeline.cors`), RequestMirror (any number of them), ExtensionRef to a filter
the application registered (`group: kroute.dev`, `kind: Filter`) and to a Traefik Middleware
in the route's namespace (`group: traefik.io`, `kind: Middleware`: its steps, in its place,
`kroute.rules.middlewares`).

Everything else fails closed, as the spec requires of a filter that cannot be applied ("MUST
NOT be skipped", HTTPRouteFilter.ExtensionRef; "the implementation MUST ... return a 500",
HTTPRouteRule.Filters): a `Refuse` step in its place, so the rule answers 500 and never
forwards, and the compile result names the object, the field and why. That covers an
ExtensionRef to a filter not registered, to a Middleware that does not exist or cannot be
used, to an unknown group or kind;
a filter type kroute does not know; two filters of a type the spec allows once; RequestRedirect
with URLRewrite in one rule. Malformed values (a header name with a space, a status code the
spec does not allow) are field errors: the object is rejected, as the API server's validation
would have done.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import attrs

from kroute.objects import BackendRef, FieldError, as_int, as_list, as_map, as_str, req_str
from kroute.pipeline.cors import cors_filter
from kroute.pipeline.filters import (
    HeaderEdits,
    Mirror,
    Refuse,
    RequestHeaderModifier,
    ResponseHeaderModifier,
    Share,
    URLRewrite,
    edited_name,
    header_name,
    header_value,
)
from kroute.pipeline.registry import Filters
from kroute.pipeline.steps import Chain, Step
from kroute.rules.hostnames import check_hostname
from kroute.rules.middlewares.refs import MiddlewareRef
from kroute.rules.redirect import Redirect

#: HTTPRequestRedirectFilter.StatusCode: 301 and 302 (core), 303, 307 and 308 (extended).
_REDIRECT_STATUSES = (301, 302, 303, 307, 308)
#: Filter types the spec allows once per rule (HTTPRouteRule.Filters validation).
_ONCE = ("RequestHeaderModifier", "ResponseHeaderModifier", "RequestRedirect", "URLRewrite",
         "CORS")  # fmt: skip
KROUTE_GROUP = "kroute.dev"
T = TypeVar("T", Redirect, URLRewrite)
#: A BackendObjectReference (its map, its field) -> the BackendRef, with its `error` when the
#: route may not use it (`kroute.rules.gateway`: kind, port, ReferenceGrant).
ResolveRef = Callable[[Any, str], BackendRef]


def rule_filters(
    value: Any, field: str, filters: Filters, *, backend: bool = False, resolve: ResolveRef
) -> tuple[Redirect | None, Chain]:
    """A rule's (or with `backend`, a backendRef's) filters: its redirect and its steps.

    A URLRewrite or RequestRedirect with ReplacePrefixMatch carries `("", replacement)`: the
    caller fills in each match's path prefix (`with_prefix`)."""
    redirect = None
    steps: list[Step] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(as_list(value, field)):
        item_field = f"{field}[{i}]"
        item = as_map(raw, item_field)
        kind = req_str(item.get("type"), f"{item_field}.type")
        seen[kind] = seen.get(kind, 0) + 1
        if kind in _ONCE and seen[kind] > 1:
            steps.append(Refuse(item_field, reason=f"{kind} may appear only once in a rule"))
            continue
        if kind == "RequestHeaderModifier":
            edits = _edits(item.get("requestHeaderModifier"), f"{item_field}.requestHeaderModifier")
            steps.append(RequestHeaderModifier(item_field, edits=edits))
        elif kind == "ResponseHeaderModifier":
            spec_field = f"{item_field}.responseHeaderModifier"
            edits = _edits(item.get("responseHeaderModifier"), spec_field)
            steps.append(ResponseHeaderModifier(item_field, edits=edits))
        elif kind == "RequestRedirect" and not backend:
            spec_field = f"{item_field}.requestRedirect"
            redirect = _redirect(as_map(item.get("requestRedirect"), spec_field), spec_field)
        elif kind == "URLRewrite":
            steps.append(_rewrite(item.get("urlRewrite"), item_field))
        elif kind == "CORS":
            steps.append(cors_filter(item.get("cors"), item_field))
        elif kind == "ExtensionRef":
            steps.append(_extension(item.get("extensionRef"), item_field, filters))
        elif kind == "RequestMirror":
            steps.append(_mirror(item.get("requestMirror"), item_field, resolve))
        else:
            where = " in backendRefs[].filters" if backend else ""
            steps.append(Refuse(item_field, reason=f"filter type {kind}{where} is not "
                                "supported by kroute"))  # fmt: skip
    if redirect is not None and seen.get("URLRewrite"):
        steps.insert(0, Refuse(field, reason="RequestRedirect and URLRewrite cannot be used "
                               "together in one rule"))  # fmt: skip
    return redirect, Chain(tuple(steps))


def with_prefix(chain: Chain, redirect: Redirect | None, stem: str | None, field: str
                ) -> tuple[Chain, Redirect | None]:  # fmt: skip
    """The chain and redirect of one match: ReplacePrefixMatch replaces what the match's
    PathPrefix matched (`stem`); without a PathPrefix match it cannot apply (spec: the filter
    "MUST only be used with a PathPrefix match"), a field error."""
    rewrites = [s for s in chain.steps if isinstance(s, URLRewrite) and s.prefix is not None]
    needs = rewrites or (redirect is not None and redirect.prefix is not None)
    if not needs:
        return chain, redirect
    if stem is None:
        raise FieldError(f"{field}.filters", "ReplacePrefixMatch needs a PathPrefix match")
    if redirect is not None and redirect.prefix is not None:
        redirect = _evolve_prefix(redirect, stem)
    if rewrites:
        chain = Chain(tuple(
            _evolve_prefix(s, stem) if isinstance(s, URLRewrite) and s.prefix else s
            for s in chain.steps
        ))  # fmt: skip
    return chain, redirect


def _evolve_prefix(value: T, stem: str) -> T:
    assert value.prefix is not None
    return attrs.evolve(value, prefix=(stem, value.prefix[1]))


def _edits(value: Any, field: str) -> HeaderEdits:
    spec = as_map(value, field)

    def pairs(key: str) -> tuple[tuple[bytes, bytes], ...]:
        out = []
        for i, raw in enumerate(as_list(spec.get(key), f"{field}.{key}")):
            item = as_map(raw, f"{field}.{key}[{i}]")
            name = req_str(item.get("name"), f"{field}.{key}[{i}].name")
            value = as_str(item.get("value"), f"{field}.{key}[{i}].value") or ""
            out.append((edited_name(name, f"{field}.{key}[{i}].name"),
                        header_value(value, f"{field}.{key}[{i}].value")))  # fmt: skip
        return tuple(out)

    removed = tuple(
        header_name(req_str(n, f"{field}.remove[{i}]"), f"{field}.remove[{i}]")
        for i, n in enumerate(as_list(spec.get("remove"), f"{field}.remove"))
    )
    return HeaderEdits(set=pairs("set"), add=pairs("add"), remove=removed)


def _path_modifier(spec: Any, field: str) -> tuple[str | None, tuple[str, str] | None]:
    """HTTPPathModifier -> (full path, ("", prefix replacement))."""
    path = as_map(spec, field)
    if not path:
        return None, None
    path_type = path.get("type")
    if path_type == "ReplaceFullPath":
        return req_str(path.get("replaceFullPath"), f"{field}.replaceFullPath"), None
    if path_type == "ReplacePrefixMatch":
        return None, ("", req_str(path.get("replacePrefixMatch"), f"{field}.replacePrefixMatch"))
    raise FieldError(f"{field}.type", f"unknown path modifier {path_type!r}")


def _redirect(spec: Any, field: str) -> Redirect:
    scheme = as_str(spec.get("scheme"), f"{field}.scheme")
    if scheme not in (None, "http", "https"):
        raise FieldError(f"{field}.scheme", f"{scheme!r} is not http or https")
    hostname = as_str(spec.get("hostname"), f"{field}.hostname")
    if hostname is not None:
        hostname = check_hostname(hostname, f"{field}.hostname")
    port = spec.get("port")
    if port is not None:
        port = as_int(port, f"{field}.port", default=0, low=1, high=65535)
    status = as_int(spec.get("statusCode"), f"{field}.statusCode", default=302, low=301, high=308)
    if status not in _REDIRECT_STATUSES:
        raise FieldError(f"{field}.statusCode", f"{status} is not one of {_REDIRECT_STATUSES}")
    full_path, prefix = _path_modifier(spec.get("path"), f"{field}.path")
    return Redirect(status=status, scheme=scheme, hostname=hostname, port=port,
                    full_path=full_path, prefix=prefix)  # fmt: skip


def _rewrite(value: Any, field: str) -> URLRewrite:
    spec = as_map(value, f"{field}.urlRewrite")
    hostname = as_str(spec.get("hostname"), f"{field}.urlRewrite.hostname")
    if hostname is not None:
        hostname = check_hostname(hostname, f"{field}.urlRewrite.hostname")
    full_path, prefix = _path_modifier(spec.get("path"), f"{field}.urlRewrite.path")
    return URLRewrite(field, hostname=hostname, full_path=full_path, prefix=prefix)


def _mirror(value: Any, field: str, resolve: ResolveRef) -> Mirror:
    """HTTPRequestMirrorFilter: backendRef, and `percent` (0 to 100) or `fraction`
    (numerator <= denominator, denominator 100 by default), not both; neither means every
    request (the CRD's bounds and CEL rules, checked here as the API server would)."""
    spec_field = f"{field}.requestMirror"
    spec = as_map(value, spec_field)
    backend = resolve(as_map(spec.get("backendRef"), f"{spec_field}.backendRef"),
                      f"{spec_field}.backendRef")  # fmt: skip
    percent, fraction = spec.get("percent"), spec.get("fraction")
    if percent is not None and fraction is not None:
        raise FieldError(spec_field, "only one of percent and fraction may be set")
    share = Share()
    if percent is not None:
        share = Share(as_int(percent, f"{spec_field}.percent", default=0, low=0, high=100), 100)
    elif fraction is not None:
        spec = as_map(fraction, f"{spec_field}.fraction")
        if spec.get("numerator") is None:
            raise FieldError(f"{spec_field}.fraction.numerator", "required")
        numerator = as_int(spec.get("numerator"), f"{spec_field}.fraction.numerator",
                           default=0, low=0, high=2**31 - 1)  # fmt: skip
        denominator = as_int(spec.get("denominator"), f"{spec_field}.fraction.denominator",
                             default=100, low=1, high=2**31 - 1)  # fmt: skip
        if numerator > denominator:
            raise FieldError(f"{spec_field}.fraction",
                             "numerator must be less than or equal to denominator")  # fmt: skip
        share = Share(numerator, denominator)
    return Mirror(field, backend=backend, share=share)


def _extension(value: Any, field: str, filters: Filters) -> Step:
    spec = as_map(value, f"{field}.extensionRef")
    group = as_str(spec.get("group"), f"{field}.extensionRef.group") or ""
    kind = req_str(spec.get("kind"), f"{field}.extensionRef.kind")
    name = req_str(spec.get("name"), f"{field}.extensionRef.name")
    if (group, kind) == (KROUTE_GROUP, "Filter"):
        step = filters.step(name, field)
        if step is not None:
            return step
        known = ", ".join(filters.names()) or "none"
        return Refuse(field, reason=f"ExtensionRef: no filter named {name!r} is registered "
                      f"with the Router (registered: {known})")  # fmt: skip
    if group == "traefik.io" and kind == "Middleware":
        return MiddlewareRef(field, name=name)  # (the route's namespace: a local reference)
    return Refuse(field, reason=f"ExtensionRef: {kind} of group {group or '(core)'!r} is not "
                  "a filter kroute knows")  # fmt: skip

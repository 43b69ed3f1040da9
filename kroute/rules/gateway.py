"""Gateway API (gateway.networking.k8s.io/v1): Gateway listeners + HTTPRoutes -> routes.

Sources: `apis/v1/httproute_types.go` and `gateway_types.go` in kubernetes-sigs/gateway-api, and
its conformance tests. What is implemented:
- Gateways whose `gatewayClassName` is ours; their HTTP and HTTPS listeners, `allowedRoutes`
  (namespaces Same/All/Selector, kinds), decided in `kroute.rules.listeners`; each route carries
  the (port, HTTPS) of the listeners it is attached to, and is served on the entry points they
  bind to (`kroute.rules.entrypoints`, docs/entrypoints.md);
- HTTPRoute `parentRefs` (namespace, sectionName, port), hostname intersection with the listener,
  and listener isolation: a request whose host matches a more specific listener of the same
  Gateway and port is not routed by routes attached to a less specific one (GEP-1713);
- matches with their CRD defaults (no matches = one match of PathPrefix `/`; path type
  PathPrefix; header and query types Exact), only the first of several entries for one header
  (case-insensitive) or query name;
- precedence, per (hostname, match): the longest non-wildcard hostname, then the longest
  wildcard; Exact path, then RegularExpression, then PathPrefix by length (the regex rank is
  unspecified by the spec; this is Envoy Gateway's order); a method match; most header matches;
  most query matches; the oldest route; `{namespace}/{name}`; rule order; match order;
- backendRefs with weights (default 1, weight 0 takes nothing), cross-namespace references only
  where a ReferenceGrant allows them; an unusable reference keeps its share and answers 500;
  a RequestMirror's backendRef is checked alike, and an unusable one is not configured (no
  copies, a note), as HTTPRequestMirrorFilter.BackendRef says.
- rule `timeouts` and `retry` (`kroute.rules.policy`); `sessionPersistence` fails closed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from kroute.objects import (
    BackendRef,
    FieldError,
    Obj,
    ObjectRef,
    as_int,
    as_list,
    as_map,
    as_str,
    created_at,
    describe_age,
    req_str,
)
from kroute.pipeline.filters import Mirror, Refuse
from kroute.pipeline.steps import Chain
from kroute.rules.conditions import (
    Condition,
    HeaderIs,
    HeaderRegex,
    MethodIs,
    PathIs,
    PathPrefix,
    PathRegex,
    QueryIs,
    QueryRegex,
)
from kroute.rules.entrypoints import Attachment
from kroute.rules.hostnames import host_condition
from kroute.rules.httproute_filters import ResolveRef, rule_filters, with_prefix
from kroute.rules.listeners import (
    GROUP,
    GatewayContext,
    Listener,
    ParentOutcome,
    Parents,
    compile_listeners,
    granted_references,
    route_parents,
)
from kroute.rules.policy import rule_policy
from kroute.rules.regex import Regex, compile_regex
from kroute.rules.request import normalize_path
from kroute.rules.route import Family, Route

# Listener attachment lives in kroute.rules.listeners; these names stay importable from here.
__all__ = [
    "GROUP",
    "GatewayContext",
    "Listener",
    "ParentOutcome",
    "Parents",
    "compile_httproute",
    "compile_listeners",
    "granted_references",
    "route_parents",
]

METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")


def _string_matches(values: list[Any], field: str, kind: str) -> list[tuple[str, str, str | Regex]]:
    """(type, name, value or regex) for header or query matches; later duplicates are ignored."""
    out: list[tuple[str, str, str | Regex]] = []
    seen: set[str] = set()
    for k, value in enumerate(values):
        item_field = f"{field}[{k}]"
        item = as_map(value, item_field)
        name = req_str(item.get("name"), f"{item_field}.name")
        text = as_str(item.get("value"), f"{item_field}.value")
        if text is None:
            text = ""
        key = name.lower() if kind == "header" else name
        if key in seen:
            continue
        seen.add(key)
        match_type = item.get("type", "Exact")
        if match_type == "Exact":
            out.append(("Exact", key, text))
        elif match_type == "RegularExpression":
            out.append(("RegularExpression", key, _regex(text, f"{item_field}.value")))
        else:
            raise FieldError(
                f"{item_field}.type", f"unknown type {match_type!r} (Exact or RegularExpression)"
            )
    return out


def _regex(text: str, field: str) -> Regex:
    try:
        return compile_regex(text)
    except ValueError as exc:
        raise FieldError(field, str(exc)) from None


def _match(value: Any, field: str) -> tuple[list[Condition], tuple[int, ...], str]:
    """Conditions, precedence part and description of one HTTPRouteMatch."""
    match = as_map(value, field)
    path = as_map(match.get("path"), f"{field}.path")
    path_type = path.get("type", "PathPrefix")
    path_value = as_str(path.get("value"), f"{field}.path.value") or "/"
    conds: list[Condition] = []
    if path_type == "RegularExpression":
        conds.append(PathRegex(_regex(path_value, f"{field}.path.value"), full=True))
        path_rank, length = 1, len(path_value)
    elif path_type in ("Exact", "PathPrefix"):
        if not path_value.startswith("/"):
            raise FieldError(f"{field}.path.value", f"{path_value!r} must start with '/'")
        path_value = normalize_path(path_value)
        if path_type == "Exact":
            conds.append(PathIs(path_value))
            path_rank, length = 0, len(path_value)
        else:
            stem = path_value.rstrip("/")
            conds.append(PathPrefix(stem))
            path_value, path_rank, length = stem or "/", 2, len(stem) or 1
    else:
        raise FieldError(
            f"{field}.path.type",
            f"unknown path type {path_type!r} (Exact, PathPrefix or RegularExpression)",
        )
    method = match.get("method")
    if method is not None:
        if method not in METHODS:
            raise FieldError(f"{field}.method", f"{method!r} is not an HTTP method")
        conds.append(MethodIs(method))
    headers = _string_matches(
        as_list(match.get("headers"), f"{field}.headers"), f"{field}.headers", "header"
    )
    for _type, name, want in headers:
        conds.append(
            HeaderIs(name, want) if isinstance(want, str) else HeaderRegex(name, want, full=True)
        )
    queries = _string_matches(
        as_list(match.get("queryParams"), f"{field}.queryParams"), f"{field}.queryParams", "query"
    )
    for _type, name, want in queries:
        conds.append(
            QueryIs(name, want) if isinstance(want, str) else QueryRegex(name, want, full=True)
        )
    rank = (path_rank, -length, 0 if method else 1, -len(headers), -len(queries))
    text = f"{path_type} {path_value}" + (f", method {method}" if method else "")
    text += f", {len(headers)} header and {len(queries)} query matches"
    return conds, rank, text


def _backend_refs(
    values: list[Any], field: str, ref: ObjectRef, ctx: GatewayContext
) -> tuple[tuple[BackendRef, ...], tuple[Chain, ...]]:
    """The backends of a rule, and their own filters' chains (empty when none has filters)."""
    out = []
    chains = []
    for k, value in enumerate(values):
        item_field = f"{field}[{k}]"
        item = as_map(value, item_field)
        weight = as_int(
            item.get("weight"), f"{item_field}.weight", default=1, low=0, high=1_000_000
        )
        out.append(attrs.evolve(_service_ref(item, item_field, ref, ctx), weight=weight))
        _, chain = rule_filters(item.get("filters"), f"{item_field}.filters", ctx.filters,
                                backend=True, resolve=_resolver(ref, ctx))  # fmt: skip
        chains.append(chain)
    return tuple(out), (tuple(chains) if any(chains) else ())


def _service_ref(
    item: Mapping[str, Any], field: str, ref: ObjectRef, ctx: GatewayContext
) -> BackendRef:
    """A BackendObjectReference (a backendRef, a RequestMirror's backendRef) from HTTPRoute
    `ref`: its `error` says why it cannot be used (InvalidKind, RefNotPermitted)."""
    name = req_str(item.get("name"), f"{field}.name")
    namespace = as_str(item.get("namespace"), f"{field}.namespace") or ref.namespace
    group, kind = item.get("group", ""), item.get("kind", "Service")
    port_value = item.get("port")
    port = None
    if port_value is not None:
        port = as_int(port_value, f"{field}.port", default=0, low=1, high=65535)
    error = None
    if group != "" or kind != "Service":
        error = f"InvalidKind: backend kind {kind!r} of group {group!r} is not supported"
    elif port is None:
        raise FieldError(f"{field}.port", "required when the backend is a Service")
    elif namespace != ref.namespace and not (
        (ref.namespace, namespace, name) in ctx.grants
        or (ref.namespace, namespace, "") in ctx.grants
    ):
        error = f"RefNotPermitted: no ReferenceGrant in namespace {namespace} allows it"
    return BackendRef(namespace, name, port, error=error)


def _resolver(ref: ObjectRef, ctx: GatewayContext) -> ResolveRef:
    return lambda item, field: _service_ref(item, field, ref, ctx)


def _mirror_notes(ref: ObjectRef, chains: Sequence[Chain]) -> list[str]:
    """RequestMirror backends that cannot be used are not configured (the spec: "must be
    dropped"): the request is served, not copied, and the notes say so."""
    return [
        f"{ref}: {step.field}: RequestMirror to {step.backend} is not configured: "
        f"{step.backend.error}"
        for chain in chains
        for step in chain.steps
        if isinstance(step, Mirror) and step.backend.error is not None
    ]


def compile_httproute(
    obj: Obj, ref: ObjectRef, ctx: GatewayContext, parents: Parents, *, origin: str = ""
) -> tuple[list[Route], list[str]]:
    """The routes of one HTTPRoute, attached where `parents` (`route_parents`) says, and notes
    about it; FieldError on a malformed field."""
    created = created_at(obj)
    spec = as_map(obj.get("spec"), "spec")
    rules = []
    mirror_notes: list[str] = []
    for i, value in enumerate(as_list(spec.get("rules"), "spec.rules") or [{}]):
        field = f"spec.rules[{i}]"
        rule = as_map(value, field)
        matches = as_list(rule.get("matches"), f"{field}.matches") or [{}]
        compiled = [_match(m, f"{field}.matches[{j}]") for j, m in enumerate(matches)]
        backends, backend_chains = _backend_refs(
            as_list(rule.get("backendRefs"), f"{field}.backendRefs"),
            f"{field}.backendRefs",
            ref,
            ctx,
        )
        redirect, chain = rule_filters(rule.get("filters"), f"{field}.filters", ctx.filters,
                                       resolve=_resolver(ref, ctx))  # fmt: skip
        policy, refused = rule_policy(rule, field)
        chain = chain + _unsupported_fields(rule, field) + refused
        rules.append((field, compiled, backends, backend_chains, redirect, chain, policy))
        mirror_notes += _mirror_notes(ref, (chain, *backend_chains))
    attachments = parents.attached
    notes = [outcome.note() for outcome in parents.outcomes if not outcome.accepted]
    if attachments:  # (a route served by another implementation is not ours to judge)
        notes += mirror_notes
    # A route served the same way through several listeners (ports) is one route attached to
    # all of them: the entry points of each serve it.
    routes: dict[tuple[Any, ...], Route] = {}
    bound: dict[tuple[Any, ...], set[tuple[int, bool]]] = {}
    for hostname, isolation, listener in attachments:
        if hostname is None:
            host_conds: tuple[Condition, ...] = ()
            host_rank: tuple[int, int] = (2, 0)
            host_text = "any hostname"
        else:
            host_conds = (host_condition(hostname, any_depth=True),)
            wildcard = hostname.startswith("*.")
            host_rank = (1 if wildcard else 0, -len(hostname))
            host_text = ("wildcard" if wildcard else "exact") + f" hostname {hostname}"
        for i, (field, compiled, backends, backend_chains, redirect, chain, policy) in enumerate(
            rules
        ):
            for j, (conds, match_rank, match_text) in enumerate(compiled):
                # ReplacePrefixMatch replaces what this match's path prefix matched.
                stem = next((c.stem for c in conds if isinstance(c, PathPrefix)), None)
                match_chain, match_redirect = with_prefix(chain, redirect, stem, field)
                match_backend_chains = tuple(
                    with_prefix(c, None, stem, field)[0] for c in backend_chains
                )
                conditions = (*host_conds, *conds, *isolation)
                key = (conditions, i, j)
                bound.setdefault(key, set()).add(listener)
                if key in routes:
                    continue
                routes[key] = Route(
                    source=ref,
                    field=f"{field}.matches[{j}]",
                    conditions=conditions,
                    backends=backends,
                    precedence=(
                        Family.HTTPROUTE,
                        *host_rank,
                        *match_rank,
                        created,
                        f"{ref.namespace}/{ref.name}",
                        i,
                        j,
                    ),
                    why=f"{host_text}, {match_text}, {describe_age(created)}",
                    origin=origin,
                    redirect=match_redirect,
                    chain=match_chain,
                    backend_chains=match_backend_chains,
                    policy=policy,
                )
    return [attrs.evolve(route, attachment=Attachment(listeners=frozenset(bound[key])))
            for key, route in routes.items()], notes  # fmt: skip


#: HTTPRouteRule fields kroute does not implement yet: a rule that sets one answers 500.
_UNSUPPORTED_RULE_FIELDS = ("sessionPersistence",)


def _unsupported_fields(rule: Mapping[str, Any], field: str) -> Chain:
    return Chain(tuple(
        Refuse(f"{field}.{name}", reason=f"{name} is not supported by kroute yet")
        for name in _UNSUPPORTED_RULE_FIELDS
        if rule.get(name) is not None
    ))  # fmt: skip

"""Traefik IngressRoute (traefik.io/v1alpha1) -> routes, with the v3 rule language.

Matchers, as in traefik `pkg/muxer/http/matcher.go` (v3 syntax):
  Host(`h`)                 normalised host equals h (case-insensitive); v3.7 wildcards:
                            `*.example.com` (one label), `**.example.com` (any depth), and
                            `*` (every request, even one without a Host header)
  HostRegexp(`re`)          normalised host matches re (searched, not anchored)
  Path(`/p`)                path equals /p
  PathPrefix(`/p`)          path starts with /p, character-wise (`/foo` matches `/foobar`)
  PathRegexp(`re`)          path matches re (searched)
  Method(`GET`)             the request method (case-sensitive) equals the value upper-cased
  Header(`k`, `v`)          a value of header k equals v
  HeaderRegexp(`k`, `re`)   a value of header k matches re
  Query(`k`[, `v`])         a value of query parameter k equals v (absent v means "")
  QueryRegexp(`k`[, `re`])  a value of query parameter k matches re; one argument = Query(k)
  ClientIP(`ip or cidr`)    the client address is in the range
Matcher names are accepted as written, lower case, upper case or title case (traefik
`pkg/rules/parser.go`). An empty argument is an error in every matcher (`Host(``)`,
`Header(`k`, ``)`, ...): traefik `pkg/rules` `CheckRule` ("empty args for matcher"), which the
v3 muxer runs on every matcher before building it. Priority: `priority` when set and non-zero,
else the length of the rule text less 2 for each `Host(`**.…`)` (v3.7 `GetRulePriority` with
`muxer.DoubleWildcardPenalty`: "its stars do not count", so that it ranks below the `*.` form
and the exact hosts it covers); higher first. Traefik leaves equal priorities unordered; kroute
breaks ties by `{namespace}/{name}`, then route order, so that the same input always routes the
same way. `spec.entryPoints` and `spec.tls` say which entry points serve the routes
(`kroute.rules.entrypoints`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from kroute.errors import RuleSyntaxError
from kroute.objects import (
    FieldError,
    Obj,
    ObjectRef,
    as_int,
    as_list,
    as_map,
    req_str,
)
from kroute.pipeline.filters import Refuse
from kroute.pipeline.steps import Chain, Step
from kroute.rules.conditions import (
    AllOf,
    AnyOf,
    ClientIPIn,
    Condition,
    HeaderIs,
    HeaderRegex,
    HostAny,
    HostIs,
    HostRegex,
    HostWildcard,
    MethodIs,
    Not,
    PathIs,
    PathRegex,
    PathStartsWith,
    QueryIs,
    QueryRegex,
    to_dnf,
)
from kroute.rules.entrypoints import Attachment
from kroute.rules.expr import And, Call, Negation, Node, parse_rule
from kroute.rules.middlewares.refs import crd_refs
from kroute.rules.regex import Regex, compile_regex
from kroute.rules.request import normalize_host, normalize_path
from kroute.rules.route import Family, Route
from kroute.rules.traefik_backends import reference

API_GROUPS = ("traefik.io", "traefik.containo.us")

_ARITY = {
    "Host": (1,),
    "HostRegexp": (1,),
    "Path": (1,),
    "PathPrefix": (1,),
    "PathRegexp": (1,),
    "Method": (1,),
    "Header": (2,),
    "HeaderRegexp": (2,),
    "Query": (1, 2),
    "QueryRegexp": (1, 2),
    "ClientIP": (1,),
}
_SPELLINGS = {
    spelling: name
    for name in _ARITY
    for spelling in (name, name.lower(), name.upper(), name.lower().title())
}


def _regex(call: Call, text: str, rule: str) -> Regex:
    try:
        return compile_regex(text)
    except ValueError as exc:
        raise RuleSyntaxError(rule, call.position, f"{call.name}: {exc}") from None


def _path(call: Call, text: str, rule: str) -> str:
    if not text.startswith("/"):
        raise RuleSyntaxError(
            rule, call.position, f"{call.name}: path {text!r} does not start with '/'"
        )
    return normalize_path(text)


def _host(call: Call, text: str, rule: str) -> Condition:
    """Host: exact, or Traefik v3.7's wildcards (`*`, `*.suffix`, `**.suffix`; docs/rules.md).

    Traefik's Host never matches a request without a Host, except `*` (kroute issue 18); an
    empty `text` is refused before this (`_matcher`)."""
    if not text.isascii():
        raise RuleSyntaxError(rule, call.position, "Host: non-ASCII characters are not allowed")
    if text == "*":
        return HostAny()
    stars = 2 if text.startswith("**.") else 1 if text.startswith("*.") else 0
    if stars:
        suffix = normalize_host(text[stars + 1 :])
        if not suffix or "*" in suffix:
            raise RuleSyntaxError(rule, call.position, f"Host: {text!r} is not a wildcard name")
        return HostWildcard(suffix, any_depth=stars == 2)
    return HostIs(normalize_host(text))


def _matcher(call: Call, rule: str) -> Condition:
    name = _SPELLINGS.get(call.name)
    if name is None:
        raise RuleSyntaxError(rule, call.position, f"unknown matcher {call.name!r}")
    if len(call.args) not in _ARITY[name]:
        expected = " or ".join(str(n) for n in _ARITY[name])
        raise RuleSyntaxError(
            rule, call.position, f"{name} takes {expected} argument(s), got {len(call.args)}"
        )
    args = call.args
    if "" in args:
        k = args.index("")
        raise RuleSyntaxError(
            rule, call.position, f"{name}: argument {k + 1} is empty (Traefik refuses it)"
        )
    if name == "Host":
        return _host(call, args[0], rule)
    if name == "HostRegexp":
        return HostRegex(_regex(call, args[0], rule))
    if name == "Path":
        return PathIs(_path(call, args[0], rule))
    if name == "PathPrefix":
        return PathStartsWith(_path(call, args[0], rule))
    if name == "PathRegexp":
        return PathRegex(_regex(call, args[0], rule), full=False)
    if name == "Method":
        return MethodIs(args[0].upper())
    if name == "Header":
        return HeaderIs(args[0].lower(), args[1])
    if name == "HeaderRegexp":
        return HeaderRegex(args[0].lower(), _regex(call, args[1], rule), full=False)
    if name == "Query" or (name == "QueryRegexp" and len(args) == 1):
        return QueryIs(args[0], args[1] if len(args) == 2 else "")
    if name == "QueryRegexp":
        return QueryRegex(args[0], _regex(call, args[1], rule), full=False)
    try:
        return ClientIPIn((ipaddress.ip_network(args[0], strict=False),))
    except ValueError:
        raise RuleSyntaxError(
            rule, call.position, f"ClientIP: {args[0]!r} is not an IP address or CIDR range"
        ) from None


def rule_condition(rule: str) -> Condition:
    """The condition a Traefik rule expresses; RuleSyntaxError when it is not valid."""

    def build(node: Node) -> Condition:
        if isinstance(node, Call):
            return _matcher(node, rule)
        if isinstance(node, Negation):
            return Not(build(node.inner))
        parts = tuple(build(p) for p in node.parts)
        return AllOf(parts) if isinstance(node, And) else AnyOf(parts)

    return build(parse_rule(rule))


#: What each `Host(`**.…`)` takes off a rule's default priority (traefik v3.7
#: `pkg/muxer` `DoubleWildcardPenalty`: `len("**")`).
DOUBLE_WILDCARD_PENALTY = 2


def default_priority(rule: str) -> int:
    """Traefik v3.7's priority for a rule without one (`GetRulePriority`): its length, less
    `DOUBLE_WILDCARD_PENALTY` for each Host matcher with a `**.` value, negated or not (the
    Host values of the whole rule tree, as `Tree.ParseMatchers` lists them). `rule` parses."""

    def penalty(node: Node) -> int:
        if isinstance(node, Call):
            if _SPELLINGS.get(node.name) != "Host":
                return 0
            return sum(DOUBLE_WILDCARD_PENALTY for arg in node.args if arg.startswith("**."))
        if isinstance(node, Negation):
            return penalty(node.inner)
        return sum(penalty(part) for part in node.parts)

    return len(rule) - penalty(parse_rule(rule))


def compile_ingressroute(
    obj: Obj, ref: ObjectRef, *, allow_cross_namespace: bool = False, origin: str = ""
) -> list[Route]:
    """The routes of one IngressRoute; FieldError on the first malformed field or rule."""
    spec = as_map(obj.get("spec"), "spec")
    routes_value = as_list(spec.get("routes"), "spec.routes")
    if not routes_value:
        raise FieldError("spec.routes", "required: at least one route")
    attachment, tls_chain = _attachment(spec)
    routes = []
    for i, value in enumerate(routes_value):
        field = f"spec.routes[{i}]"
        raw = as_map(value, field)
        rule = req_str(raw.get("match"), f"{field}.match")
        if raw.get("kind", "Rule") != "Rule":
            raise FieldError(f"{field}.kind", f"{raw.get('kind')!r} is not 'Rule'")
        try:
            condition = rule_condition(rule)
        except RuleSyntaxError as exc:
            raise FieldError(f"{field}.match", str(exc)) from None
        explicit = as_int(
            raw.get("priority"), f"{field}.priority", default=0, low=-(2**31), high=2**63 - 1
        )
        priority = explicit or default_priority(rule)
        why = f"priority {priority}"
        if not explicit:
            less = len(rule) - priority
            why += (
                f" (rule length {len(rule)} less {less} for `**.` hosts)"
                if less
                else " (rule length)"
            )
        services = [
            reference(item, f"{field}.services[{k}]", ref.namespace, allow_cross_namespace)
            for k, item in enumerate(as_list(raw.get("services"), f"{field}.services"))
        ]
        backends = tuple(s.backend for s in services)
        refused = tuple(r for s in services for r in s.refused)
        refs = crd_refs(raw.get("middlewares"), f"{field}.middlewares", ref.namespace,
                        allow_cross_namespace)  # fmt: skip
        chain = tls_chain + _unsupported(raw, field) + Chain(refused + refs)
        backend_chains = (tuple(Chain(s.steps) for s in services)
                          if any(s.steps for s in services) else ())  # fmt: skip
        for k, alternative in enumerate(to_dnf(condition)):
            routes.append(
                Route(
                    source=ref,
                    field=field,
                    conditions=alternative,
                    backends=backends,
                    precedence=(
                        Family.INGRESSROUTE,
                        -priority,
                        f"{ref.namespace}/{ref.name}",
                        i,
                        k,
                    ),
                    why=why,
                    origin=origin,
                    chain=chain,
                    backend_chains=backend_chains,
                    attachment=attachment,
                )
            )
    return routes


#: The `spec.tls` fields kroute applies.
_TLS_APPLIED = frozenset({"secretName", "certResolver", "domains"})


def _attachment(spec: Mapping[str, Any]) -> tuple[Attachment | None, Chain]:
    """`spec.entryPoints` (none: every entry point, Traefik's default) and `spec.tls` (TLS
    entry points only: "the router is dedicated to HTTPS requests only", Traefik's routers
    page); a Refuse step for each `spec.tls` field kroute does not apply (`secretName` is
    loaded by `kroute.tls.certs`, `certResolver` and `domains` by `kroute.acme.plan`)."""
    listed = as_list(spec.get("entryPoints"), "spec.entryPoints")
    names = [req_str(n, f"spec.entryPoints[{i}]") for i, n in enumerate(listed)]
    tls = spec.get("tls")
    fields = as_map(tls, "spec.tls")
    refused = tuple(
        Refuse(f"spec.tls.{name}", reason=f"TLS {name} is not supported by kroute yet")
        for name in sorted(fields) if name not in _TLS_APPLIED
    )  # fmt: skip
    if not names and tls is None:
        return None, Chain(refused)
    return Attachment(frozenset(names) if names else None, tls=tls is not None), Chain(refused)


#: Fields of an IngressRoute route that kroute applies (`middlewares`:
#: `kroute.rules.middlewares`; its services': `kroute.rules.traefik_backends`); anything else
#: changes what a request goes through, so a route that sets it fails closed (answers 500) and
#: says why.
_ROUTE_FIELDS = frozenset({"match", "kind", "priority", "services", "middlewares"})
#: Fields set to the value that means what kroute does anyway.
_DEFAULTS = {"syntax": "v3"}


def _unsupported(route: Mapping[str, Any], field: str) -> Chain:
    """A Refuse step for each field of an IngressRoute route kroute does not apply."""
    steps: list[Step] = []
    for name, value in route.items():
        if name not in _ROUTE_FIELDS and (name not in _DEFAULTS or _DEFAULTS[name] != value):
            steps.append(Refuse(f"{field}.{name}", reason=f"{name} is not supported by kroute yet"))
    return Chain(tuple(steps))

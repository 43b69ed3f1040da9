"""TraefikService (traefik.io/v1alpha1) -> the backends and steps of the routes that name it.

An IngressRoute route names one with `services: [{kind: TraefikService, name}]` (a
`ServiceRef`); once every TraefikService is compiled, `TraefikServices.resolve` replaces each
reference by what it stands for, in kroute's own terms (Traefik v3 docs, "TraefikService"):

- `weighted` (`services` with `weight`s, nested TraefikServices): its Services become backends
  of the route, weighted by their share of the whole tree (a Service with weight 1 of 3 in a
  service with weight 2 of 4 of the route gets 1/3 x 2/4), so the route's one weighted split
  gives each the traffic Traefik's nested round robins would; `sticky.cookie` keeps a client on
  the child it was sent to: each backend under a sticky weighted service carries that cookie
  and its child's value (`BackendRef.stuck`, Traefik's value: `traefik_hash` of the child's
  name), and the route's choice honours it (`kroute.gateway.router.decisions`);
- `mirroring` (a main service, `mirrors` with `percent`): the main service's backends, each with
  a RequestMirror step per mirror (`kroute.gateway.mirror`: fire and forget, a share of the
  requests), run when that backend is chosen. A request's body is copied up to `maxBodySize`
  bytes (a larger one: the request is not copied, as Traefik; -1, Traefik's unlimited, is
  `MIRROR_BODY_CAP`), none with `mirrorBody: false` (such a request is not copied). A mirror
  naming a TraefikService spreads its copies over the
  Services that one comes to, by their shares (`Mirror.spread`);
- `failover` (`service`, `fallback`: Services): one backend whose `fallback` takes the requests
  while the main Service has no usable endpoint (none ready, or every one out of rotation by
  its health checks: docs/pools.md); `errors.status` (retry on the fallback after an answer)
  fails closed.

A TraefikService that does not exist, is invalid, or is reached again through itself (a cycle)
makes the route fail closed, naming both; the invalid object is also reported on its own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

import attrs

from kroute.objects import (
    BackendRef,
    FieldError,
    Obj,
    ObjectRef,
    StickyCookie,
    as_int,
    as_list,
    as_map,
    traefik_hash,
)
from kroute.pipeline.filters import Mirror, Refuse, Share
from kroute.pipeline.steps import EMPTY, Chain, Step
from kroute.rules.middlewares.paths import options_of
from kroute.rules.route import Route
from kroute.rules.traefik_backends import KIND, Reference, ServiceRef, reference, sticky_cookie

#: The largest request body a mirror copies when `maxBodySize` is Traefik's -1 ("unlimited"):
#: a copy keeps the body in memory until it is sent, so kroute bounds it.
MIRROR_BODY_CAP = 1 << 20
#: Largest weight a resolved backend gets (shares are exact fractions, scaled to integers).
MAX_WEIGHT = 1_000_000


@attrs.frozen
class Compiled:
    """A TraefikService compiled: its `kind` (weighted, mirroring, failover) and references,
    the steps its main service's backends get (mirrors), what of it fails closed; or `error`."""

    ref: ObjectRef
    kind: str = ""
    references: tuple[Reference, ...] = ()
    steps: tuple[Step, ...] = ()
    refused: tuple[Refuse, ...] = ()
    error: FieldError | None = attrs.field(default=None, eq=False)
    #: A weighted service's sticky cookie (`weighted.sticky.cookie`).
    sticky: StickyCookie | None = None


def compile_traefik_service(obj: Obj, ref: ObjectRef, cross_namespace: bool) -> Compiled:
    """One TraefikService; an invalid one carries its error instead (the field and why)."""
    try:
        spec = as_map(obj.get("spec"), "spec")
        kinds = [k for k in spec if spec[k] is not None]
        if len(kinds) != 1 or kinds[0] not in _BUILD:
            raise FieldError("spec", "a TraefikService is exactly one of weighted, mirroring, "
                             f"failover; found {', '.join(kinds) or 'none'}")  # fmt: skip
        kind = kinds[0]
        return _BUILD[kind](as_map(spec[kind], f"spec.{kind}"), f"spec.{kind}", ref,
                            cross_namespace)  # fmt: skip
    except FieldError as exc:
        return Compiled(ref, error=exc)


def _weighted(spec: Mapping[str, Any], field: str, ref: ObjectRef, cross: bool) -> Compiled:
    items = as_list(spec.get("services"), f"{field}.services")
    references = tuple(reference(v, f"{field}.services[{i}]", ref.namespace, cross)
                       for i, v in enumerate(items))  # fmt: skip
    refused = tuple(Refuse(f"{field}.{k}", reason=f"{k} is not supported by kroute")
                    for k, v in spec.items() if k not in ("services", "sticky")
                    and v is not None)  # fmt: skip
    sticky = sticky_cookie(spec.get("sticky"), f"{field}.sticky", _name(ref).replace("/", "-"))
    return Compiled(ref, "weighted", references, refused=refused, sticky=sticky)


def _mirroring(spec: Mapping[str, Any], field: str, ref: ObjectRef, cross: bool) -> Compiled:
    # Which bodies are copied: up to maxBodySize (-1, Traefik's "unlimited": MIRROR_BODY_CAP),
    # none with mirrorBody false.
    limit = as_int(spec.get("maxBodySize"), f"{field}.maxBodySize", default=-1, low=-1,
                   high=2**63 - 1)  # fmt: skip
    copies_body = spec.get("mirrorBody", True)
    if not isinstance(copies_body, bool):
        raise FieldError(f"{field}.mirrorBody", "expected a boolean")
    limit = (MIRROR_BODY_CAP if limit < 0 else limit) if copies_body else 0
    main = reference(spec, field, ref.namespace, cross, frozenset({"mirrors", "maxBodySize",
                                                                   "mirrorBody"}))  # fmt: skip
    steps: list[Step] = []
    refused = list(main.refused)
    for i, value in enumerate(as_list(spec.get("mirrors"), f"{field}.mirrors")):
        where = f"{field}.mirrors[{i}]"
        mirror = reference(value, where, ref.namespace, cross, frozenset({"percent"}))
        percent = as_int(as_map(value, where).get("percent"), f"{where}.percent", default=0,
                         low=0, high=100)  # fmt: skip
        refused += mirror.refused
        if mirror.backend.error is not None and not isinstance(mirror.backend, ServiceRef):
            refused.append(Refuse(where, reason=mirror.backend.error))
        elif mirror.steps:
            refused.append(Refuse(f"{where}.middlewares", reason="a mirror's middlewares are "
                                  "not supported by kroute"))  # fmt: skip
        else:
            steps.append(Mirror(where, backend=mirror.backend, share=Share(percent, 100),
                                body_limit=limit))  # fmt: skip
    return Compiled(ref, "mirroring", (main,), tuple(steps), tuple(refused))


def _failover(spec: Mapping[str, Any], field: str, ref: ObjectRef, cross: bool) -> Compiled:
    # `healthCheck: {}` asks Traefik to tell parents of the failover's health; kroute's failover
    # follows its Services' health whatever it says (it has no fields).
    options_of(spec, field, ("service", "fallback", "healthCheck", "errors"))
    options_of(spec.get("healthCheck"), f"{field}.healthCheck", ())
    main = reference(spec.get("service"), f"{field}.service", ref.namespace, cross)
    fallback = reference(spec.get("fallback"), f"{field}.fallback", ref.namespace, cross)
    refused = [*main.refused, *fallback.refused]
    for name, item in (("service", main), ("fallback", fallback)):
        if isinstance(item.backend, ServiceRef) or item.steps:
            refused.append(Refuse(f"{field}.{name}", reason="kroute's failover takes a Service "
                                  "without middlewares"))  # fmt: skip
    errors = options_of(spec.get("errors"), f"{field}.errors", ("status", "maxRequestBodyBytes"))
    if as_list(errors.get("status"), f"{field}.errors.status"):
        refused.append(Refuse(f"{field}.errors.status", reason="failing over on the main "
                              "service's answer is not supported by kroute (only while it has "
                              "no usable endpoint)"))  # fmt: skip
    backend = attrs.evolve(main.backend, fallback=fallback.backend)
    return Compiled(ref, "failover", (Reference(backend),), refused=tuple(refused))


_BUILD = {"weighted": _weighted, "mirroring": _mirroring, "failover": _failover}

#: A resolved backend: the backend, its share of the reference, the steps it adds when chosen.
Share_ = tuple[BackendRef, Fraction, tuple[Step, ...]]


def _name(ref: ObjectRef) -> str:
    return f"{ref.namespace}/{ref.name}"


def _child(backend: BackendRef) -> str:
    """A weighted service's child as Traefik names it (`namespace-name-port` for a Service,
    `namespace-name` for a TraefikService): what its sticky value hashes."""
    port = "" if backend.port is None else f"-{backend.port}"
    return f"{backend.namespace}-{backend.name}{port}"


class TraefikServices:
    """Every compiled TraefikService, by namespace and name."""

    def __init__(self, compiled: Sequence[Compiled]) -> None:
        self._by_ref = {(c.ref.namespace, c.ref.name): c for c in compiled}

    def expand(self, ref: ServiceRef, trail: tuple[ObjectRef, ...] = ()
               ) -> tuple[list[Share_], list[Refuse]]:  # fmt: skip
        """The backends `ref` stands for with their shares (summing to 1, or no backend), and
        what fails closed on the way (naming the route's reference `ref.field`)."""
        within = "".join(f"{_name(r)} > " for r in trail)
        found = self._by_ref.get((ref.namespace, ref.name))
        if found is None:
            why = f"{within}{KIND} {ref.namespace}/{ref.name} does not exist"
            return [], [Refuse(ref.field, reason=why)]
        where = within + _name(found.ref)
        if found.ref in trail:
            return [], [Refuse(ref.field, reason=f"{KIND} cycle: {where}")]
        if found.error is not None:
            why = f"{KIND} {where} is invalid: {found.error.field}: {found.error.reason}"
            return [], [Refuse(ref.field, reason=why)]
        refused = [Refuse(ref.field, reason=f"{KIND} {where} ({r.field}): {r.reason}")
                   for r in found.refused]  # fmt: skip
        total = sum(r.backend.weight for r in found.references)
        out: list[Share_] = []
        for item in found.references:
            if total == 0 or item.backend.weight == 0:
                continue
            share = Fraction(item.backend.weight, total)
            mirrors = [self._mirror(s, ref.field, (*trail, found.ref), refused)
                       for s in found.steps]  # fmt: skip
            steps = tuple(attrs.evolve(s, field=f"{ref.field}: {KIND} {where} ({s.field})")
                          for s in (*item.steps, *mirrors))  # fmt: skip
            if isinstance(item.backend, ServiceRef):
                nested, more_refused = self.expand(attrs.evolve(item.backend, field=ref.field),
                                                   (*trail, found.ref))  # fmt: skip
                refused += more_refused
                leaves = [(b, share * s, steps + more) for b, s, more in nested]
            else:
                leaves = [(item.backend, share, steps)]
            if found.sticky is not None:  # (this child's value, before those further in)
                value = ((found.sticky, traefik_hash(_child(item.backend))),)
                leaves = [(attrs.evolve(b, stuck=value + b.stuck), s, t) for b, s, t in leaves]
            out += leaves
        return out, refused

    def _mirror(self, step: Step, field: str, trail: tuple[ObjectRef, ...],
                refused: list[Refuse]) -> Step:  # fmt: skip
        """`step`, a mirror to a TraefikService resolved: its copies spread over the Services
        the TraefikService comes to, by their shares (Traefik's mirror target balances them);
        what cannot be (middlewares or mirrors of its own, a missing service) added to
        `refused`, the mirror left unresolved (it copies nothing)."""
        if not isinstance(step, Mirror) or not isinstance(step.backend, ServiceRef):
            return step
        found, why = self.expand(attrs.evolve(step.backend, field=field), trail)
        within = f"{KIND} {_name(trail[-1])} ({step.field}): mirror target: "
        refused += [attrs.evolve(r, reason=within + r.reason) for r in why]
        if any(steps for _, _, steps in found):
            refused.append(Refuse(field, reason=f"{within}its services' middlewares and "
                                  "mirrors are not supported by kroute"))  # fmt: skip
            return step
        if why or not found:
            return step
        weights = _integers([share for _, share, _ in found])
        spread = tuple(attrs.evolve(b, weight=w, stuck=())
                       for (b, _, _), w in zip(found, weights, strict=True) if w)  # fmt: skip
        return attrs.evolve(step, backend=attrs.evolve(step.backend, error=None), spread=spread)

    def resolve(self, routes: Sequence[Route]) -> list[Route]:
        """The routes with every ServiceRef replaced by its backends (alternatives of one rule
        share their resolution)."""
        done: dict[tuple[int, int], tuple[Any, ...]] = {}
        out = []
        for route in routes:
            if not any(isinstance(b, ServiceRef) for b in route.backends):
                out.append(route)
                continue
            key = (id(route.backends), id(route.backend_chains))
            if key not in done:
                done[key] = (route.backends, *self._resolved(route))
            _, backends, chains, refused = done[key]
            out.append(attrs.evolve(route, backends=backends, backend_chains=chains,
                                    chain=route.chain + refused))  # fmt: skip
        return out

    def _resolved(self, route: Route) -> tuple[tuple[BackendRef, ...], tuple[Chain, ...], Chain]:
        shares: list[tuple[BackendRef, Fraction, Chain]] = []
        refused: list[Refuse] = []
        chains = route.backend_chains or (EMPTY,) * len(route.backends)
        for backend, chain in zip(route.backends, chains, strict=True):
            if not isinstance(backend, ServiceRef):
                shares.append((backend, Fraction(backend.weight), chain))
                continue
            found, why = self.expand(backend)
            refused += why
            shares += [(b, backend.weight * s, chain + Chain(steps)) for b, s, steps in found]
        weights = _integers([s for _, s, _ in shares])
        pairs = zip(shares, weights, strict=True)
        backends = tuple(attrs.evolve(b, weight=w) for (b, _, _), w in pairs)
        out_chains = tuple(c for _, _, c in shares)
        return backends, (out_chains if any(out_chains) else ()), Chain(tuple(refused))


def _integers(shares: Sequence[Fraction]) -> list[int]:
    """Integer weights in the proportions of `shares`: exact when they fit in MAX_WEIGHT, else
    rounded (a positive share keeps at least 1)."""
    scale = math.lcm(*(s.denominator for s in shares)) if shares else 1
    exact = [int(s * scale) for s in shares]
    top = max(exact, default=0)
    if top <= MAX_WEIGHT:
        divisor = math.gcd(*exact) or 1
        return [w // divisor for w in exact]
    return [max(1, round(w * MAX_WEIGHT / top)) if w else 0 for w in exact]

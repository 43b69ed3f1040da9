"""References to Traefik Middlewares from routes, and their resolution into steps.

Routes name Middlewares three ways (Traefik v3 docs, "Kubernetes IngressRoute & Traefik CRD",
"Kubernetes Ingress" annotations, "Kubernetes Gateway API" ExtensionRef):
- an IngressRoute route's `middlewares: [{name, namespace}]` (and a `chain` middleware's
  `middlewares`): the namespace defaults to the referring object's; another namespace only with
  `allow_cross_namespace` (Traefik's `allowCrossNamespace` provider option, off by default);
  a name with `@` is Traefik's provider-qualified form (`makeMiddlewareKeys` in traefik
  `pkg/provider/kubernetes/crd`): `<namespace>-<name>@kubernetescrd` only when cross-namespace
  references are allowed, any other provider is not one kroute has;
- the Ingress annotation `traefik.ingress.kubernetes.io/router.middlewares:
  <namespace>-<name>@kubernetescrd,...` (Traefik's global names, any namespace);
- an HTTPRoute ExtensionRef filter (`group: traefik.io`, `kind: Middleware`): the route's own
  namespace (a LocalObjectReference).

Compilers put a `MiddlewareRef` step where the reference is; `resolve` (called by
`kroute.rules.compile` once every Middleware is compiled) replaces it by the Middleware's
steps, in place, so the order of steps is the order of references, a chain expanding where it
is named. A reference that cannot be resolved (no such Middleware, an invalid one, a cycle of
chains) becomes a `Refuse` step naming both objects: the route answers 500 and never forwards.
A MiddlewareRef that is never resolved fails closed the same way (it is a `Refuse`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from kroute.objects import FieldError, ObjectRef, as_list, as_map, as_str, req_str
from kroute.pipeline.filters import Refuse
from kroute.pipeline.steps import Chain, Step
from kroute.rules.route import Route

PROVIDER = "kubernetescrd"
_CROSS = "cross-namespace references are disabled (Traefik's allowCrossNamespace)"


@attrs.frozen
class MiddlewareRef(Refuse):
    """Where a route names a Middleware: `namespace`/`name`, the namespace None for the
    referring object's own; with `by_id`, `name` is Traefik's `<namespace>-<name>`."""

    reason: str = attrs.field(default="the Middleware reference was not resolved", kw_only=True)
    name: str = attrs.field(kw_only=True)
    namespace: str | None = attrs.field(default=None, kw_only=True)
    by_id: bool = attrs.field(default=False, kw_only=True)

    @property
    def label(self) -> str:
        return f"Middleware {self.describe(None)} ({self.field})"

    def describe(self, namespace: str | None) -> str:
        if self.by_id:
            return f"{self.name}@{PROVIDER}"
        return f"{self.namespace or namespace or '?'}/{self.name}"


def crd_refs(value: Any, field: str, namespace: str, allow_cross_namespace: bool
             ) -> tuple[Step, ...]:  # fmt: skip
    """`middlewares: [{name, namespace}]` of an object in `namespace` -> a step each."""
    out: list[Step] = []
    for i, raw in enumerate(as_list(value, field)):
        where = f"{field}[{i}]"
        item = as_map(raw, where)
        name = req_str(item.get("name"), f"{where}.name")
        other = as_str(item.get("namespace"), f"{where}.namespace")
        if "@" in name:
            out.append(_qualified(name, where, allow_cross_namespace))
        elif other and other != namespace and not allow_cross_namespace:
            out.append(Refuse(where, reason=f"Middleware {other}/{name} is not in namespace "
                              f"{namespace}, and {_CROSS}"))  # fmt: skip
        else:
            out.append(MiddlewareRef(where, name=name, namespace=other or namespace))
    return tuple(out)


def _qualified(name: str, field: str, allow_cross_namespace: bool) -> Step:
    base, _, provider = name.rpartition("@")
    if provider != PROVIDER:
        return Refuse(field, reason=f"Middleware {name!r}: provider {provider!r} does not "
                      f"exist in kroute (only {PROVIDER} Middlewares do)")  # fmt: skip
    if not allow_cross_namespace:
        return Refuse(field, reason=f"Middleware {name!r}: the <namespace>-<name>@{PROVIDER} "
                      f"form may name another namespace, and {_CROSS}: give the namespace "
                      "field instead")  # fmt: skip
    return MiddlewareRef(field, name=base, by_id=True)


def annotation_refs(value: str, field: str) -> tuple[Step, ...]:
    """`router.middlewares: <namespace>-<name>@kubernetescrd,...` -> a step each."""
    out: list[Step] = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            raise FieldError(field, f"{value!r}: an empty Middleware name")
        base, mark, provider = item.rpartition("@")
        if not mark or provider != PROVIDER:
            out.append(Refuse(field, reason=f"Middleware {item!r}: only <namespace>-<name>@"
                              f"{PROVIDER} Middlewares exist in kroute"))  # fmt: skip
        else:
            out.append(MiddlewareRef(field, name=base, by_id=True))
    return tuple(out)


def _name(ref: ObjectRef) -> str:
    return f"{ref.namespace}/{ref.name}"


@attrs.frozen
class Compiled:
    """A Middleware compiled: its steps in order (a chain's are MiddlewareRefs), or `error`
    (the field at fault and why) when the object is invalid; `types` are its spec's keys."""

    ref: ObjectRef
    steps: tuple[Step, ...] = ()
    error: FieldError | None = attrs.field(default=None, eq=False)
    types: tuple[str, ...] = ()


@attrs.frozen
class Usage:
    """What the admin API shows of a Middleware: its types, the routes whose steps it gave
    (directly or through chains), its error when invalid, and what of it fails closed."""

    ref: ObjectRef
    types: tuple[str, ...]
    routes: tuple[str, ...]
    error: str | None
    refused: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"namespace": self.ref.namespace, "name": self.ref.name,
                "types": list(self.types), "routes": list(self.routes), "error": self.error,
                "refused": list(self.refused)}  # fmt: skip


class Middlewares:
    """Every compiled Middleware, by namespace and name and by Traefik's id."""

    def __init__(self, compiled: Sequence[Compiled]) -> None:
        self._by_ref: dict[tuple[str, str], Compiled] = {}
        self._by_id: dict[str, list[Compiled]] = {}
        self._compiled = tuple(compiled)
        #: The Middlewares `steps` reached since it was last reset (`resolve` records which
        #: routes each one serves).
        self._reached: set[ObjectRef] = set()
        self._routes: dict[ObjectRef, set[str]] = {}
        for item in compiled:
            self._by_ref[(item.ref.namespace, item.ref.name)] = item
            self._by_id.setdefault(f"{item.ref.namespace}-{item.ref.name}", []).append(item)

    def steps(self, ref: MiddlewareRef, namespace: str, trail: tuple[ObjectRef, ...] = (),
              field: str = "") -> tuple[Step, ...]:  # fmt: skip
        """The steps `ref` (from an object in `namespace`) stands for, labelled with where the
        route names it (`field`: the route's reference, for a chain's own); a Refuse naming the
        Middleware when it cannot be used. `trail` is the chains it is reached through."""
        field = field or ref.field
        found = self._find(ref, namespace)
        within = "".join(f"{_name(r)} > " for r in trail)
        if isinstance(found, str):
            return (Refuse(field, reason=within + found),)
        where = within + _name(found.ref)
        self._reached.add(found.ref)
        if found.ref in trail:
            return (Refuse(field, reason=f"Middleware chain cycle: {where}"),)
        if found.error is not None:
            error = found.error
            why = f"Middleware {where} is invalid: {error.field}: {error.reason}"
            return (Refuse(field, reason=why),)
        out: list[Step] = []
        for step in found.steps:
            if isinstance(step, MiddlewareRef):
                out += self.steps(step, found.ref.namespace, (*trail, found.ref), field)
            elif isinstance(step, Refuse):
                out.append(Refuse(field, reason=f"Middleware {where} ({step.field}): "
                                  f"{step.reason}"))  # fmt: skip
            else:
                out.append(attrs.evolve(step, field=f"{field}: Middleware {where}"))
        return tuple(out)

    def _find(self, ref: MiddlewareRef, namespace: str) -> Compiled | str:
        if ref.by_id:
            found = self._by_id.get(ref.name, [])
            if len(found) > 1:
                names = " and ".join(_name(c.ref) for c in found)
                return f"Middleware {ref.name}@{PROVIDER} is ambiguous: {names} both have it"
            if found:
                return found[0]
        else:
            item = self._by_ref.get((ref.namespace or namespace, ref.name))
            if item is not None:
                return item
        return f"Middleware {ref.describe(namespace)} does not exist"

    def resolve(self, routes: Sequence[Route]) -> list[Route]:
        """The routes with every MiddlewareRef replaced by its steps (alternatives of one rule
        share their chains: each chain is resolved once)."""
        done: dict[int, tuple[Chain, frozenset[ObjectRef]]] = {}
        kept: list[Chain] = []  # (the ids stay valid while the chains are alive)
        reached: set[ObjectRef] = set()  # (by the route being resolved)

        def resolved(chain: Chain, namespace: str) -> Chain:
            if not any(isinstance(s, MiddlewareRef) for s in chain.steps):
                return chain
            found = done.get(id(chain))
            if found is None:
                self._reached = set()
                steps = [s for step in chain.steps
                         for s in (self.steps(step, namespace) if isinstance(step, MiddlewareRef)
                                   else (step,))]  # fmt: skip
                kept.append(chain)
                found = done[id(chain)] = (Chain(tuple(steps)), frozenset(self._reached))
            reached.update(found[1])
            return found[0]

        out = []
        for route in routes:
            ns = route.source.namespace
            reached.clear()
            chain = resolved(route.chain, ns)
            backends = tuple(resolved(c, ns) for c in route.backend_chains)
            for ref in reached:
                self._routes.setdefault(ref, set()).add(route.name)
            changed = (a is not b for a, b in zip(backends, route.backend_chains, strict=True))
            if chain is not route.chain or any(changed):
                route = attrs.evolve(route, chain=chain, backend_chains=backends)
            out.append(route)
        return out

    def usage(self) -> tuple[Usage, ...]:
        """Each Middleware with the routes `resolve` gave its steps to, by namespace/name."""
        out = []
        for item in sorted(self._compiled, key=lambda c: (c.ref.namespace, c.ref.name)):
            error = None if item.error is None else f"{item.error.field}: {item.error.reason}"
            refused = tuple(f"{s.field}: {s.reason}" for s in item.steps
                            if type(s) is Refuse)  # (a chain's MiddlewareRefs are not)  # fmt: skip
            routes = tuple(sorted(self._routes.get(item.ref, ())))
            out.append(Usage(item.ref, item.types, routes, error, refused))
        return tuple(out)

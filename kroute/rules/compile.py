"""Objects -> a RouteTable, one object at a time: a bad object is reported, the rest route.

This is the one entry point from Kubernetes objects (however they were obtained: manifest files,
the API server, a test) to routing. It sorts the objects by kind, decides which Ingresses and
Gateways are ours, runs each family's compiler per object, and collects `InvalidObject` errors
and notes instead of stopping at the first problem.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any, TypeVar

import attrs

from kroute.errors import InvalidObject
from kroute.objects import FieldError, Manifest, Obj, ObjectRef, object_ref
from kroute.pipeline.filters import Refuse
from kroute.pipeline.registry import NO_FILTERS, Filters
from kroute.rules import gateway, ingress, middlewares, traefik, traefik_services
from kroute.rules.entrypoints import EntryPoint, unserved_names
from kroute.rules.middlewares import breaker, retry
from kroute.rules.route import Family, Route
from kroute.rules.table import RouteTable

DEFAULT_CLASS = "kroute"
_TRAEFIK_KINDS = ("IngressRoute", "Middleware", "TraefikService")
T = TypeVar("T")


class CompileCache:
    """What each object compiled to last time, reused while the object is the same dict and
    its context is unchanged.

    Stores keep the dict of an object that did not change (watch events replace only the
    object they name), so after one change a rebuild compiles that object and re-indexes the
    table instead of compiling every object again (docs/benchmarks.md: an Ingress change with
    10,000 objects loaded).
    Entries not used by a compile are dropped after it; so is the state kept across
    rebuilds (`keep`).
    """

    def __init__(self) -> None:
        self._entries: dict[tuple[str, int], tuple[Obj, Any, Any]] = {}
        self._used: dict[tuple[str, int], tuple[Obj, Any, Any]] = {}
        self._kept: dict[Hashable, Any] = {}
        self._kept_used: dict[Hashable, Any] = {}
        self.hits = 0
        self.misses = 0

    def get(self, kind: str, obj: Obj, context: Any, compute: Callable[[], T]) -> T:
        key = (kind, id(obj))
        entry = self._entries.get(key)
        if entry is not None and entry[0] is obj and entry[1] == context:
            self.hits += 1
        else:
            self.misses += 1
            entry = (obj, context, compute())
        self._used[key] = entry
        result: T = entry[2]
        return result

    def keep(self, key: Hashable, make: Callable[[], T]) -> T:
        """State that outlives a rebuild (a route's circuit breaker, `breaker.per_route`):
        what `key` (a value: the route, the step, its settings) was given at the last compile,
        else `make()`; like the compiled objects, kept only while each compile asks for it."""
        found = self._kept.get(key)
        if found is None:
            found = make()
        self._kept_used[key] = found
        result: T = found
        return result

    def finish(self) -> None:
        self._entries, self._used = self._used, {}
        self._kept, self._kept_used = self._kept_used, {}


def _uncached(kind: str, obj: Obj, context: Any, compute: Callable[[], T]) -> T:
    return compute()


@attrs.frozen
class CompileResult:
    """The table, the objects rejected (each with its reason) and notes worth a look.

    `refused` names what routes are configured to do that kroute cannot (a filter, a
    middleware, a field): those routes fail closed, answering 500 instead of forwarding
    (`kroute.pipeline.Refuse`), and each is listed here with its object, field and reason.
    """

    table: RouteTable
    errors: tuple[InvalidObject, ...] = ()
    notes: tuple[str, ...] = ()
    refused: tuple[InvalidObject, ...] = ()
    #: What each HTTPRoute parentRef to one of our Gateways came to (`kroute.status` reads it).
    parents: tuple[gateway.ParentOutcome, ...] = ()
    #: Each Traefik Middleware: its types, the routes using it, its error (the admin API).
    middlewares: tuple[middlewares.Usage, ...] = ()
    _tables: dict[str, RouteTable] = attrs.field(factory=dict, eq=False, repr=False)

    def table_for(self, entry_point: EntryPoint) -> RouteTable:
        """The routes `entry_point` serves (`kroute.rules.entrypoints`), made once per entry
        point name; `table` itself when it serves every route."""
        table = self._tables.get(entry_point.name)
        if table is None:
            routes = self.table.routes
            served = [r for r in routes if r.attachment is None or r.attachment.admits(entry_point)]
            table = self.table if len(served) == len(routes) else RouteTable(served)
            self._tables[entry_point.name] = table
        return table


def _api_group(obj: Obj) -> str:
    api_version = obj.get("apiVersion")
    return api_version.rpartition("/")[0] if isinstance(api_version, str) else ""


def _untyped(obj: Obj) -> str | None:
    """The field that leaves an object's type unknown ("kind", "apiVersion"), or None."""
    for field in ("kind", "apiVersion"):
        value = obj.get(field)
        if not isinstance(value, str) or not value:
            return field
    return None


def _describe(obj: Obj) -> str:
    kind = obj.get("kind") if isinstance(obj.get("kind"), str) else "object"
    meta = obj.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    if not isinstance(name, str):
        return f"{kind} (unnamed)"
    namespace = meta.get("namespace") if isinstance(meta, dict) else None
    return f"{kind} {namespace or 'default'}/{name}"


class _Collector:
    def __init__(self) -> None:
        self.routes: list[Route] = []
        self.errors: list[InvalidObject] = []
        self.notes: list[str] = []
        self.parents: list[gateway.ParentOutcome] = []

    def reject(self, item: Manifest, exc: FieldError, ref: ObjectRef | None = None) -> None:
        name = str(ref) if ref is not None else _describe(item.obj)
        self.errors.append(InvalidObject(name, exc.field, exc.reason, origin=item.origin))


def compile_objects(
    objects: Iterable[Obj | Manifest],
    *,
    ingress_class: str = DEFAULT_CLASS,
    gateway_class: str = DEFAULT_CLASS,
    allow_cross_namespace: bool = False,
    cache: CompileCache | None = None,
    filters: Filters = NO_FILTERS,
    entry_points: Sequence[EntryPoint] | None = None,
) -> CompileResult:
    """Compile every routing object among `objects` into one RouteTable.

    Kinds read: Ingress and IngressClass (networking.k8s.io), Gateway, HTTPRoute and
    ReferenceGrant (gateway.networking.k8s.io), Namespace (labels, for listener selectors),
    IngressRoute, Middleware and TraefikService (traefik.io, or the older traefik.containo.us):
    what routes name of the Middlewares becomes their steps, in place, and of the
    TraefikServices their backends (and mirrors); Secret (core v1), which basicAuth
    Middlewares read their users from. `allow_cross_namespace` is
    Traefik's provider option: IngressRoutes (and chains) may name Services and Middlewares
    of other namespaces. Other kinds are ignored; an
    object without a kind or apiVersion is reported, never dropped unexplained.
    With a `cache` (kept between calls), objects that did not change are not compiled again.
    `filters` are the application's own steps, which routes may name (`kroute.pipeline`).
    With `entry_points`, the notes also name what no entry point serves (a Gateway listener
    on a port none listens on, an entry point name none has).
    """
    cached = cache.get if cache is not None else _uncached
    out = _Collector()
    by_kind: dict[str, list[Manifest]] = {}
    for item in objects:
        manifest = item if isinstance(item, Manifest) else Manifest(item)
        kind = manifest.obj.get("kind")
        group = _api_group(manifest.obj)
        unknown = _untyped(manifest.obj)
        if unknown is not None:  # nothing may vanish unexplained (a real list's items did)
            out.reject(manifest, FieldError(unknown, "missing: what kind of object is this?"))
        elif (
            kind in ("IngressRoute", "Middleware", "TraefikService") and group in traefik.API_GROUPS
        ):
            by_kind.setdefault(kind, []).append(manifest)
        elif kind == "Ingress" and group == "extensions":  # removed in 1.22; reported
            by_kind.setdefault("Ingress", []).append(manifest)
        elif isinstance(kind, str) and group in ("networking.k8s.io", gateway.GROUP, ""):
            by_kind.setdefault(kind, []).append(manifest)
    _compile_ingresses(by_kind, out, ingress_class, cached)
    listeners = _compile_gateway_api(by_kind, out, gateway_class, cached, filters)
    for item in by_kind.get("IngressRoute", []):
        ref = None
        try:
            ref = object_ref(item.obj)
            out.routes.extend(cached(
                "IngressRoute", item.obj, (allow_cross_namespace, item.origin),
                _attempt(functools.partial(
                    traefik.compile_ingressroute, item.obj, ref,
                    allow_cross_namespace=allow_cross_namespace, origin=item.origin)),
            ).unwrap())  # fmt: skip
        except FieldError as exc:
            out.reject(item, exc, ref)
    services = _compile_traefik_services(by_kind, out, allow_cross_namespace, cached)
    table = _compile_middlewares(by_kind, out, allow_cross_namespace, cached, filters)
    keep = cache.keep if cache is not None else None
    routes = table.resolve(services.resolve(out.routes))
    out.routes, retried = retry.apply(breaker.per_route(routes, keep))
    out.notes.extend(retried)
    if cache is not None:
        cache.finish()
    if entry_points is not None:
        out.notes.extend(_unserved(out.routes, listeners, entry_points))
    return CompileResult(RouteTable(out.routes), tuple(out.errors), tuple(out.notes),
                         refusals(out.routes), tuple(out.parents), table.usage())  # fmt: skip


def _unserved(
    routes: Sequence[Route], listeners: Sequence[gateway.Listener], points: Sequence[EntryPoint]
) -> list[str]:
    """Notes for what no entry point serves: listeners and entry point names."""
    notes = []
    for lst in listeners:
        if lst.accepts_httproute and not any(e.binds(lst.port, lst.tls) for e in points):
            kind = "terminates TLS" if lst.tls else "serves plain HTTP"
            notes.append(f"{lst.gateway}: listener {lst.name!r} (port {lst.port}): no entry "
                         f"point that {kind} listens on port {lst.port}: routes attached to "
                         "it are served nowhere")  # fmt: skip
    named = set()
    for r in routes:
        if r.attachment is not None and r.attachment.names is not None:
            field = ("spec.entryPoints" if r.family == Family.INGRESSROUTE
                     else f"metadata.annotations[{ingress.ENTRYPOINTS_ANNOTATION}]")  # fmt: skip
            named.add((str(r.source), field, r.attachment.names))
    return notes + unserved_names(sorted(named, key=str), points)


def refusals(routes: Iterable[Route]) -> tuple[InvalidObject, ...]:
    """Each Refuse step of the routes, once per object and field (alternatives of one rule
    share their steps)."""
    found: dict[tuple[str, str, str], InvalidObject] = {}
    for route in routes:
        chains = (route.chain, *route.backend_chains)
        for step in (s for chain in chains for s in chain.steps if isinstance(s, Refuse)):
            key = (str(route.source), step.field, step.reason)
            if key not in found:
                reason = f"answers 500: {step.reason}"
                found[key] = InvalidObject(key[0], step.field, reason, origin=route.origin)
    return tuple(found.values())


@attrs.frozen
class _Outcome:
    """A compiler's result or the FieldError it raised (both are cached alike)."""

    value: Any = None
    error: FieldError | None = None
    ref: ObjectRef | None = None  # the object, when it got as far as naming itself

    def unwrap(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value


def _attempt(compile_one: Callable[[], Any]) -> Callable[[], _Outcome]:
    def run() -> _Outcome:
        try:
            return _Outcome(compile_one())
        except FieldError as exc:
            return _Outcome(error=exc)

    return run


Cached = Callable[[str, Obj, Any, Callable[[], _Outcome]], _Outcome]


def _compile_middlewares(
    by_kind: dict[str, list[Manifest]], out: _Collector, cross_namespace: bool, cached: Cached,
    filters: Filters,
) -> middlewares.Middlewares:  # fmt: skip
    """Every Middleware compiled (`kroute.rules.middlewares`); an invalid one is reported
    here, and the routes that name it fail closed saying why."""
    secrets = _secrets(by_kind)

    def build(item: Manifest, ref: ObjectRef) -> tuple[Any, Callable[[], Any]]:
        read = middlewares.secret_of(item.obj)  # (its Secret is part of what it compiles from)
        secret = secrets.get((ref.namespace, read)) if read else None
        return ((cross_namespace, item.origin, read, secret, filters),
                functools.partial(middlewares.compile_middleware, item.obj, ref,
                                  cross_namespace, secrets, filters))  # fmt: skip

    return middlewares.Middlewares(_each(by_kind, out, "Middleware", cached, build))


def _compile_traefik_services(
    by_kind: dict[str, list[Manifest]], out: _Collector, cross_namespace: bool, cached: Cached
) -> traefik_services.TraefikServices:
    """Every TraefikService compiled (`kroute.rules.traefik_services`), reported and failing
    closed as Middlewares do."""

    def build(item: Manifest, ref: ObjectRef) -> tuple[Any, Callable[[], Any]]:
        return ((cross_namespace, item.origin),
                functools.partial(traefik_services.compile_traefik_service, item.obj, ref,
                                  cross_namespace))  # fmt: skip

    return traefik_services.TraefikServices(_each(by_kind, out, "TraefikService", cached, build))


def _each(by_kind: dict[str, list[Manifest]], out: _Collector, kind: str, cached: Cached,
          build: Callable[[Manifest, ObjectRef], tuple[Any, Callable[[], Any]]]
          ) -> list[Any]:  # fmt: skip
    """Each object of `kind` compiled (cached by the context `build` gives with the compiler);
    what compiled with an `error` is reported, and kept: routes naming it say why."""
    compiled = []
    for item in by_kind.get(kind, []):
        try:
            ref = object_ref(item.obj)
        except FieldError as exc:
            out.reject(item, exc)
            continue
        context, compile_one = build(item, ref)
        one = cached(kind, item.obj, context, _attempt(compile_one)).unwrap()
        if one.error is not None:
            out.reject(item, one.error, ref)
        compiled.append(one)
    return compiled


def _secrets(by_kind: dict[str, list[Manifest]]) -> dict[tuple[str, str], Obj]:
    """The Secrets (core v1) by (namespace, name), which Middlewares may read (basicAuth)."""
    out = {}
    for item in by_kind.get("Secret", []):
        meta = item.obj.get("metadata")
        if _api_group(item.obj) == "" and isinstance(meta, dict):
            name, namespace = meta.get("name"), meta.get("namespace") or "default"
            if isinstance(name, str) and isinstance(namespace, str):
                out[(namespace, name)] = item.obj
    return out


def _compile_ingresses(
    by_kind: dict[str, list[Manifest]], out: _Collector, name: str, cached: Cached
) -> None:
    classes = [
        m.obj for m in by_kind.get("IngressClass", []) if _api_group(m.obj) == "networking.k8s.io"
    ]
    defaults = ingress.default_classes(classes)
    context = (name, frozenset(defaults) if defaults is not None else None)
    for item in by_kind.get("Ingress", []):
        # The whole per-object work (reference, class, routes) is cached: an unchanged Ingress
        # costs one look-up on a rebuild.
        outcome = cached("Ingress", item.obj, (item.origin, context),
                         functools.partial(_one_ingress, item, name, defaults))  # fmt: skip
        if outcome.error is not None:
            out.reject(item, outcome.error, outcome.ref)
        elif outcome.value:
            out.routes.extend(outcome.value)


def _one_ingress(item: Manifest, name: str, defaults: set[str] | None) -> _Outcome:
    """An Ingress's routes ([] when another class serves it), or its FieldError."""
    ref = None
    try:
        ref = object_ref(item.obj)
        if item.obj.get("apiVersion") != ingress.API_VERSION:
            raise FieldError(
                "apiVersion", f"{item.obj.get('apiVersion')!r} is not {ingress.API_VERSION}"
            )
        if not ingress.serves(item.obj, ingress_class=name, defaults=defaults):
            return _Outcome([])
        return _Outcome(ingress.compile_ingress(item.obj, ref, origin=item.origin))
    except FieldError as exc:
        return _Outcome(error=exc, ref=ref)


def _compile_gateway_api(
    by_kind: dict[str, list[Manifest]], out: _Collector, name: str, cached: Cached,
    filters: Filters,
) -> list[gateway.Listener]:  # fmt: skip
    """Compile the HTTPRoutes into `out`; the listeners of our Gateways."""
    listeners: list[gateway.Listener] = []
    for item in _of_group(by_kind, "Gateway", gateway.GROUP):
        ref = None
        try:
            ref = object_ref(item.obj)
            spec = item.obj.get("spec")
            if isinstance(spec, dict) and spec.get("gatewayClassName") == name:
                listeners.extend(gateway.compile_listeners(item.obj, ref))
        except FieldError as exc:
            out.reject(item, exc, ref)
    if not listeners:
        return listeners
    grants = [m.obj for m in _of_group(by_kind, "ReferenceGrant", gateway.GROUP)]
    namespaces = [m.obj for m in _of_group(by_kind, "Namespace", "")]
    ctx = gateway.GatewayContext.build(listeners, grants, namespaces, filters)
    # An HTTPRoute's routes depend on every Gateway, grant and namespace: the context is
    # their identity (the objects themselves, so that no id is reused while compared).
    gateways = tuple(m.obj for m in _of_group(by_kind, "Gateway", gateway.GROUP))
    context = (filters, *map(_Same, (*gateways, *grants, *namespaces)))
    for item in _of_group(by_kind, "HTTPRoute", gateway.GROUP):
        ref = None
        try:
            ref = object_ref(item.obj)
        except FieldError as exc:
            out.reject(item, exc, ref)
            continue
        outcome = cached("HTTPRoute", item.obj, (name, item.origin, context),
                         functools.partial(_one_httproute, item, ref, ctx))  # fmt: skip
        parents, routes, notes = outcome.value
        out.parents.extend(parents)
        if outcome.error is not None:
            out.reject(item, outcome.error, ref)
            continue
        out.routes.extend(routes)
        out.notes.extend(notes)
    return listeners


def _one_httproute(item: Manifest, ref: ObjectRef, ctx: gateway.GatewayContext) -> _Outcome:
    """(parent outcomes, routes, notes) of an HTTPRoute, and its FieldError if any: the parents
    come first, so that status reports them even when a rule is malformed."""
    try:
        parents = gateway.route_parents(item.obj, ref, ctx)
    except FieldError as exc:
        return _Outcome(((), [], []), error=exc)
    try:
        routes, notes = gateway.compile_httproute(item.obj, ref, ctx, parents, origin=item.origin)
    except FieldError as exc:
        return _Outcome((parents.outcomes, [], []), error=exc)
    return _Outcome((parents.outcomes, routes, notes))


class _Same:
    """Compares by identity: an object in a cache context."""

    __slots__ = ("obj",)

    def __init__(self, obj: Obj) -> None:
        self.obj = obj

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Same) and other.obj is self.obj

    def __hash__(self) -> int:
        return id(self.obj)


def _of_group(by_kind: dict[str, list[Manifest]], kind: str, group: str) -> Sequence[Manifest]:
    return [m for m in by_kind.get(kind, []) if _api_group(m.obj) == group]

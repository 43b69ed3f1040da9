"""Objects -> a RouteTable, one object at a time: a bad object is reported, the rest route.

This is the one entry point from Kubernetes objects (however they were obtained: manifest files,
the API server, a test) to routing. It sorts the objects by kind, decides which Ingresses and
Gateways are ours, runs each family's compiler per object, and collects `InvalidObject` errors
and notes instead of stopping at the first problem.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import attrs

from kroute.errors import InvalidObject
from kroute.objects import FieldError, Manifest, Obj, ObjectRef, object_ref
from kroute.rules import gateway, ingress, traefik
from kroute.rules.route import Route
from kroute.rules.table import RouteTable

DEFAULT_CLASS = "kroute"


@attrs.frozen
class CompileResult:
    """The table, the objects rejected (each with its reason) and notes worth a look."""

    table: RouteTable
    errors: tuple[InvalidObject, ...] = ()
    notes: tuple[str, ...] = ()


def _api_group(obj: Obj) -> str:
    api_version = obj.get("apiVersion")
    return api_version.rpartition("/")[0] if isinstance(api_version, str) else ""


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

    def reject(self, item: Manifest, exc: FieldError, ref: ObjectRef | None = None) -> None:
        name = str(ref) if ref is not None else _describe(item.obj)
        self.errors.append(InvalidObject(name, exc.field, exc.reason, origin=item.origin))


def compile_objects(
    objects: Iterable[Obj | Manifest],
    *,
    ingress_class: str = DEFAULT_CLASS,
    gateway_class: str = DEFAULT_CLASS,
    allow_cross_namespace: bool = False,
) -> CompileResult:
    """Compile every routing object among `objects` into one RouteTable.

    Kinds read: Ingress and IngressClass (networking.k8s.io), Gateway, HTTPRoute and
    ReferenceGrant (gateway.networking.k8s.io), Namespace (labels, for listener selectors) and
    IngressRoute (traefik.io, or the older traefik.containo.us). Everything else is ignored.
    """
    by_kind: dict[str, list[Manifest]] = {}
    for item in objects:
        manifest = item if isinstance(item, Manifest) else Manifest(item)
        kind = manifest.obj.get("kind")
        group = _api_group(manifest.obj)
        if kind == "IngressRoute" and group in traefik.API_GROUPS:
            by_kind.setdefault("IngressRoute", []).append(manifest)
        elif kind == "Ingress" and group == "extensions":  # removed in 1.22; reported
            by_kind.setdefault("Ingress", []).append(manifest)
        elif isinstance(kind, str) and group in ("networking.k8s.io", gateway.GROUP, ""):
            by_kind.setdefault(kind, []).append(manifest)
    out = _Collector()
    _compile_ingresses(by_kind, out, ingress_class)
    _compile_gateway_api(by_kind, out, gateway_class)
    for item in by_kind.get("IngressRoute", []):
        ref = None
        try:
            ref = object_ref(item.obj)
            out.routes.extend(
                traefik.compile_ingressroute(
                    item.obj, ref, allow_cross_namespace=allow_cross_namespace, origin=item.origin
                )
            )
        except FieldError as exc:
            out.reject(item, exc, ref)
    return CompileResult(RouteTable(out.routes), tuple(out.errors), tuple(out.notes))


def _compile_ingresses(by_kind: dict[str, list[Manifest]], out: _Collector, name: str) -> None:
    classes = [
        m.obj for m in by_kind.get("IngressClass", []) if _api_group(m.obj) == "networking.k8s.io"
    ]
    defaults = ingress.default_classes(classes)
    for item in by_kind.get("Ingress", []):
        ref = None
        try:
            ref = object_ref(item.obj)
            if item.obj.get("apiVersion") != ingress.API_VERSION:
                raise FieldError(
                    "apiVersion", f"{item.obj.get('apiVersion')!r} is not {ingress.API_VERSION}"
                )
            if ingress.serves(item.obj, ingress_class=name, defaults=defaults):
                out.routes.extend(ingress.compile_ingress(item.obj, ref, origin=item.origin))
        except FieldError as exc:
            out.reject(item, exc, ref)


def _compile_gateway_api(by_kind: dict[str, list[Manifest]], out: _Collector, name: str) -> None:
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
        return
    ctx = gateway.GatewayContext.build(
        listeners,
        [m.obj for m in _of_group(by_kind, "ReferenceGrant", gateway.GROUP)],
        [m.obj for m in _of_group(by_kind, "Namespace", "")],
    )
    for item in _of_group(by_kind, "HTTPRoute", gateway.GROUP):
        ref = None
        try:
            ref = object_ref(item.obj)
            routes, notes = gateway.compile_httproute(item.obj, ref, ctx, origin=item.origin)
        except FieldError as exc:
            out.reject(item, exc, ref)
            continue
        out.routes.extend(routes)
        out.notes.extend(notes)


def _of_group(by_kind: dict[str, list[Manifest]], kind: str, group: str) -> Sequence[Manifest]:
    return [m for m in by_kind.get(kind, []) if _api_group(m.obj) == group]

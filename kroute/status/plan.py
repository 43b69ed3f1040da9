"""Which objects kroute answers for, and the status each should have: the entry point.

`plan_status` takes the objects (as a watch store or manifest files give them) and returns, per
object, the status to write; a writer writes those marked `changed` and nothing else, so that
however many events arrive, an object whose status would not change costs no write.

Whose objects (docs/status.md): Ingresses of kroute's IngressClass (`kroute.rules.ingress`),
when addresses are published; the GatewayClass named as kroute's (`gateway_class`) when its
controllerName is kroute's; Gateways of that class (unless a GatewayClass of that name names
another controller); HTTPRoutes' parentRefs to those Gateways.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from kroute.errors import InvalidObject
from kroute.objects import FieldError, Manifest, Obj, ObjectRef, object_ref
from kroute.rules import ingress
from kroute.rules.compile import CompileResult, compile_objects
from kroute.rules.listeners import GROUP, ParentOutcome, granted_references
from kroute.rules.route import Route
from kroute.status.conditions import Status, merge_status, withdraw_status
from kroute.status.gateway import GatewayInputs, gateway_class_status, gateway_status
from kroute.status.httproute import httproute_status
from kroute.status.values import StatusSettings, StatusUpdate, mapping


@attrs.frozen
class Desired:
    """The status one object should have; `status` None: kroute's parts of it should go."""

    obj: Obj
    ref: ObjectRef
    status: Status | None


def plan_status(
    objects: Iterable[Obj | Manifest],
    settings: StatusSettings = StatusSettings(),
    *,
    now: datetime.datetime,
    compiled: CompileResult | None = None,
) -> list[StatusUpdate]:
    """The status kroute would write, per object it has something to say about, in the order
    of `objects`: each object's current `status` merged with what it should be (`now` stamps
    the conditions whose status changes). `compiled` is the CompileResult of the same objects
    with the same settings, when the caller has it (a Router does); otherwise it is made."""
    items = [item.obj if isinstance(item, Manifest) else item for item in objects]
    out = []
    for want in desired_statuses(items, settings, compiled=compiled):
        update = update_for(want, settings, now=now)
        if update is not None:
            out.append(update)
    return out


def update_for(
    want: Desired, settings: StatusSettings, *, now: datetime.datetime
) -> StatusUpdate | None:
    """`want` merged into the status its object has (or kroute's parts withdrawn), or None when
    kroute has nothing to say about it. A writer that read the object again after a conflict
    calls this with the fresh object in `want.obj`: the same decision on what is there now."""
    current = want.obj.get("status")
    current = current if isinstance(current, dict) else None
    if want.status is None:
        new = withdraw_status(want.ref.kind, current, controller_name=settings.controller_name,
                              addresses=settings.addresses.for_ingress())  # fmt: skip
    else:
        new = merge_status(want.ref.kind, current, want.status, now,
                           controller_name=settings.controller_name)  # fmt: skip
    if new is None and (want.status is None or not any(want.status.values())):
        return None  # nothing of kroute's there, nothing to put there
    version = mapping(want.obj.get("metadata")).get("resourceVersion")
    return StatusUpdate(
        str(want.obj.get("apiVersion")), want.ref.kind, want.ref.namespace, want.ref.name,
        new if new is not None else current or {}, new is not None,
        version if isinstance(version, str) else None,
    )  # fmt: skip


def desired_statuses(
    objects: Sequence[Obj], settings: StatusSettings, *, compiled: CompileResult | None = None
) -> list[Desired]:
    """What each object kroute answers for should have, before merging (see `plan_status`)."""
    if compiled is None:
        compiled = compile_objects(objects, ingress_class=settings.ingress_class,
                                   gateway_class=settings.gateway_class,
                                   entry_points=settings.entry_points)  # fmt: skip
    index = _Index(objects, compiled)
    ours = _our_gateways(index, settings)
    found: dict[int, Desired] = {}
    attached: dict[tuple[ObjectRef, str], set[ObjectRef]] = {}
    for obj, ref in index.of("HTTPRoute", GROUP):
        outcomes = [o for o in index.parents.get(ref, []) if o.gateway in ours]
        status, accepted = httproute_status(
            outcomes, index.routes.get(ref, []), index.error(ref), index.refused.get(str(ref), []),
            index.by_name("Service", ""), settings, object_generation(obj))  # fmt: skip
        for outcome in accepted:
            for listener in outcome.listeners:
                attached.setdefault((outcome.gateway, listener), set()).add(ref)
        found[id(obj)] = Desired(obj, ref, status)
    inputs = GatewayInputs(
        settings, {key: len(routes) for key, routes in attached.items()},
        index.by_name("Secret", ""),
        granted_references([o for o, _ in index.of("ReferenceGrant", GROUP)], "Gateway", "Secret"),
    )  # fmt: skip
    for obj, ref in index.of("Gateway", GROUP):
        if ref in ours:
            error = index.error(ref)
            reason = None if error is None else f"{error.field}: {error.reason}"
            status = gateway_status(obj, ref, object_generation(obj), reason, inputs)
            found[id(obj)] = Desired(obj, ref, status)
    for obj, ref in index.of("GatewayClass", GROUP, namespaced=False):
        if ref.name == settings.gateway_class and _controller(obj) == settings.controller_name:
            found[id(obj)] = Desired(obj, ref, gateway_class_status(obj, object_generation(obj)))
    if settings.addresses:
        for obj, ref in index.of("Ingress", "networking.k8s.io"):
            served = _serves_ingress(obj, index, settings) and index.error(ref) is None
            status = {"loadBalancer": {"ingress": settings.addresses.for_ingress()}}
            found[id(obj)] = Desired(obj, ref, status if served else None)
    return [found[id(obj)] for obj in objects if id(obj) in found]


class _Index:
    """The objects by kind, and the compile's results by object."""

    def __init__(self, objects: Sequence[Obj], compiled: CompileResult) -> None:
        self.objects = objects
        self.errors = {e.obj: e for e in compiled.errors}
        self.refused: dict[str, list[InvalidObject]] = {}
        for item in compiled.refused:
            self.refused.setdefault(item.obj, []).append(item)
        self.routes: dict[ObjectRef, list[Route]] = {}
        for route in compiled.table.routes:
            self.routes.setdefault(route.source, []).append(route)
        self.parents: dict[ObjectRef, list[ParentOutcome]] = {}
        for outcome in compiled.parents:
            self.parents.setdefault(outcome.route, []).append(outcome)

    def of(self, kind: str, group: str, *, namespaced: bool = True) -> list[tuple[Obj, ObjectRef]]:
        out = []
        for obj in self.objects:
            version = obj.get("apiVersion")
            if obj.get("kind") != kind or not isinstance(version, str):
                continue
            if version.rpartition("/")[0] != group:
                continue
            try:
                out.append((obj, object_ref(obj, namespaced=namespaced)))
            except FieldError:
                continue  # compile_objects reports it
        return out

    def by_name(self, kind: str, group: str) -> dict[tuple[str, str], Obj]:
        return {(ref.namespace, ref.name): obj for obj, ref in self.of(kind, group)}

    def error(self, ref: ObjectRef) -> InvalidObject | None:
        return self.errors.get(str(ref))


def _our_gateways(index: _Index, settings: StatusSettings) -> set[ObjectRef]:
    """Gateways of kroute's class, unless a GatewayClass of that name names another controller
    (then that controller answers for them)."""
    classes = {ref.name: obj for obj, ref in index.of("GatewayClass", GROUP, namespaced=False)}
    cls = classes.get(settings.gateway_class)
    if cls is not None and _controller(cls) != settings.controller_name:
        return set()
    return {ref for obj, ref in index.of("Gateway", GROUP)
            if _spec(obj).get("gatewayClassName") == settings.gateway_class}  # fmt: skip


def _serves_ingress(obj: Obj, index: _Index, settings: StatusSettings) -> bool:
    classes = [o for o, _ in index.of("IngressClass", "networking.k8s.io", namespaced=False)]
    try:
        return ingress.serves(obj, ingress_class=settings.ingress_class,
                              defaults=ingress.default_classes(classes))  # fmt: skip
    except FieldError:
        return False


def _spec(obj: Obj) -> Mapping[str, Any]:
    return mapping(obj.get("spec"))


def _controller(obj: Obj) -> Any:
    return _spec(obj).get("controllerName")


def object_generation(obj: Obj) -> int | None:
    """`metadata.generation` (None when absent or not an integer)."""
    value = mapping(obj.get("metadata")).get("generation")
    return value if isinstance(value, int) and not isinstance(value, bool) else None

"""Gateway API listeners and route attachment: which listeners an HTTPRoute's parentRefs reach.

Kept apart from the HTTPRoute compiler (`kroute.rules.gateway`) because two readers need the
same decision: routing (the hostnames and listeners a route is served under) and status
(`kroute.status`: each parentRef's Accepted condition and each listener's attachedRoutes). Each
parentRef's outcome is therefore a value, `ParentOutcome`, with the spec's reason.

Sources: Gateway API v1 `apis/v1/shared_types.go` (ParentReference: sectionName and port select
listeners; "If 1 of 2 Gateway listeners accept attachment from the referencing Route, the Route
MUST be considered successfully attached"; RouteConditionReason) and `gateway_types.go`
(AllowedRoutes, RouteNamespaces).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from kroute.objects import (
    FieldError,
    Obj,
    ObjectRef,
    as_int,
    as_list,
    as_map,
    as_str,
    labels_of,
    object_ref,
    req_str,
    selector_matches,
)
from kroute.pipeline.registry import NO_FILTERS, Filters
from kroute.rules.conditions import AnyOf, Condition, Not
from kroute.rules.hostnames import check_hostname, covers, host_condition, intersect

GROUP = "gateway.networking.k8s.io"
ROUTE_PROTOCOLS = ("HTTP", "HTTPS")


@attrs.frozen
class Listener:
    """A listener of a served Gateway, as far as route attachment needs it."""

    gateway: ObjectRef
    name: str
    hostname: str | None
    port: int
    namespaces_from: str
    namespace_selector: Mapping[str, Any]
    #: HTTP or HTTPS, and HTTPRoute among allowedRoutes.kinds (or no kinds given).
    accepts_httproute: bool
    #: Protocol HTTPS: served only on entry points that terminate TLS.
    tls: bool = False


def compile_listeners(obj: Obj, ref: ObjectRef) -> list[Listener]:
    """Every listener of one Gateway (those of other protocols accept no HTTPRoute);
    FieldError on a malformed one."""
    spec = as_map(obj.get("spec"), "spec")
    out = []
    for i, value in enumerate(as_list(spec.get("listeners"), "spec.listeners")):
        field = f"spec.listeners[{i}]"
        raw = as_map(value, field)
        name = req_str(raw.get("name"), f"{field}.name")
        protocol = req_str(raw.get("protocol"), f"{field}.protocol")
        port = as_int(raw.get("port"), f"{field}.port", default=0, low=1, high=65535)
        if port == 0:
            raise FieldError(f"{field}.port", "required")
        hostname = as_str(raw.get("hostname"), f"{field}.hostname")
        if hostname is not None:
            hostname = check_hostname(hostname, f"{field}.hostname")
        allowed = as_map(raw.get("allowedRoutes"), f"{field}.allowedRoutes")
        namespaces = as_map(allowed.get("namespaces"), f"{field}.allowedRoutes.namespaces")
        namespaces_from = namespaces.get("from", "Same")
        if namespaces_from not in ("Same", "All", "Selector"):
            raise FieldError(
                f"{field}.allowedRoutes.namespaces.from",
                f"{namespaces_from!r} is not one of Same, All, Selector",
            )
        kinds = as_list(allowed.get("kinds"), f"{field}.allowedRoutes.kinds")
        accepts = protocol in ROUTE_PROTOCOLS and (
            not kinds
            or any(
                as_map(k, f"{field}.allowedRoutes.kinds[{j}]").get("kind") == "HTTPRoute"
                and as_map(k, "").get("group", GROUP) == GROUP
                for j, k in enumerate(kinds)
            )
        )
        out.append(
            Listener(
                gateway=ref,
                name=name,
                hostname=hostname,
                port=port,
                namespaces_from=namespaces_from,
                namespace_selector=as_map(
                    namespaces.get("selector"), f"{field}.allowedRoutes.namespaces.selector"
                ),
                accepts_httproute=accepts,
                tls=protocol == "HTTPS",
            )
        )
    return out


def granted_references(
    reference_grants: Sequence[Obj], from_kind: str, to_kind: str
) -> set[tuple[str, str, str]]:
    """(from namespace, to namespace, target name or "" for any) triples that ReferenceGrants
    allow, for references from `from_kind` (a Gateway API kind) to `to_kind` (a core kind:
    Service for backendRefs, Secret for certificateRefs). Gateway API ReferenceGrant: a grant
    lives in the target's namespace; a malformed one allows nothing."""
    allowed = set()
    for grant in reference_grants:
        try:
            ref = object_ref(grant)
            spec = as_map(grant.get("spec"), "spec")
            froms = [as_map(f, "spec.from") for f in as_list(spec.get("from"), "spec.from")]
            tos = [as_map(t, "spec.to") for t in as_list(spec.get("to"), "spec.to")]
        except FieldError:
            continue
        for src in froms:
            if src.get("group") != GROUP or src.get("kind") != from_kind:
                continue
            for dst in tos:
                if dst.get("group", "") == "" and dst.get("kind") == to_kind:
                    allowed.add((str(src.get("namespace")), ref.namespace, dst.get("name") or ""))
    return allowed


@attrs.define
class GatewayContext:
    """What attaching routes needs to know besides the route: listeners, grants, namespaces."""

    listeners: list[Listener] = attrs.Factory(list)
    grants: set[tuple[str, str, str]] = attrs.Factory(set)
    namespace_labels: dict[str, Mapping[str, str]] = attrs.Factory(dict)
    #: The application's own filters, which ExtensionRef filters name (`kroute.pipeline`).
    filters: Filters = NO_FILTERS

    @classmethod
    def build(
        cls,
        listeners: list[Listener],
        reference_grants: Sequence[Obj],
        namespaces: Sequence[Obj],
        filters: Filters = NO_FILTERS,
    ) -> GatewayContext:
        labels: dict[str, Mapping[str, str]] = {}
        for ns in namespaces:
            try:
                labels[object_ref(ns, namespaced=False).name] = labels_of(ns)
            except FieldError:
                continue
        grants = granted_references(reference_grants, "HTTPRoute", "Service")
        return cls(listeners, grants, labels, filters)

    def admits(self, listener: Listener, namespace: str) -> bool:
        """allowedRoutes.namespaces for a route in `namespace`."""
        if listener.namespaces_from == "All":
            return True
        if listener.namespaces_from == "Same":
            return namespace == listener.gateway.namespace
        # Every namespace carries this label (Kubernetes NamespaceDefaultLabelName).
        labels = {**self.namespace_labels.get(namespace, {})}
        labels["kubernetes.io/metadata.name"] = namespace
        return selector_matches(listener.namespace_selector, labels, "selector")

    def isolation(self, listener: Listener) -> tuple[Condition, ...]:
        """A condition excluding hosts that a more specific listener of the gateway takes."""
        narrower = sorted(
            {
                other.hostname
                for other in self.listeners
                if other.gateway == listener.gateway
                and other.port == listener.port
                and other.hostname is not None
                and other.hostname != listener.hostname
                and (listener.hostname is None or covers(listener.hostname, other.hostname))
            }
        )
        if not narrower:
            return ()
        return (Not(AnyOf(tuple(host_condition(h, any_depth=True) for h in narrower))),)


@attrs.frozen
class ParentOutcome:
    """What one parentRef of an HTTPRoute to one of our Gateways came to: the route's
    RouteParentStatus `Accepted` condition (shared_types.go, RouteConditionReason) and the
    listeners it is attached to (their ListenerStatus.attachedRoutes counts it)."""

    route: ObjectRef
    field: str
    #: The parentRef as written in the route's spec (status echoes it: RouteParentStatus).
    parent_ref: Mapping[str, Any]
    gateway: ObjectRef
    accepted: bool
    #: Accepted, NoMatchingParent, NotAllowedByListeners or NoMatchingListenerHostname.
    reason: str
    message: str
    listeners: tuple[str, ...] = ()

    def note(self) -> str:
        """The compile note for a parentRef that attached nowhere."""
        return f"{self.route}: {self.field}: not attached to {self.gateway}: {self.message}"


#: A route's hostname, isolation conditions and listener (port, HTTPS), once per attachment.
Attached = tuple[str | None, tuple[Condition, ...], tuple[int, bool]]


@attrs.frozen
class Parents:
    """Where an HTTPRoute is attached: one outcome per parentRef to our Gateways, and the
    (hostname, isolation, listener) it is served under."""

    outcomes: tuple[ParentOutcome, ...] = ()
    attached: tuple[Attached, ...] = ()


def route_hostnames(spec: Mapping[str, Any]) -> list[str | None]:
    """An HTTPRoute's checked hostnames; [None] (any) when it names none."""
    return [
        check_hostname(req_str(h, f"spec.hostnames[{i}]"), f"spec.hostnames[{i}]")
        for i, h in enumerate(as_list(spec.get("hostnames"), "spec.hostnames"))
    ] or [None]


def route_parents(obj: Obj, ref: ObjectRef, ctx: GatewayContext) -> Parents:
    """Each parentRef of HTTPRoute `obj` that names one of our Gateways (a Gateway whose
    listeners are in `ctx`), and what came of it; FieldError on a malformed parentRef or
    hostname. ParentRefs to other kinds or to Gateways not ours are not ours to judge."""
    spec = as_map(obj.get("spec"), "spec")
    hostnames = route_hostnames(spec)
    gateways = {lst.gateway for lst in ctx.listeners}
    outcomes: list[ParentOutcome] = []
    attached: list[Attached] = []
    for i, value in enumerate(as_list(spec.get("parentRefs"), "spec.parentRefs")):
        field = f"spec.parentRefs[{i}]"
        parent = as_map(value, field)
        if parent.get("group", GROUP) != GROUP or parent.get("kind", "Gateway") != "Gateway":
            continue
        gw = ObjectRef(
            "Gateway",
            as_str(parent.get("namespace"), f"{field}.namespace") or ref.namespace,
            req_str(parent.get("name"), f"{field}.name"),
        )
        if gw not in gateways:
            continue
        section = as_str(parent.get("sectionName"), f"{field}.sectionName")
        port = as_int(parent.get("port"), f"{field}.port", default=0, low=1, high=65535)
        candidates = [
            lst
            for lst in ctx.listeners
            if lst.gateway == gw
            and (section is None or lst.name == section)
            and (port == 0 or lst.port == port)
        ]
        outcome = _outcome(ref, field, parent, gw, candidates, hostnames, ctx, attached)
        outcomes.append(outcome)
    return Parents(tuple(outcomes), tuple(attached))


def _outcome(
    ref: ObjectRef,
    field: str,
    parent: Mapping[str, Any],
    gw: ObjectRef,
    candidates: list[Listener],
    hostnames: list[str | None],
    ctx: GatewayContext,
    attached: list[Attached],
) -> ParentOutcome:
    """One parentRef's outcome; its attachments are appended to `attached`."""
    if not candidates:
        # RouteReasonNoMatchingParent: "a Route ParentRef specifies a Port and/or SectionName
        # that does not match any Listeners in the Gateway".
        message = "no listener of the Gateway has this sectionName and port"
        return ParentOutcome(ref, field, parent, gw, False, "NoMatchingParent", message)
    allowed = [lst for lst in candidates
               if lst.accepts_httproute and ctx.admits(lst, ref.namespace)]  # fmt: skip
    if not allowed:
        # RouteReasonNotAllowedByListeners: no listener whose allowedRoutes permit the route.
        return ParentOutcome(ref, field, parent, gw, False, "NotAllowedByListeners",
                             "no listener accepts it (protocol, allowedRoutes kinds or "
                             f"namespaces: namespace {ref.namespace})")  # fmt: skip
    names = []
    for lst in allowed:
        for hostname in hostnames:
            ok, joined = intersect(lst.hostname, hostname)
            if ok:
                attached.append((joined, ctx.isolation(lst), (lst.port, lst.tls)))
                if lst.name not in names:
                    names.append(lst.name)
    if not names:
        # RouteReasonNoMatchingListenerHostname: no compatible listener's hostname matches.
        return ParentOutcome(ref, field, parent, gw, False, "NoMatchingListenerHostname",
                             "no listener hostname intersects the route's hostnames")  # fmt: skip
    return ParentOutcome(ref, field, parent, gw, True, "Accepted",
                         f"attached to listener(s) {', '.join(names)}", tuple(names))  # fmt: skip

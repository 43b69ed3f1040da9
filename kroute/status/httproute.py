"""HTTPRoute status: one RouteParentStatus per parentRef to kroute's Gateways (pure).

Gateway API v1 `shared_types.go`: RouteParentStatus (parentRef, controllerName, conditions),
RouteConditionType Accepted (reasons Accepted, NotAllowedByListeners,
NoMatchingListenerHostname, NoMatchingParent, UnsupportedValue; "A Route MUST be considered
Accepted if at least one of the Route's rules is implemented by the Gateway") and ResolvedRefs
(ResolvedRefs, RefNotPermitted, InvalidKind, BackendNotFound, UnsupportedProtocol: "a resource
with an app protocol that is not supported by this implementation"); `httproute_types.go`,
HTTPRouteFilter.Type: an unknown filter "must result in ... Accepted ... False, with a Reason of
UnsupportedValue".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from kroute.errors import InvalidObject
from kroute.objects import BackendRef, FieldError, Obj, as_list, as_map
from kroute.pipeline.filters import Mirror, Refuse
from kroute.rules.listeners import ParentOutcome
from kroute.rules.route import Route
from kroute.status.conditions import Status, condition
from kroute.status.values import StatusSettings

#: Service port appProtocols kroute speaks to: HTTP/1.1 in clear text, WebSocket upgrades
#: included (KEP-3726's kubernetes.io/ws). Not h2c, gRPC or TLS to the backend.
SUPPORTED_APP_PROTOCOLS = frozenset({"http", "kubernetes.io/ws"})


def httproute_status(
    outcomes: Sequence[ParentOutcome],
    routes: Sequence[Route],
    error: InvalidObject | None,
    refused: Sequence[InvalidObject],
    services: Mapping[tuple[str, str], Obj],
    settings: StatusSettings,
    generation: int | None,
) -> tuple[Status, list[ParentOutcome]]:
    """The route's `status.parents` entries of kroute, and the outcomes that ended Accepted
    (the listeners they name count them in attachedRoutes). `routes` are what the route
    compiled to, `error` why it could not be compiled, `refused` what fails closed in it."""
    resolved = _resolved(routes, services, settings, generation) if routes else None
    entries, attached = [], []
    for outcome in outcomes:
        accepted = _accepted(outcome, routes, error, refused, generation)
        if accepted["status"] == "True":
            attached.append(outcome)
        entries.append({
            "parentRef": dict(outcome.parent_ref),
            "controllerName": settings.controller_name,
            "conditions": [accepted] if resolved is None else [accepted, resolved],
        })  # fmt: skip
    return {"parents": entries}, attached


def _accepted(
    outcome: ParentOutcome, routes: Sequence[Route], error: InvalidObject | None,
    refused: Sequence[InvalidObject], generation: int | None,
) -> Status:  # fmt: skip
    if error is not None:
        message = f"{error.field}: {error.reason}"
        return condition("Accepted", False, "UnsupportedValue", message, generation)
    if not outcome.accepted:
        return condition("Accepted", False, outcome.reason, outcome.message, generation)
    failing = "; ".join(f"{r.field}: {r.reason}" for r in refused)
    if routes and all(any(isinstance(s, Refuse) for s in r.chain.steps) for r in routes):
        message = f"no rule is served, each fails closed: {failing}"
        return condition("Accepted", False, "UnsupportedValue", message, generation)
    message = outcome.message + (f"; fails closed (500): {failing}" if failing else "")
    return condition("Accepted", True, "Accepted", message, generation)


def _backends(routes: Sequence[Route]) -> list[BackendRef]:
    """Every backend the route names (backendRefs and RequestMirror), once, in rule order."""
    seen: dict[tuple[object, ...], BackendRef] = {}
    for route in routes:
        mirrors = [step.backend for chain in (route.chain, *route.backend_chains)
                   for step in chain.steps if isinstance(step, Mirror)]  # fmt: skip
        for ref in (*route.backends, *mirrors):
            seen.setdefault((ref.namespace, ref.name, ref.port, ref.error), ref)
    return list(seen.values())


def _resolved(
    routes: Sequence[Route], services: Mapping[tuple[str, str], Obj], settings: StatusSettings,
    generation: int | None,
) -> Status:  # fmt: skip
    problems: list[tuple[str, str]] = []
    for ref in _backends(routes):
        where = f"backend {ref.namespace}/{ref.name}" + (f":{ref.port}" if ref.port else "")
        if ref.error is not None:
            # The compiler's errors start with their reason (InvalidKind, RefNotPermitted).
            problems.append((ref.error.partition(":")[0], f"{where}: {ref.error}"))
        elif "Service" in settings.complete_kinds:
            problem = _service_problem(ref, services.get((ref.namespace, ref.name)))
            if problem is not None:
                problems.append((problem[0], f"{where}: {problem[1]}"))
    if not problems:
        return condition("ResolvedRefs", True, "ResolvedRefs", "all references resolved",
                         generation)  # fmt: skip
    return condition("ResolvedRefs", False, problems[0][0], "; ".join(m for _, m in problems),
                     generation)  # fmt: skip


def _service_problem(ref: BackendRef, service: Obj | None) -> tuple[str, str] | None:
    if service is None:
        return "BackendNotFound", "Service not found"
    try:
        spec = as_map(service.get("spec"), "spec")
        ports = [as_map(p, "spec.ports[]") for p in as_list(spec.get("ports"), "spec.ports")]
    except FieldError as exc:
        return "BackendNotFound", f"the Service is malformed: {exc.field}: {exc.reason}"
    port = next((p for p in ports if p.get("port") == ref.port), None)
    if port is None:
        return "BackendNotFound", f"the Service has no port {ref.port}"
    protocol = port.get("appProtocol")
    if isinstance(protocol, str) and protocol.lower() not in SUPPORTED_APP_PROTOCOLS:
        return "UnsupportedProtocol", f"appProtocol {protocol} is not supported (HTTP/1.1 is)"
    return None

"""GatewayClass and Gateway status: what kroute makes of a class and of each listener (pure).

Sources (Gateway API v1): `gatewayclass_types.go` (GatewayClassConditionType Accepted, reasons
Accepted and InvalidParameters), `gateway_types.go` (GatewayStatus: addresses, conditions
Accepted and Programmed with reasons Accepted, ListenersNotValid, Invalid, UnsupportedAddress,
Programmed, AddressNotUsable; ListenerStatus: name, supportedKinds, attachedRoutes, conditions
Accepted (Accepted, UnsupportedProtocol, PortUnavailable, UnsupportedValue), ResolvedRefs
(ResolvedRefs, InvalidCertificateRef, InvalidRouteKinds, RefNotPermitted), Programmed
(Programmed, Invalid) and Conflicted (NoConflicts, HostnameConflict, ProtocolConflict)).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs

from kroute.objects import Obj, ObjectRef, as_list, as_map
from kroute.rules.listeners import GROUP, ROUTE_PROTOCOLS
from kroute.status.conditions import Status, condition
from kroute.status.values import StatusSettings, mapping
from kroute.tls.refs import CertificateRef, listener_certificate_refs

HTTPROUTE_KIND = {"group": GROUP, "kind": "HTTPRoute"}


def gateway_class_status(obj: Obj, generation: int | None) -> Status:
    """A GatewayClass whose controllerName is kroute's: Accepted, unless it names parameters,
    which kroute has none of (GatewayClassReasonInvalidParameters: "refers to a nonexistent or
    unsupported resource or kind")."""
    if mapping(obj.get("spec")).get("parametersRef") is not None:
        message = "kroute takes no parameters: remove spec.parametersRef"
        accepted = condition("Accepted", False, "InvalidParameters", message, generation)
    else:
        accepted = condition("Accepted", True, "Accepted", "served by kroute", generation)
    return {"conditions": [accepted]}


@attrs.frozen
class GatewayInputs:
    """What a Gateway's status depends on besides the Gateway itself."""

    settings: StatusSettings
    #: Accepted routes per (Gateway, listener name).
    attached: Mapping[tuple[ObjectRef, str], int]
    #: The Secrets given, by (namespace, name).
    secrets: Mapping[tuple[str, str], Obj]
    #: What ReferenceGrants allow Gateways to reference (Secrets).
    grants: set[tuple[str, str, str]]


def gateway_status(
    obj: Obj, ref: ObjectRef, generation: int | None, error: str | None, inputs: GatewayInputs
) -> Status:
    """The status of one of kroute's Gateways; `error` is why compiling it failed, if it did."""
    cond = _conditions(generation)
    addresses = inputs.settings.addresses.for_gateway()
    if error is not None:
        return {"addresses": addresses, "listeners": [], "conditions": [
            cond("Accepted", False, "Invalid", error),
            cond("Programmed", False, "Invalid", error),
        ]}  # fmt: skip
    spec = as_map(obj.get("spec"), "spec")
    raw = [as_map(v, f"spec.listeners[{i}]")
           for i, v in enumerate(as_list(spec.get("listeners"), "spec.listeners"))]  # fmt: skip
    certs = listener_certificate_refs(obj, ref, inputs.grants)
    listeners = [_listener(ref, i, item, raw, certs, inputs, cond) for i, item in enumerate(raw)]
    invalid = [e["name"] for e in listeners if e["conditions"][0]["status"] == "False"]
    if not invalid:
        accepted = cond("Accepted", True, "Accepted", "served by kroute")
    else:
        # GatewayReasonListenersNotValid: True or False "depending on whether the listener
        # being invalid causes the entire Gateway to not be accepted" (here: none is left).
        accepted = cond("Accepted", len(invalid) < len(listeners), "ListenersNotValid",
                        f"listener(s) not accepted: {', '.join(invalid)}")  # fmt: skip
    unsupported, unusable = _spec_addresses(spec, inputs)
    if unsupported:
        accepted = cond("Accepted", False, "UnsupportedAddress", unsupported)
    if accepted["status"] == "False":
        programmed = cond("Programmed", False, "Invalid", accepted["message"])
    elif unusable:
        programmed = cond("Programmed", False, "AddressNotUsable", unusable)
    else:
        programmed = cond("Programmed", True, "Programmed", "routes are served")
    return {"addresses": addresses, "listeners": listeners, "conditions": [accepted, programmed]}


Cond = Callable[[str, bool, str, str], Status]


def _conditions(generation: int | None) -> Cond:
    return lambda kind, ok, reason, message: condition(kind, ok, reason, message, generation)


def _spec_addresses(spec: Mapping[str, Any], inputs: GatewayInputs) -> tuple[str, str]:
    """(why Accepted is False, why Programmed is False) for `spec.addresses`: kroute assigns
    no address; it can only confirm those it publishes (GatewaySpecAddress)."""
    published = {e["value"] for e in inputs.settings.addresses.for_gateway()}
    unsupported, unusable = [], []
    for i, value in enumerate(as_list(spec.get("addresses"), "spec.addresses")):
        item = as_map(value, f"spec.addresses[{i}]")
        kind = item.get("type", "IPAddress")
        if kind not in ("IPAddress", "Hostname"):
            unsupported.append(f"spec.addresses[{i}]: type {kind!r} is not supported")
        elif item.get("value") not in published:
            unusable.append(f"spec.addresses[{i}]: {item.get('value')!r} is not an address "
                            "kroute publishes (--publish-address)")  # fmt: skip
    return "; ".join(unsupported), "; ".join(unusable)


def _listener(
    gw: ObjectRef, index: int, raw: Mapping[str, Any], every: list[Mapping[str, Any]],
    certs: list[CertificateRef], inputs: GatewayInputs, cond: Cond,
) -> Status:  # fmt: skip
    name = str(raw.get("name"))
    protocol = raw.get("protocol")
    kinds, invalid_kinds = _kinds(raw)
    accepted = _accepted(raw, inputs, cond)
    problems = [(c.problem or "", c.message) for c in certs if c.listener == name and c.problem]
    problems += _secret_problems([c for c in certs if c.listener == name and not c.problem],
                                 inputs)  # fmt: skip
    if protocol == "HTTPS" and not [c for c in certs if c.listener == name] and _terminates(raw):
        problems.append(("InvalidCertificateRef", "an HTTPS listener needs a certificateRef"))
    if invalid_kinds:
        problems.insert(0, ("InvalidRouteKinds", f"route kinds not supported: {invalid_kinds}"))
    if problems:
        resolved = cond("ResolvedRefs", False, problems[0][0], "; ".join(m for _, m in problems))
    else:
        resolved = cond("ResolvedRefs", True, "ResolvedRefs", "all references resolved")
    if accepted["status"] == "False" or resolved["status"] == "False":
        why = accepted["message"] if accepted["status"] == "False" else resolved["message"]
        programmed = cond("Programmed", False, "Invalid", why)
    else:
        programmed = cond("Programmed", True, "Programmed", "routes attached here are served")
    return {
        "name": name,
        "supportedKinds": kinds,
        "attachedRoutes": inputs.attached.get((gw, name), 0),
        "conditions": [accepted, resolved, programmed, _conflicted(index, every, cond)],
    }


def _terminates(raw: Mapping[str, Any]) -> bool:
    return bool(mapping(raw.get("tls")).get("mode", "Terminate") == "Terminate")


def _kinds(raw: Mapping[str, Any]) -> tuple[list[dict[str, str]], list[str]]:
    """supportedKinds, and the kinds allowedRoutes names that kroute does not support: "If
    kinds are specified in Spec that are not supported, they MUST NOT appear in this list"
    (ListenerStatus.SupportedKinds)."""
    if raw.get("protocol") not in ROUTE_PROTOCOLS:
        return [], []
    listed = [
        k for k in mapping(raw.get("allowedRoutes")).get("kinds") or [] if isinstance(k, dict)
    ]
    if not listed:
        return [dict(HTTPROUTE_KIND)], []
    good = [k for k in listed if k.get("kind") == "HTTPRoute" and k.get("group", GROUP) == GROUP]
    bad = [f"{k.get('group', GROUP)}/{k.get('kind')}" for k in listed if k not in good]
    return ([dict(HTTPROUTE_KIND)] if good else []), bad


def _accepted(raw: Mapping[str, Any], inputs: GatewayInputs, cond: Cond) -> Status:
    protocol, port = raw.get("protocol"), raw.get("port")
    if protocol not in ROUTE_PROTOCOLS:
        message = f"protocol {protocol} is not served by kroute (HTTP and HTTPS are)"
        return cond("Accepted", False, "UnsupportedProtocol", message)
    if protocol == "HTTPS" and not _terminates(raw):
        return cond("Accepted", False, "UnsupportedValue",
                    "TLS mode Passthrough is not supported: kroute terminates TLS")  # fmt: skip
    points = inputs.settings.entry_points
    if points is not None and not any(
        isinstance(port, int) and e.binds(port, protocol == "HTTPS") for e in points
    ):
        kind = "terminates TLS" if protocol == "HTTPS" else "serves plain HTTP"
        return cond("Accepted", False, "PortUnavailable",
                    f"no entry point that {kind} listens on port {port}")  # fmt: skip
    return cond("Accepted", True, "Accepted", "listener accepted")


def _secret_problems(certs: list[CertificateRef], inputs: GatewayInputs) -> list[tuple[str, str]]:
    """InvalidCertificateRef for a Secret that is not there or holds no TLS pair (checked when
    every Secret was given: StatusSettings.complete_kinds)."""
    if "Secret" not in inputs.settings.complete_kinds:
        return []
    out = []
    for cert in certs:
        where = f"Secret {cert.namespace}/{cert.name}"
        secret = inputs.secrets.get((cert.namespace, cert.name or ""))
        if secret is None:
            out.append(("InvalidCertificateRef", f"{cert.field}: {where} not found"))
            continue
        data = {**mapping(secret.get("stringData")), **mapping(secret.get("data"))}
        if secret.get("type") != "kubernetes.io/tls" or not (
            data.get("tls.crt") and data.get("tls.key")
        ):
            out.append(("InvalidCertificateRef",
                        f"{cert.field}: {where} is not a kubernetes.io/tls Secret with tls.crt "
                        "and tls.key"))  # fmt: skip
    return out


def _conflicted(index: int, every: list[Mapping[str, Any]], cond: Cond) -> Status:
    """ListenerConditionConflicted: another listener on the same port with another protocol
    (ProtocolConflict), or the same protocol and hostname (HostnameConflict). kroute still
    serves both (their routes merge), so the condition warns rather than disables."""
    me = every[index]
    same_port = [o for j, o in enumerate(every) if j != index and o.get("port") == me.get("port")]
    if any(o.get("protocol") != me.get("protocol") for o in same_port):
        return cond("Conflicted", True, "ProtocolConflict",
                    f"another listener on port {me.get('port')} has another protocol")  # fmt: skip
    if any(o.get("hostname") == me.get("hostname") for o in same_port):
        return cond("Conflicted", True, "HostnameConflict",
                    f"another listener on port {me.get('port')} has the same hostname")  # fmt: skip
    return cond("Conflicted", False, "NoConflicts", "no conflicts")

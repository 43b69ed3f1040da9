"""Which Secrets a served Gateway's HTTPS listeners name, and which names cannot be used (pure).

Shared by certificate loading (`kroute.tls.certs`) and status (`kroute.status`: the listener's
ResolvedRefs condition), and importing no cryptography, which status does not need.
Gateway API v1 `gateway_types.go`: ListenerTLSConfig.CertificateRefs ("a reference to a
Kubernetes Secret ... core Secrets"; cross-namespace references need a ReferenceGrant) and the
ResolvedRefs reasons InvalidCertificateRef and RefNotPermitted.
"""

from __future__ import annotations

import attrs

from kroute.objects import Obj, ObjectRef, as_list, as_map, as_str


@attrs.frozen
class CertificateRef:
    """One certificateRef of an HTTPS listener that terminates TLS."""

    gateway: ObjectRef
    listener: str
    field: str
    namespace: str
    name: str | None
    #: The listener's hostname, which the certificate should cover.
    hostname: str | None
    #: None when usable; else the ListenerConditionReason: InvalidCertificateRef (not a core
    #: Secret) or RefNotPermitted (another namespace, no ReferenceGrant).
    problem: str | None = None
    message: str = ""


def listener_certificate_refs(
    obj: Obj, ref: ObjectRef, grants: set[tuple[str, str, str]]
) -> list[CertificateRef]:
    """The certificateRefs of Gateway `obj`'s HTTPS listeners in mode Terminate; `grants` are
    the (from namespace, to namespace, name) triples ReferenceGrants allow Gateways
    (`kroute.rules.listeners.granted_references`). FieldError on a malformed field."""
    spec = as_map(obj.get("spec"), "spec")
    out = []
    for i, raw in enumerate(as_list(spec.get("listeners"), "spec.listeners")):
        listener = as_map(raw, f"spec.listeners[{i}]")
        tls = as_map(listener.get("tls"), f"spec.listeners[{i}].tls")
        if listener.get("protocol") != "HTTPS" or tls.get("mode", "Terminate") != "Terminate":
            continue
        hostname = as_str(listener.get("hostname"), f"spec.listeners[{i}].hostname")
        name = str(listener.get("name"))
        refs = as_list(tls.get("certificateRefs"), f"spec.listeners[{i}].tls.certificateRefs")
        for j, cert_ref in enumerate(refs):
            field = f"spec.listeners[{i}].tls.certificateRefs[{j}]"
            target = as_map(cert_ref, field)
            namespace = target.get("namespace") or ref.namespace
            secret = as_str(target.get("name"), f"{field}.name")
            cert = CertificateRef(ref, name, field, namespace, secret, hostname)
            core = target.get("group", "") in ("", "core")
            if not core or target.get("kind", "Secret") != "Secret":
                cert = attrs.evolve(cert, problem="InvalidCertificateRef",
                                    message="only core Secrets are supported")  # fmt: skip
            elif namespace != ref.namespace and grants.isdisjoint(
                {(ref.namespace, namespace, secret or ""), (ref.namespace, namespace, "")}
            ):
                message = (f"RefNotPermitted: no ReferenceGrant in namespace {namespace} allows "
                           f"Gateways of {ref.namespace} to use Secret {secret}")  # fmt: skip
                cert = attrs.evolve(cert, problem="RefNotPermitted", message=message)
            out.append(cert)
    return out

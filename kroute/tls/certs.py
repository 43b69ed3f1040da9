"""Certificates from kubernetes.io/tls Secrets, and which one answers a TLS server name (pure).

Which Secrets: those that served routing objects name, and no others (a gateway does not serve
every Secret in the cluster): Ingress `spec.tls[].secretName` (same namespace; Ingress spec,
IngressTLS) and the `certificateRefs` of Gateway listeners with protocol HTTPS and TLS mode
Terminate (the default; Gateway API GatewayTLSConfig), in the Gateway's namespace, or in another
namespace where a ReferenceGrant there allows Gateways of the Gateway's namespace to reference
that Secret (or every Secret); otherwise the reference is reported (RefNotPermitted); and an
IngressRoute's `spec.tls.secretName` (same namespace; Traefik's kubernetescrd provider).

Selection by SNI, as Traefik does it: the certificates' DNS names (subjectAltName; the common
name when there is none) are matched against the server name, exact name first, then a wildcard
one label deep (`*.example.com` covers `a.example.com`, not `example.com` nor `a.b.example.com`;
RFC 6125 section 6.4.3), then the default certificate (a Secret the gateway is given), also used
when the client sends no server name. Two certificates for one name: the one valid longest wins,
then the Secret that sorts first, so that the choice does not depend on event order.

Problems are reported per object and never affect other certificates: a missing Secret (named
with the Ingress or Gateway that references it), a Secret that is not kubernetes.io/tls, PEM that
does not parse, a key that does not match the certificate; and as notes, an Ingress host its
certificate does not cover.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
from collections.abc import Iterable, Mapping

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from kroute.errors import InvalidObject
from kroute.objects import FieldError, Manifest, Obj, ObjectRef, as_list, as_map, as_str, object_ref
from kroute.rules import gateway, ingress, traefik
from kroute.tls.refs import listener_certificate_refs

SECRET_TYPE = "kubernetes.io/tls"
_PUBLIC = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


@attrs.frozen
class Certificate:
    """One usable certificate: its Secret, the names it covers, and the PEM to serve."""

    secret: ObjectRef  # where it came from: a Secret, or what a provider names
    names: tuple[str, ...]
    subject: str
    not_after: datetime.datetime
    fingerprint: str  # SHA-256 of the leaf certificate (DER), hex
    chain: bytes = attrs.field(repr=False, eq=False)  # PEM: leaf first, then intermediates
    key: bytes = attrs.field(repr=False, eq=False)  # PEM private key

    def covers(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        return any(_matches(name, host) for name in self.names)

    def to_json(self) -> dict[str, object]:
        return {
            "secret": str(self.secret), "subject": self.subject, "names": list(self.names),
            "not_after": self.not_after.isoformat(), "fingerprint": self.fingerprint,
        }  # fmt: skip


def _matches(name: str, host: str) -> bool:
    if name.startswith("*."):
        first, dot, rest = host.partition(".")
        return bool(first) and bool(dot) and rest == name[2:]
    return name == host


def certificate_from_secret(secret: Obj) -> Certificate:
    """The certificate a Secret holds; FieldError naming the field when it cannot be used."""
    ref = object_ref(secret)
    if secret.get("type") != SECRET_TYPE:
        raise FieldError("type", f"{secret.get('type')!r} is not {SECRET_TYPE}")
    data = as_map(secret.get("data"), "data")
    chain = _decoded(data, "tls.crt")
    key_pem = _decoded(data, "tls.key")
    try:
        certs = x509.load_pem_x509_certificates(chain)
    except ValueError as exc:
        raise FieldError("data[tls.crt]", f"not a PEM certificate: {exc}") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise FieldError("data[tls.key]", f"not an unencrypted PEM private key: {exc}") from None
    leaf = certs[0]
    if key.public_key().public_bytes(*_PUBLIC) != leaf.public_key().public_bytes(*_PUBLIC):
        raise FieldError("data[tls.key]", "does not match the certificate in tls.crt")
    try:
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = [n.lower() for n in sans.value.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        common = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        names = [str(attribute.value).lower() for attribute in common]
    if not names:
        raise FieldError("data[tls.crt]", "the certificate names no DNS name")
    return Certificate(
        secret=ref,
        names=tuple(dict.fromkeys(names)),
        subject=leaf.subject.rfc4514_string(),
        not_after=leaf.not_valid_after_utc,
        fingerprint=hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).hexdigest(),
        chain=chain,
        key=key_pem,
    )


def _decoded(data: Mapping[str, object], name: str) -> bytes:
    raw = as_str(data.get(name), f"data[{name}]")
    if not raw:
        raise FieldError(f"data[{name}]", "required")
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise FieldError(f"data[{name}]", "not base64") from None


@attrs.frozen
class CertificateSet:
    """The certificates to serve, indexed for SNI, with what was wrong along the way."""

    exact: Mapping[str, Certificate] = attrs.field(factory=dict)
    wildcard: Mapping[str, Certificate] = attrs.field(factory=dict)  # keyed by the parent name
    default: Certificate | None = None
    certificates: tuple[Certificate, ...] = ()
    errors: tuple[InvalidObject, ...] = ()
    notes: tuple[str, ...] = ()

    def select(self, server_name: str | None) -> Certificate | None:
        """The certificate for a TLS server name (None: no SNI sent) or None for none."""
        if server_name:
            host = server_name.lower().rstrip(".")
            found = self.exact.get(host)
            if found is not None:
                return found
            first, dot, rest = host.partition(".")
            if first and dot:
                found = self.wildcard.get(rest)
                if found is not None:
                    return found
        return self.default


def certificates_from_objects(
    objects: Iterable[Obj | Manifest],
    *,
    ingress_class: str = "kroute",
    gateway_class: str = "kroute",
    default_secret: tuple[str, str] | None = None,
    extra: Iterable[Certificate] = (),
) -> CertificateSet:
    """The certificates that served Ingresses and Gateways reference (see the module docstring);
    `default_secret` is (namespace, name) of the certificate for unknown or absent names;
    `extra` are certificates from elsewhere (a CertificateProvider: ACME, files), ranked with
    the others."""
    items = [item.obj if isinstance(item, Manifest) else item for item in objects]
    secrets: dict[tuple[str, str], Obj] = {}
    for obj in items:
        if obj.get("kind") == "Secret" and obj.get("apiVersion") == "v1":
            try:
                ref = object_ref(obj)
            except FieldError:
                continue
            secrets[(ref.namespace, ref.name)] = obj
    wanted: dict[tuple[str, str], list[tuple[str, list[str]]]] = {}
    errors: list[InvalidObject] = []
    references = _references(items, ingress_class, gateway_class, errors)
    for referrer, namespace, name, hosts in references:
        wanted.setdefault((namespace, name), []).append((referrer, hosts))
    if default_secret is not None:
        wanted.setdefault(default_secret, []).append(("the default certificate", []))
    loaded: dict[tuple[str, str], Certificate] = {}
    notes: list[str] = []
    for key, referrers in sorted(wanted.items()):
        secret = secrets.get(key)
        if secret is None:
            for referrer, _ in referrers:
                errors.append(InvalidObject(referrer, "tls", f"Secret {key[0]}/{key[1]} not found"))
            continue
        try:
            cert = certificate_from_secret(secret)
        except FieldError as exc:
            errors.append(InvalidObject(f"Secret {key[0]}/{key[1]}", exc.field, exc.reason))
            continue
        loaded[key] = cert
        for referrer, hosts in referrers:
            notes += [f"{referrer}: TLS host {h} is not covered by Secret {key[0]}/{key[1]}"
                      for h in hosts if not cert.covers(h)]  # fmt: skip
    exact: dict[str, Certificate] = {}
    wildcard: dict[str, Certificate] = {}
    ranked = sorted([*loaded.values(), *extra],
                    key=lambda c: (-c.not_after.timestamp(), str(c.secret)))  # fmt: skip
    for cert in ranked:
        for name in cert.names:
            if name.startswith("*."):
                wildcard.setdefault(name[2:], cert)
            else:
                exact.setdefault(name, cert)
    default = loaded.get(default_secret) if default_secret is not None else None
    return CertificateSet(exact, wildcard, default, tuple(ranked), tuple(errors), tuple(notes))


def _references(
    items: list[Obj], ingress_class: str, gateway_class: str, errors: list[InvalidObject]
) -> Iterable[tuple[str, str, str, list[str]]]:
    """(referrer, namespace, secret name, hosts) for every TLS Secret a served object names."""
    classes = [o for o in items if o.get("kind") == "IngressClass"
               and o.get("apiVersion") == ingress.API_VERSION]  # fmt: skip
    defaults = ingress.default_classes(classes)
    grants = gateway.granted_references(
        [o for o in items if o.get("kind") == "ReferenceGrant"], "Gateway", "Secret"
    )
    for obj in items:
        kind, api_version = obj.get("kind"), obj.get("apiVersion")
        try:
            if kind == "Ingress" and api_version == ingress.API_VERSION:
                ref = object_ref(obj)
                if not ingress.serves(obj, ingress_class=ingress_class, defaults=defaults):
                    continue
                spec = as_map(obj.get("spec"), "spec")
                for i, tls in enumerate(as_list(spec.get("tls"), "spec.tls")):
                    entry = as_map(tls, f"spec.tls[{i}]")
                    secret = as_str(entry.get("secretName"), f"spec.tls[{i}].secretName")
                    hosts = [str(h) for h in as_list(entry.get("hosts"), f"spec.tls[{i}].hosts")]
                    if secret:
                        yield str(ref), ref.namespace, secret, hosts
            elif kind == "IngressRoute" and str(api_version).split("/")[0] in traefik.API_GROUPS:
                ref = object_ref(obj)
                tls = as_map(as_map(obj.get("spec"), "spec").get("tls"), "spec.tls")
                secret = as_str(tls.get("secretName"), "spec.tls.secretName")
                if secret:
                    yield str(ref), ref.namespace, secret, []
            elif kind == "Gateway" and str(api_version).startswith("gateway.networking.k8s.io/"):
                yield from _gateway_references(obj, gateway_class, grants, errors)
        except FieldError as exc:
            errors.append(InvalidObject(_name(obj), exc.field, exc.reason))


def _gateway_references(
    obj: Obj, gateway_class: str, grants: set[tuple[str, str, str]], errors: list[InvalidObject]
) -> Iterable[tuple[str, str, str, list[str]]]:
    ref = object_ref(obj)
    spec = as_map(obj.get("spec"), "spec")
    if spec.get("gatewayClassName") != gateway_class:
        return
    for cert in listener_certificate_refs(obj, ref, grants):
        if cert.problem is not None:
            errors.append(InvalidObject(str(ref), cert.field, cert.message))
        elif cert.name:
            hosts = [cert.hostname] if cert.hostname else []
            yield f"{ref} listener {cert.listener}", cert.namespace, cert.name, hosts


def _name(obj: Obj) -> str:
    try:
        return str(object_ref(obj))
    except FieldError:
        return str(obj.get("kind", "object"))

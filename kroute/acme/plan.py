"""Which certificates the routes ask a resolver for (pure: objects in, requests out).

Routes ask as Traefik's do:
- an Ingress the gateway serves with the annotation `traefik.ingress.kubernetes.io/router.tls.
  certresolver: NAME`: one certificate per `spec.tls` entry (its `hosts`), or, without
  `spec.tls`, one for the hosts of its rules (Traefik takes an Ingress router's domains from
  its Host rules);
- an IngressRoute with `spec.tls.certResolver: NAME`: one certificate per `spec.tls.domains`
  entry (`main` and `sans`), or, without `domains`, one for the exact hosts of its routes'
  `Host(...)` matchers (Traefik's `ParseDomains` of the rule);
- a Gateway of the gateway's class with an HTTPS listener in mode Terminate whose
  `tls.options` say `kroute.dev/certresolver: NAME` (Gateway API's implementation-specific
  listener options; kroute's own key): one certificate for the listener's `hostname`.

The same set of names asked by several objects is one certificate. Names are checked here, so
that what can never be issued is reported and never sent to a CA: a wildcard (needs DNS-01,
which kroute does not do), a name that is not a DNS name, a route without a host, a resolver
that is not configured. Each certificate is stored in a Secret named after its resolver and a
digest of its names (`secret_name`), so every replica finds the same one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence

import attrs

from kroute.acme.resolvers import Resolver
from kroute.errors import InvalidObject, RuleSyntaxError
from kroute.objects import (
    FieldError,
    Manifest,
    Obj,
    ObjectRef,
    annotations_of,
    as_list,
    as_map,
    as_str,
    object_ref,
)
from kroute.rules import ingress, traefik
from kroute.rules.conditions import AllOf, AnyOf, Condition, HostIs
from kroute.rules.hostnames import check_hostname

INGRESS_ANNOTATION = ingress.CERTRESOLVER_ANNOTATION
#: The key of a Gateway listener's `tls.options` naming a resolver (kroute's own).
LISTENER_OPTION = "kroute.dev/certresolver"
#: Labels on the Secrets kroute's ACME issuer writes (certificates, accounts, challenges).
MANAGED_LABEL = "app.kubernetes.io/managed-by"
MANAGED_VALUE = "kroute-acme"
RESOLVER_LABEL = "kroute.dev/acme-resolver"
#: The label selector of those Secrets (what a replica watches).
ACME_SELECTOR = f"{MANAGED_LABEL}={MANAGED_VALUE}"
#: Let's Encrypt's limit of names per certificate (its "Names per Certificate" rate limit).
MAX_NAMES = 100


@attrs.frozen
class CertificateRequest:
    """A certificate a resolver should hold: its names (the first is the subject) and the
    objects that ask for it."""

    resolver: str
    names: tuple[str, ...]
    wanted_by: tuple[str, ...] = attrs.field(eq=False)

    @property
    def secret_name(self) -> str:
        return secret_name(self.resolver, self.names)

    def to_json(self) -> dict[str, object]:
        return {"resolver": self.resolver, "names": list(self.names),
                "secret": self.secret_name, "wanted_by": list(self.wanted_by)}  # fmt: skip


def secret_name(resolver: str, names: Sequence[str]) -> str:
    """The Secret of a certificate: stable for its resolver and set of names, whichever
    object asked and whichever replica computes it (a DNS label: 63 characters at most)."""
    digest = hashlib.sha256("\n".join(sorted(names)).encode()).hexdigest()[:16]
    return f"kroute-acme-{resolver[:30]}-{digest}"


@attrs.frozen
class Plan:
    """What the routes ask for: certificate requests, and what cannot be asked (per object)."""

    requests: tuple[CertificateRequest, ...] = ()
    errors: tuple[InvalidObject, ...] = ()


def plan_certificates(
    objects: Iterable[Obj | Manifest],
    resolvers: Mapping[str, Resolver],
    *,
    ingress_class: str = "kroute",
    gateway_class: str = "kroute",
) -> Plan:
    """The certificates the served objects ask `resolvers` for (module docstring)."""
    items = [item.obj if isinstance(item, Manifest) else item for item in objects]
    classes = [o for o in items if o.get("kind") == "IngressClass"
               and o.get("apiVersion") == ingress.API_VERSION]  # fmt: skip
    defaults = ingress.default_classes(classes)
    asked: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    errors: list[InvalidObject] = []
    for obj in items:
        try:
            wants = list(_wanted(obj, ingress_class, gateway_class, defaults))
        except FieldError as exc:
            errors.append(InvalidObject(_name(obj), exc.field, exc.reason))
            continue
        for who, field, resolver, names in wants:
            problem = _problem(resolver, names, resolvers)
            if problem is not None:
                errors.append(InvalidObject(who, field, problem))
                continue
            asked.setdefault((resolver, tuple(sorted(set(names)))), []).append(who)
    requests = tuple(
        CertificateRequest(resolver, names, tuple(dict.fromkeys(who)))
        for (resolver, names), who in sorted(asked.items())
    )
    return Plan(requests, tuple(errors))


def _problem(resolver: str, names: Sequence[str], resolvers: Mapping[str, Resolver]) -> str | None:
    if resolver not in resolvers:
        known = ", ".join(sorted(resolvers)) or "none is configured"
        return f"certificate resolver {resolver!r} is not configured ({known})"
    if not names:
        return "no host name to ask a certificate for"
    wild = [n for n in names if n.startswith("*")]
    if wild:
        return (
            f"{', '.join(wild)}: a wildcard certificate needs the DNS-01 challenge, which "
            f"kroute does not do (resolver {resolver} uses {resolvers[resolver].challenge})"
        )
    if len(set(names)) > MAX_NAMES:
        return f"{len(set(names))} names: a certificate holds {MAX_NAMES} at most"
    return None


def _wanted(
    obj: Obj, ingress_class: str, gateway_class: str, defaults: set[str] | None
) -> Iterable[tuple[str, str, str, list[str]]]:
    """(who asks, the field, resolver, names) for each certificate `obj` asks for."""
    kind, api_version = obj.get("kind"), str(obj.get("apiVersion"))
    if kind == "Ingress" and api_version == ingress.API_VERSION:
        yield from _ingress(obj, ingress_class, defaults)
    elif kind == "IngressRoute" and api_version.split("/")[0] in traefik.API_GROUPS:
        yield from _ingress_route(obj)
    elif kind == "Gateway" and api_version.startswith("gateway.networking.k8s.io/"):
        yield from _gateway(obj, gateway_class)


def _ingress(
    obj: Obj, ingress_class: str, defaults: set[str] | None
) -> Iterable[tuple[str, str, str, list[str]]]:
    field = f"metadata.annotations[{INGRESS_ANNOTATION}]"
    resolver = as_str(annotations_of(obj).get(INGRESS_ANNOTATION), field)
    if resolver is None or not ingress.serves(obj, ingress_class=ingress_class, defaults=defaults):
        return
    who = str(object_ref(obj))
    spec = as_map(obj.get("spec"), "spec")
    entries = as_list(spec.get("tls"), "spec.tls")
    for i, raw in enumerate(entries):
        hosts = as_list(as_map(raw, f"spec.tls[{i}]").get("hosts"), f"spec.tls[{i}].hosts")
        yield who, f"spec.tls[{i}].hosts", resolver, _checked(hosts, f"spec.tls[{i}].hosts")
    if not entries:
        hosts = []
        for i, rule in enumerate(as_list(spec.get("rules"), "spec.rules")):
            host = as_str(as_map(rule, f"spec.rules[{i}]").get("host"), f"spec.rules[{i}].host")
            if host:
                hosts.append(check_hostname(host, f"spec.rules[{i}].host"))
        yield who, field, resolver, list(dict.fromkeys(hosts))


def _ingress_route(obj: Obj) -> Iterable[tuple[str, str, str, list[str]]]:
    spec = as_map(obj.get("spec"), "spec")
    tls = as_map(spec.get("tls"), "spec.tls")
    resolver = as_str(tls.get("certResolver"), "spec.tls.certResolver")
    if not resolver:
        return
    who = str(object_ref(obj))
    domains = as_list(tls.get("domains"), "spec.tls.domains")
    for i, raw in enumerate(domains):
        field = f"spec.tls.domains[{i}]"
        domain = as_map(raw, field)
        main = as_str(domain.get("main"), f"{field}.main")
        sans = as_list(domain.get("sans"), f"{field}.sans")
        names = _checked([main] if main else [], f"{field}.main")
        yield who, field, resolver, names + _checked(sans, f"{field}.sans")
    if not domains:
        hosts: list[str] = []
        for i, route in enumerate(as_list(spec.get("routes"), "spec.routes")):
            rule = as_str(as_map(route, f"spec.routes[{i}]").get("match"), f"spec.routes[{i}]")
            if rule:
                try:
                    hosts += _rule_hosts(traefik.rule_condition(rule))
                except RuleSyntaxError as exc:  # (the route reports it too)
                    raise FieldError(f"spec.routes[{i}].match", str(exc)) from None
        yield who, "spec.tls.certResolver", resolver, list(dict.fromkeys(hosts))


def _rule_hosts(condition: Condition) -> list[str]:
    """The exact hosts of a rule's Host matchers (wildcards and regexes name no domain)."""
    if isinstance(condition, HostIs):
        return [condition.host]
    if isinstance(condition, AllOf | AnyOf):
        return [host for part in condition.parts for host in _rule_hosts(part)]
    return []


def _gateway(obj: Obj, gateway_class: str) -> Iterable[tuple[str, str, str, list[str]]]:
    spec = as_map(obj.get("spec"), "spec")
    if spec.get("gatewayClassName") != gateway_class:
        return
    ref = object_ref(obj)
    for i, raw in enumerate(as_list(spec.get("listeners"), "spec.listeners")):
        listener = as_map(raw, f"spec.listeners[{i}]")
        tls = as_map(listener.get("tls"), f"spec.listeners[{i}].tls")
        options = as_map(tls.get("options"), f"spec.listeners[{i}].tls.options")
        field = f"spec.listeners[{i}].tls.options[{LISTENER_OPTION}]"
        resolver = as_str(options.get(LISTENER_OPTION), field)
        if not resolver:
            continue
        if listener.get("protocol") != "HTTPS" or tls.get("mode", "Terminate") != "Terminate":
            raise FieldError(field, "a certificate resolver needs protocol HTTPS, mode Terminate")
        hostname = as_str(listener.get("hostname"), f"spec.listeners[{i}].hostname")
        names = _checked([hostname] if hostname else [], f"spec.listeners[{i}].hostname")
        yield f"{ref} listener {listener.get('name')}", field, resolver, names


def _checked(hosts: Iterable[object], field: str) -> list[str]:
    out = []
    for j, host in enumerate(hosts):
        if not isinstance(host, str) or not host:
            raise FieldError(f"{field}[{j}]", "not a host name")
        out.append(check_hostname(host, f"{field}[{j}]"))
    return out


def _name(obj: Obj) -> str:
    try:
        ref: ObjectRef | str = object_ref(obj)
    except FieldError:
        ref = str(obj.get("kind", "object"))
    return str(ref)

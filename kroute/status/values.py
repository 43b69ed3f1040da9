"""The values status is computed from and into: settings, published addresses, results."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from kroute.objects import FieldError
from kroute.rules.compile import DEFAULT_CLASS
from kroute.rules.entrypoints import EntryPoint
from kroute.rules.hostnames import check_hostname


def mapping(value: Any) -> Mapping[str, Any]:
    """`value` when it is a mapping, else an empty one: status reads what compiling checked."""
    return value if isinstance(value, dict) else {}


#: GatewayClass `spec.controllerName` kroute answers for (a domain-prefixed path, as the
#: GatewayController type in the Gateway API's shared_types.go requires).
CONTROLLER_NAME = "kroute.dev/gateway-controller"


@attrs.frozen
class PublishedAddresses:
    """Where clients reach kroute: IP addresses and host names, in the order given.

    They become Ingress `status.loadBalancer.ingress` entries (an IP as `ip`, a name as
    `hostname`: Kubernetes LoadBalancerIngress) and Gateway `status.addresses` (type
    IPAddress or Hostname: GatewayStatusAddress), as Traefik's ingressEndpoint does.
    """

    entries: tuple[tuple[str, str], ...] = ()  # ("ip" | "hostname", value)

    @classmethod
    def parse(cls, values: Iterable[str]) -> PublishedAddresses:
        """Addresses from text; ValueError naming the first that is neither an IP address nor
        a DNS name."""
        entries = []
        for value in values:
            try:
                entries.append(("ip", str(ipaddress.ip_address(value))))
                continue
            except ValueError:
                pass
            try:
                if value.startswith("*."):
                    raise FieldError("address", "a wildcard is not an address")
                entries.append(("hostname", check_hostname(value, "address")))
            except FieldError as exc:
                raise ValueError(f"published address {value!r}: {exc.reason}") from None
        return cls(tuple(entries))

    @classmethod
    def from_service(cls, service: Mapping[str, Any] | None) -> PublishedAddresses:
        """The addresses of a published Service (Traefik's publishedService): its
        `status.loadBalancer.ingress` entries (`ip` or `hostname` each), else its
        `spec.externalIPs`; none for a Service that has neither (or is absent). A value that is
        not what its field says is skipped: a load balancer wrote it, not the user."""
        service = mapping(service)
        balancer = mapping(mapping(service.get("status")).get("loadBalancer")).get("ingress")
        found = [(field, e.get(field)) for e in balancer or [] if isinstance(e, dict)
                 for field in ("ip", "hostname") if e.get(field)]  # fmt: skip
        if not found:
            external = mapping(service.get("spec")).get("externalIPs")
            found = [("ip", v) for v in (external if isinstance(external, list) else [])]
        entries: list[tuple[str, str]] = []
        for field, value in found:
            try:
                parsed = cls.parse([value]).entries if isinstance(value, str) else ()
            except ValueError:
                continue
            entries.extend(entry for entry in parsed if entry[0] == field)
        return cls(tuple(entries))

    def __add__(self, other: PublishedAddresses) -> PublishedAddresses:
        """Both lists, in order, without repeats."""
        return PublishedAddresses(tuple(dict.fromkeys((*self.entries, *other.entries))))

    def __bool__(self) -> bool:
        return bool(self.entries)

    def for_ingress(self) -> list[dict[str, str]]:
        return [{kind: value} for kind, value in self.entries]

    def for_gateway(self) -> list[dict[str, str]]:
        types = {"ip": "IPAddress", "hostname": "Hostname"}
        return [{"type": types[kind], "value": value} for kind, value in self.entries]


@attrs.frozen
class StatusSettings:
    """What decides which objects are kroute's and what their status says."""

    controller_name: str = CONTROLLER_NAME
    addresses: PublishedAddresses = PublishedAddresses()
    ingress_class: str = DEFAULT_CLASS
    gateway_class: str = DEFAULT_CLASS
    #: When given, a Gateway listener on a port no entry point binds is not Accepted
    #: (PortUnavailable), as routing serves its routes nowhere.
    entry_points: Sequence[EntryPoint] | None = None
    #: Kinds whose objects were all given, so that a reference to one that is absent means it
    #: does not exist (BackendNotFound, InvalidCertificateRef). Offline, without Secrets in the
    #: manifests, a certificateRef cannot be checked and is not reported.
    complete_kinds: frozenset[str] = frozenset({"Service", "Secret"})


@attrs.frozen
class StatusUpdate:
    """The status kroute would write for one object.

    `status` is the whole status to write (other controllers' parts kept), or the current one
    when `changed` is False: a writer skips those. `resource_version` is the object's, for an
    update that the API server refuses when the object changed meanwhile.
    """

    api_version: str
    kind: str
    namespace: str
    name: str
    status: Mapping[str, Any]
    changed: bool
    resource_version: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"apiVersion": self.api_version, "kind": self.kind, "namespace": self.namespace,
                "name": self.name, "status": self.status, "changed": self.changed}  # fmt: skip

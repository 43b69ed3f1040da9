"""The resources kroute watches, by API group, version and plural name."""

from __future__ import annotations

import attrs


@attrs.frozen
class Kind:
    """A resource type: where its objects live in the API and what they are called."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None) -> str:
        """The collection's URL path, cluster-wide or in one namespace."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if namespace and self.namespaced:
            return f"{base}/namespaces/{namespace}/{self.plural}"
        return f"{base}/{self.plural}"

    def matches(self, obj: dict[str, object]) -> bool:
        """Whether a decoded object is of this kind (any version of the group)."""
        api_version = obj.get("apiVersion")
        group = api_version.rpartition("/")[0] if isinstance(api_version, str) else None
        return obj.get("kind") == self.kind and group == self.group

    def __str__(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


INGRESS = Kind("networking.k8s.io", "v1", "ingresses", "Ingress")
INGRESS_CLASS = Kind("networking.k8s.io", "v1", "ingressclasses", "IngressClass", namespaced=False)
SERVICE = Kind("", "v1", "services", "Service")
ENDPOINT_SLICE = Kind("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice")
SECRET = Kind("", "v1", "secrets", "Secret")
NAMESPACE = Kind("", "v1", "namespaces", "Namespace", namespaced=False)
GATEWAY_CLASS = Kind("gateway.networking.k8s.io", "v1", "gatewayclasses", "GatewayClass",
                     namespaced=False)  # fmt: skip
GATEWAY = Kind("gateway.networking.k8s.io", "v1", "gateways", "Gateway")
HTTP_ROUTE = Kind("gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute")
REFERENCE_GRANT = Kind("gateway.networking.k8s.io", "v1beta1", "referencegrants", "ReferenceGrant")
INGRESS_ROUTE = Kind("traefik.io", "v1alpha1", "ingressroutes", "IngressRoute")
MIDDLEWARE = Kind("traefik.io", "v1alpha1", "middlewares", "Middleware")
TRAEFIK_SERVICE = Kind("traefik.io", "v1alpha1", "traefikservices", "TraefikService")
#: Not routed: the lock of leader election (kroute.watch.leader).
LEASE = Kind("coordination.k8s.io", "v1", "leases", "Lease")

#: Everything routing reads.
ROUTING_KINDS = (
    INGRESS, INGRESS_CLASS, SERVICE, ENDPOINT_SLICE, SECRET, NAMESPACE,
    GATEWAY_CLASS, GATEWAY, HTTP_ROUTE, REFERENCE_GRANT, INGRESS_ROUTE, MIDDLEWARE,
    TRAEFIK_SERVICE,
)  # fmt: skip

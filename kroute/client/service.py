"""ServiceClient: call `http://api.shop.svc/...` from Python without kube-proxy or a sidecar.

The URL's host picks the destination:
- `NAME.NAMESPACE.svc` or `NAME.NAMESPACE.svc.CLUSTER_DOMAIN` names a Service port (the URL's
  port, 80 by default), as cluster DNS does; the request goes to one of its endpoints;
- any other host is matched against the route table (Ingress, HTTPRoute, IngressRoute rules),
  as the gateway would route it.

Either way the request goes through the Router's pools: the same balancing, passive and active
health, and safe retries on another endpoint as the gateway's traffic. Nothing resolves DNS and
no virtual IP is involved: the endpoints come from the EndpointSlices the sources watch.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Mapping, Sequence
from urllib.parse import urlsplit

from kroute.errors import InvalidRequest
from kroute.gateway.router import Decision, Router
from kroute.rules.request import RequestHead
from kroute.transport.base import ForwardRequest, ForwardResponse

HeaderItems = Mapping[str, str] | Sequence[tuple[str, str]]


def service_of(host: str, *, cluster_domain: str = "cluster.local") -> tuple[str, str] | None:
    """(namespace, name) when `host` is a Service's cluster DNS name, else None."""
    labels = host.lower().rstrip(".").split(".")
    suffix = ["svc", *cluster_domain.split(".")] if cluster_domain else ["svc"]
    if (len(labels) == 3 and labels[2] == "svc") or (labels[2:] == suffix and len(labels) > 3):
        return labels[1], labels[0]
    return None


class ServiceClient:
    """Sends requests through `router` (which needs a transport); see the module docstring."""

    def __init__(self, router: Router, *, cluster_domain: str = "cluster.local") -> None:
        self.router = router
        self.cluster_domain = cluster_domain

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: HeaderItems = (),
        body: bytes | AsyncIterable[bytes] = b"",
        content_length: int | None = None,
    ) -> tuple[Decision, ForwardResponse]:
        """Send one request; the decision (route, backend, endpoint) and the streamed response.

        Raises NoRoute, NoHealthyEndpoint, InvalidBackend or an UpstreamError as
        `Router.forward` does, and InvalidRequest for a URL that is not plain `http://`.
        """
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise InvalidRequest(f"{url!r}: only http:// URLs with a host are supported")
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        items = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
        if not any(name.lower() == "host" for name, _ in items):
            items.insert(0, ("Host", parts.netloc.rpartition("@")[2]))
        request = ForwardRequest(
            method,
            target,
            [(n.encode("latin-1"), v.encode("latin-1")) for n, v in items],
            body=body,
            content_length=content_length,
        )
        service = service_of(parts.hostname, cluster_domain=self.cluster_domain)
        if service is not None:
            namespace, name = service
            return await self.router.forward_service(namespace, name, parts.port or 80, request)
        head = RequestHead.build(method, parts.netloc, target, headers=items)
        return await self.router.forward(head, request)

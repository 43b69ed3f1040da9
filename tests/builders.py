"""Shared builders: small Kubernetes objects written the way tests read best."""

from __future__ import annotations

from typing import Any

import kroute
from kroute.testing import request_from_url


def ingress(
    name: str,
    rules: list[tuple[str | None, list[tuple[str, str, str]]]] | None = None,
    *,
    namespace: str = "default",
    cls: str | None = "kroute",
    annotations: dict[str, str] | None = None,
    created: str | None = None,
    default: str | None = None,
    port: int | str = 80,
) -> dict[str, Any]:
    """An Ingress: rules are (host, [(path, pathType, service)]); services get `port`."""

    def backend(service: str) -> dict[str, Any]:
        key = "number" if isinstance(port, int) else "name"
        return {"service": {"name": service, "port": {key: port}}}

    spec: dict[str, Any] = {"rules": []}
    if cls is not None:
        spec["ingressClassName"] = cls
    if default is not None:
        spec["defaultBackend"] = backend(default)
    for host, paths in rules or []:
        rule: dict[str, Any] = {
            "http": {
                "paths": [{"path": p, "pathType": t, "backend": backend(s)} for p, t, s in paths]
            }
        }
        if host is not None:
            rule["host"] = host
        spec["rules"].append(rule)
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if annotations:
        meta["annotations"] = annotations
    if created:
        meta["creationTimestamp"] = created
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": meta, "spec": spec}


def gateway(
    name: str = "gw",
    listeners: list[dict[str, Any]] | None = None,
    *,
    namespace: str = "default",
    cls: str = "kroute",
) -> dict[str, Any]:
    """A Gateway; by default one HTTP listener on port 80 for any hostname."""
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "gatewayClassName": cls,
            "listeners": listeners or [{"name": "http", "protocol": "HTTP", "port": 80}],
        },
    }


def httproute(
    name: str,
    rules: list[dict[str, Any]],
    *,
    hostnames: list[str] | None = None,
    namespace: str = "default",
    parents: list[dict[str, Any]] | None = None,
    created: str | None = None,
) -> dict[str, Any]:
    """An HTTPRoute attached to Gateway default/gw unless `parents` says otherwise."""
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if created:
        meta["creationTimestamp"] = created
    spec: dict[str, Any] = {
        "parentRefs": parents or [{"name": "gw", "namespace": "default"}],
        "rules": rules,
    }
    if hostnames is not None:
        spec["hostnames"] = hostnames
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": meta,
        "spec": spec,
    }


def to(service: str, port: int = 80, **extra: Any) -> dict[str, Any]:
    """A backendRef."""
    return {"name": service, "port": port, **extra}


def ingressroute(
    name: str, routes: list[dict[str, Any]], *, namespace: str = "default"
) -> dict[str, Any]:
    """A Traefik IngressRoute."""
    return {
        "apiVersion": "traefik.io/v1alpha1",
        "kind": "IngressRoute",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"routes": routes},
    }


def compiled(*objects: dict[str, Any], **options: Any) -> kroute.CompileResult:
    """Compile objects and insist that none was rejected."""
    result = kroute.compile_objects(objects, **options)
    assert not result.errors, [str(e) for e in result.errors]
    return result


def route_of(result: kroute.CompileResult, url: str, **request: Any) -> kroute.Route | None:
    """The route for `host/path`, checked against the plain ordered scan."""
    head = request_from_url(url, **request)
    found = result.table.match(head)
    assert found is result.table.scan(head), "index and ordered scan disagree"
    return found


def backend_of(result: kroute.CompileResult, url: str, **request: Any) -> str | None:
    """`service` of the single backend the request goes to, or None for a 404."""
    found = route_of(result, url, **request)
    if found is None:
        return None
    return ",".join(b.name for b in found.backends)

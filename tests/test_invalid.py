"""Bad objects are rejected one by one, naming object and field; every other route still works."""

from __future__ import annotations

from typing import Any

import pytest

import kroute
from tests.builders import backend_of, gateway, httproute, ingress, ingressroute, to


def good() -> list[dict[str, Any]]:
    return [
        ingress("ok", [("ok.com", [("/", "Prefix", "ok")])]),
        gateway(),
        httproute("ok-route", [{"backendRefs": [to("gw-ok")]}], hostnames=["gw.com"]),
        ingressroute("ok-ir", [{"match": "Host(`ir.com`)", "services": [{"name": "ir-ok", "port": 80}]}]),
    ]  # fmt: skip


def broken_ingress(path: dict[str, Any]) -> dict[str, Any]:
    obj = ingress("bad", [("bad.com", [("/", "Prefix", "bad")])])
    obj["spec"]["rules"][0]["http"]["paths"][0] = path
    return obj


BACKEND = {"service": {"name": "s", "port": {"number": 80}}}

INVALID = [
    # (object, object named in the error, field named, words of the reason)
    (broken_ingress({"path": "/", "pathType": "Regex", "backend": BACKEND}),
     "Ingress default/bad", "spec.rules[0].http.paths[0].pathType", "unknown pathType 'Regex'"),
    (broken_ingress({"path": "/", "backend": BACKEND}),
     "Ingress default/bad", "spec.rules[0].http.paths[0].pathType", "unknown pathType None"),
    (broken_ingress({"pathType": "Exact", "backend": BACKEND}),
     "Ingress default/bad", "spec.rules[0].http.paths[0].path", "required"),
    (broken_ingress({"path": "nope", "pathType": "Exact", "backend": BACKEND}),
     "Ingress default/bad", "spec.rules[0].http.paths[0].path", "must start with '/'"),
    (broken_ingress({"path": "/", "pathType": "Exact", "backend": {}}),
     "Ingress default/bad", "spec.rules[0].http.paths[0].backend.service", "names no service"),
    (broken_ingress({"path": "/", "pathType": "Exact",
                     "backend": {"resource": {"kind": "Bucket", "name": "b"}}}),
     "Ingress default/bad", "spec.rules[0].http.paths[0].backend.resource", "not supported"),
    (broken_ingress({"path": "/", "pathType": "Exact",
                     "backend": {"service": {"name": "s", "port": {"number": 0}}}}),
     "Ingress default/bad", "spec.rules[0].http.paths[0].backend.service.port.number", "not a port"),
    (broken_ingress({"path": "/", "pathType": "Exact",
                     "backend": {"service": {"name": "s", "port": {}}}}),
     "Ingress default/bad", "spec.rules[0].http.paths[0].backend.service.port", "exactly one"),
    ({**ingress("badhost", [("bad_host.com", [("/", "Prefix", "x")])])},
     "Ingress default/badhost", "spec.rules[0].host", "not a DNS name"),
    ({**ingress("v1beta1", [("a.com", [("/", "Prefix", "x")])]), "apiVersion": "extensions/v1beta1"},
     "Ingress default/v1beta1", "apiVersion", "is not networking.k8s.io/v1"),
    ({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {}},
     "Ingress (unnamed)", "metadata.name", "required"),
    (httproute("badre", [{"matches": [{"path": {"type": "RegularExpression", "value": "(["}}],
                          "backendRefs": [to("x")]}]),
     "HTTPRoute default/badre", "spec.rules[0].matches[0].path.value", "invalid regular expression"),
    (httproute("badtype", [{"matches": [{"path": {"type": "Glob", "value": "/*"}}]}]),
     "HTTPRoute default/badtype", "spec.rules[0].matches[0].path.type", "unknown path type"),
    (httproute("badmethod", [{"matches": [{"method": "FETCH"}]}]),
     "HTTPRoute default/badmethod", "spec.rules[0].matches[0].method", "not an HTTP method"),
    (httproute("noport", [{"backendRefs": [{"name": "svc"}]}]),
     "HTTPRoute default/noport", "spec.rules[0].backendRefs[0].port", "required"),
    (httproute("weight", [{"backendRefs": [to("s", weight=-1)]}]),
     "HTTPRoute default/weight", "spec.rules[0].backendRefs[0].weight", "out of range"),
    (httproute("hdr", [{"matches": [{"headers": [{"value": "x"}]}]}]),
     "HTTPRoute default/hdr", "spec.rules[0].matches[0].headers[0].name", "required"),
    (ingressroute("badrule", [{"match": "Host(`a.com`) &&", "services": []}]),
     "IngressRoute default/badrule", "spec.routes[0].match", "expected a matcher"),
    (ingressroute("badre", [{"match": "PathRegexp(`[`)", "services": []}]),
     "IngressRoute default/badre", "spec.routes[0].match", "invalid regular expression"),
    (ingressroute("nomatch", [{"services": []}]),
     "IngressRoute default/nomatch", "spec.routes[0].match", "required"),
    (ingressroute("tsvc", [{"match": "Host(`t.com`)",
                            "services": [{"name": "x", "kind": "ExternalService"}]}]),
     "IngressRoute default/tsvc", "spec.routes[0].services[0].kind", "is not Service or TraefikService"),
    (ingressroute("noport", [{"match": "Host(`t.com`)", "services": [{"name": "x"}]}]),
     "IngressRoute default/noport", "spec.routes[0].services[0].port", "required"),
    ({**ingressroute("str", []), "spec": "oops"},
     "IngressRoute default/str", "spec", "expected an object, got string"),
    # As a real API server lists them: no kind, no apiVersion. Reported, never dropped unseen.
    ({k: v for k, v in ingress("kindless", []).items() if k not in ("kind", "apiVersion")},
     "object default/kindless", "kind", "missing"),
    ({k: v for k, v in ingress("noversion", []).items() if k != "apiVersion"},
     "Ingress default/noversion", "apiVersion", "missing"),
]  # fmt: skip


@pytest.mark.parametrize(("bad", "obj", "field", "reason"), INVALID)
def test_invalid_object_is_named_and_others_still_route(
    bad: dict[str, Any], obj: str, field: str, reason: str
) -> None:
    result = kroute.compile_objects([*good(), bad])
    assert len(result.errors) == 1, [str(e) for e in result.errors]
    error = result.errors[0]
    assert (error.obj, error.field) == (obj, field)
    assert reason in error.reason
    assert str(error) == f"{obj}: {field}: {error.reason}"
    assert backend_of(result, "ok.com/") == "ok"
    assert backend_of(result, "gw.com/") == "gw-ok"
    assert backend_of(result, "ir.com/") == "ir-ok"


def test_invalid_gateway_is_rejected_and_its_routes_not_attached() -> None:
    bad_gw = gateway(listeners=[{"name": "l", "protocol": "HTTP"}])
    result = kroute.compile_objects([bad_gw, httproute("r", [{"backendRefs": [to("x")]}])])
    assert [(e.obj, e.field) for e in result.errors] == [
        ("Gateway default/gw", "spec.listeners[0].port")
    ]
    assert len(result.table) == 0


def test_error_carries_the_manifest_origin() -> None:
    text = (
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: x}\nspec: {rules: 3}\n"
    )
    result = kroute.compile_objects(kroute.load_text(text, "deploy/x.yaml"))
    assert str(result.errors[0]) == (
        "deploy/x.yaml: Ingress default/x: spec.rules: expected a list, got number"
    )

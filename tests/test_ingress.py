"""Kubernetes Ingress semantics (SEMANTICS.md section 1); each case names its source."""

from __future__ import annotations

import pytest

import kroute
from tests.builders import backend_of, compiled, ingress, route_of

# Kubernetes docs, Ingress concept page, "Examples" table under "Path types":
# (rules as (path, pathType), request path, expected rule index or None).
K8S_PATH_EXAMPLES = [
    ([("/", "Prefix")], "/anything/at/all", 0),
    ([("/foo", "Exact")], "/foo", 0),
    ([("/foo", "Exact")], "/bar", None),
    ([("/foo", "Exact")], "/foo/", None),
    ([("/foo/", "Exact")], "/foo", None),
    ([("/foo", "Prefix")], "/foo", 0),
    ([("/foo", "Prefix")], "/foo/", 0),
    ([("/foo/", "Prefix")], "/foo", 0),
    ([("/foo/", "Prefix")], "/foo/", 0),
    ([("/aaa/bb", "Prefix")], "/aaa/bbb", None),
    ([("/aaa/bbb", "Prefix")], "/aaa/bbb", 0),
    ([("/aaa/bbb/", "Prefix")], "/aaa/bbb", 0),
    ([("/aaa/bbb", "Prefix")], "/aaa/bbb/", 0),
    ([("/aaa/bbb", "Prefix")], "/aaa/bbb/ccc", 0),
    ([("/aaa/bbb", "Prefix")], "/aaa/bbbxyz", None),
    ([("/", "Prefix"), ("/aaa", "Prefix")], "/aaa/ccc", 1),
    ([("/", "Prefix"), ("/aaa", "Prefix"), ("/aaa/bbb", "Prefix")], "/aaa/bbb", 2),
    ([("/", "Prefix"), ("/aaa", "Prefix"), ("/aaa/bbb", "Prefix")], "/ccc", 0),
    ([("/aaa", "Prefix")], "/ccc", None),
    ([("/foo", "Prefix"), ("/foo", "Exact")], "/foo", 1),
    # Case-sensitive matching ("Exact: Matches the URL path exactly and with case sensitivity").
    ([("/foo", "Exact")], "/FOO", None),
    ([("/Foo", "Prefix")], "/foo/bar", None),
    # ImplementationSpecific is Prefix semantics in kroute (docs/rules.md).
    ([("/foo", "ImplementationSpecific")], "/foo/bar", 0),
    ([("/foo", "ImplementationSpecific")], "/foobar", None),
]


@pytest.mark.parametrize(("paths", "request_path", "expected"), K8S_PATH_EXAMPLES)
def test_kubernetes_path_examples(
    paths: list[tuple[str, str]], request_path: str, expected: int | None
) -> None:
    rules = [(p, t, f"svc{i}") for i, (p, t) in enumerate(paths)]
    result = compiled(ingress("web", [("example.com", rules)]))
    want = None if expected is None else f"svc{expected}"
    assert backend_of(result, "example.com" + request_path) == want


def test_wildcard_host_matches_exactly_one_label() -> None:
    # Ingress concept page, "Hostname wildcards": *.foo.com matches bar.foo.com only.
    result = compiled(ingress("w", [("*.foo.com", [("/", "Prefix", "wild")])]))
    assert backend_of(result, "bar.foo.com/") == "wild"
    assert backend_of(result, "baz.bar.foo.com/") is None
    assert backend_of(result, "foo.com/") is None


def test_exact_host_beats_wildcard_and_hostless_even_with_shorter_path() -> None:
    # nginx server selection (ingress-nginx): exact server name, then wildcard, then default.
    result = compiled(
        ingress("any", [(None, [("/api/v1", "Prefix", "hostless")])]),
        ingress("wild", [("*.foo.com", [("/api", "Prefix", "wild")])]),
        ingress("exact", [("a.foo.com", [("/", "Prefix", "exact")])]),
    )
    assert backend_of(result, "a.foo.com/api/v1/x") == "exact"
    assert backend_of(result, "b.foo.com/api/v1/x") == "wild"
    assert backend_of(result, "other.com/api/v1/x") == "hostless"


def test_rules_fall_through_to_less_specific_hosts() -> None:
    # Ingress spec: a rule without host "applies to all inbound HTTP traffic"; kroute routes
    # a request that no rule of its exact host takes through the host-less rules (docs/rules.md).
    result = compiled(
        ingress("exact", [("a.com", [("/api", "Prefix", "api")])]),
        ingress("any", [(None, [("/", "Prefix", "catchall")])]),
    )
    assert backend_of(result, "a.com/api") == "api"
    assert backend_of(result, "a.com/other") == "catchall"


def test_host_header_is_normalised() -> None:
    # SEMANTICS.md section 1: nginx strips the port and one trailing dot, and lower-cases.
    result = compiled(ingress("web", [("www.example.com", [("/", "Prefix", "www")])]))
    for host in ("www.example.com", "WWW.Example.COM", "www.example.com:8080", "www.example.com."):
        assert backend_of(result, host + "/") == "www", host
    assert backend_of(result, "www.example.com.evil/") is None


def test_default_backend_takes_only_what_no_rule_matches() -> None:
    # Ingress concept page, "DefaultBackend".
    result = compiled(
        ingress("web", [("a.com", [("/", "Prefix", "web")])], default="fallback"),
    )
    assert backend_of(result, "a.com/x") == "web"
    assert backend_of(result, "b.com/x") == "fallback"
    assert route_of(result, "b.com/x").field == "spec.defaultBackend"  # type: ignore[union-attr]


def test_default_backend_comes_after_rules_of_every_ingress() -> None:
    result = compiled(
        ingress("d", [], default="fallback", created="2020-01-01T00:00:00Z"),
        ingress("web", [(None, [("/app", "Prefix", "app")])], created="2024-01-01T00:00:00Z"),
    )
    assert backend_of(result, "x.com/app") == "app"
    assert backend_of(result, "x.com/") == "fallback"


def test_oldest_default_backend_wins() -> None:
    result = compiled(
        ingress("young", [], default="young", created="2024-01-01T00:00:00Z"),
        ingress("old", [], default="old", created="2020-01-01T00:00:00Z"),
    )
    assert backend_of(result, "x.com/") == "old"


def test_ingresses_sharing_a_host_merge() -> None:
    # Ingress concept page: several Ingresses for one host are merged by the controller.
    result = compiled(
        ingress("www", [("shop.com", [("/", "Prefix", "www")])]),
        ingress("api", [("shop.com", [("/api", "Prefix", "api")])]),
    )
    assert backend_of(result, "shop.com/api/cart") == "api"
    assert backend_of(result, "shop.com/about") == "www"


def test_collision_oldest_ingress_wins_then_name() -> None:
    # ingress-nginx: on the same host and path, the oldest creationTimestamp wins.
    result = compiled(
        ingress("b-new", [("a.com", [("/", "Prefix", "new")])], created="2024-05-01T00:00:00Z"),
        ingress("c-old", [("a.com", [("/", "Prefix", "old")])], created="2021-05-01T00:00:00Z"),
    )
    assert backend_of(result, "a.com/") == "old"
    # No timestamps (manifest files): `{namespace}/{name}` decides, whatever the input order.
    for order in (1, -1):
        objs = [
            ingress("zeta", [("a.com", [("/", "Prefix", "zeta")])]),
            ingress("alpha", [("a.com", [("/", "Prefix", "alpha")])]),
        ][::order]
        assert backend_of(compiled(*objs), "a.com/") == "alpha"


def test_unquoted_yaml_timestamp_is_understood() -> None:
    text = """
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: b, creationTimestamp: 2020-01-01T00:00:00Z}
spec:
  ingressClassName: kroute
  rules: [{host: a.com, http: {paths: [{path: /, pathType: Prefix,
           backend: {service: {name: b, port: {number: 80}}}}]}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: a, creationTimestamp: "2023-01-01T00:00:00Z"}
spec:
  ingressClassName: kroute
  rules: [{host: a.com, http: {paths: [{path: /, pathType: Prefix,
           backend: {service: {name: a, port: {number: 80}}}}]}}]
"""
    result = kroute.compile_objects(kroute.load_text(text))
    assert not result.errors
    assert backend_of(result, "a.com/") == "b"


CLASS_CASES = [
    # (ingressClassName, legacy annotation, IngressClasses given, served?)
    ("kroute", None, None, True),
    ("nginx", None, None, False),
    (None, "kroute", None, True),  # legacy kubernetes.io/ingress.class annotation
    (None, "nginx", None, False),
    (None, None, None, True),  # no class and no IngressClass at all: served
    (None, None, {"kroute": True}, True),  # default IngressClass is ours
    (None, None, {"kroute": False, "nginx": True}, False),  # default belongs to another
    (None, None, {"kroute": False}, True),  # classes given, none default: served
    ("kroute", "nginx", None, True),  # the field wins over the annotation
]


@pytest.mark.parametrize(("field", "annotation", "classes", "served"), CLASS_CASES)
def test_ingress_class_selection(
    field: str | None, annotation: str | None, classes: dict[str, bool] | None, served: bool
) -> None:
    # Ingress concept page, "Ingress class" and "Default IngressClass"; the legacy annotation.
    objs = [
        ingress(
            "web",
            [("a.com", [("/", "Prefix", "web")])],
            cls=field,
            annotations={"kubernetes.io/ingress.class": annotation} if annotation else None,
        )
    ]
    for name, default in (classes or {}).items():
        objs.append(
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "IngressClass",
                "metadata": {
                    "name": name,
                    "annotations": {
                        "ingressclass.kubernetes.io/is-default-class": str(default).lower()
                    },
                },
                "spec": {"controller": f"example.com/{name}"},
            }
        )
    result = compiled(*objs)
    assert (backend_of(result, "a.com/") == "web") is served


def test_custom_ingress_class_name() -> None:
    result = compiled(
        ingress("web", [("a.com", [("/", "Prefix", "web")])], cls="edge"), ingress_class="edge"
    )
    assert backend_of(result, "a.com/") == "web"


def test_backend_port_by_number_or_name() -> None:
    by_number = compiled(ingress("n", [("a.com", [("/", "Prefix", "svc")])], port=8080))
    by_name = compiled(ingress("m", [("b.com", [("/", "Prefix", "svc")])], port="http"))
    assert str(route_of(by_number, "a.com/").backends[0]) == "default/svc:8080"  # type: ignore[union-attr]
    assert str(route_of(by_name, "b.com/").backends[0]) == "default/svc:http"  # type: ignore[union-attr]


def test_path_normalisation_applies_to_requests_and_rules() -> None:
    # docs/rules.md "Path normalisation": a crafted path cannot reach what its normal form
    # does not reach.
    result = compiled(
        ingress(
            "web",
            [("a.com", [("/admin", "Exact", "admin"), ("/public", "Prefix", "public")])],
        )
    )
    assert backend_of(result, "a.com/public/../admin") == "admin"
    assert backend_of(result, "a.com/public/%2E%2E/admin") == "admin"
    assert backend_of(result, "a.com//admin") == "admin"
    assert backend_of(result, "a.com/%61dmin") == "admin"  # %61 is "a", unreserved
    assert backend_of(result, "a.com/public%2F..%2Fadmin") is None  # %2F stays a character
    assert backend_of(result, "a.com/public/./x") == "public"

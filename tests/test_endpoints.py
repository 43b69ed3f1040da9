"""Service + EndpointSlices -> usable endpoints (SEMANTICS.md section 5)."""

from __future__ import annotations

from typing import Any

import pytest

from kroute.objects import ObjectRef
from kroute.pool.endpoints import Endpoint, ServiceEndpoints, select_usable

SVC = ObjectRef("Service", "default", "web")


def service(ports: list[dict[str, Any]] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"ports": ports or [{"name": "http", "port": 80, "targetPort": 8080}], **spec},
    }


def ep(address: str, **conditions: Any) -> dict[str, Any]:
    return {"addresses": [address], "conditions": conditions}


def eps(name: str, endpoints: list[dict[str, Any]], *, port_name: str | None = "http",
        port: int = 8080, family: str = "IPv4") -> dict[str, Any]:  # fmt: skip
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": family,
        "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
        "endpoints": endpoints,
    }  # fmt: skip


def addresses(se: ServiceEndpoints) -> list[str]:
    return sorted(str(e) for e in se.endpoints())


def test_aggregates_slices_and_maps_ports_by_name() -> None:
    se = ServiceEndpoints(SVC, 80)
    se.set_service(service())
    se.apply_slice(eps("web-a", [ep("10.0.0.1"), ep("10.0.0.2")]))
    se.apply_slice(eps("web-b", [ep("10.0.0.3")], port=9090))
    assert addresses(se) == ["10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:9090"]
    by_name = ServiceEndpoints(SVC, "http")
    by_name.set_service(service())
    by_name.apply_slice(eps("web-a", [ep("10.0.0.1")]))
    assert addresses(by_name) == ["10.0.0.1:8080"]


def test_unnamed_single_port() -> None:
    se = ServiceEndpoints(SVC, 80)
    se.set_service(service([{"port": 80, "targetPort": 8080}]))
    se.apply_slice(eps("web-a", [ep("10.0.0.1")], port_name=None))
    assert addresses(se) == ["10.0.0.1:8080"]


def test_slice_without_our_port_contributes_nothing() -> None:
    se = ServiceEndpoints(SVC, 80)
    se.set_service(service())
    se.apply_slice(eps("web-a", [ep("10.0.0.1")], port_name="metrics"))
    assert addresses(se) == []


def test_duplicates_across_slices_count_once_and_the_better_copy_wins() -> None:
    # EndpointSlice concept page, "Duplicate endpoints": an endpoint may appear in two slices
    # while it moves; kube-proxy keeps the ready copy.
    se = ServiceEndpoints(SVC, 80)
    se.set_service(service())
    se.apply_slice(eps("web-a", [ep("10.0.0.1", ready=False), ep("10.0.0.2")]))
    delta = se.apply_slice(eps("web-b", [ep("10.0.0.1", ready=True)]))
    assert [str(e) for e in delta.added] == ["10.0.0.1:8080"]
    assert addresses(se) == ["10.0.0.1:8080", "10.0.0.2:8080"]
    delta = se.delete_slice("web-b")
    assert delta.removed == (("10.0.0.1", 8080),)


def test_conditions_ready_first_then_serving_terminating_fallback() -> None:
    # V1EndpointConditions: ready nil = true, serving nil = true, terminating nil = false.
    se = ServiceEndpoints(SVC, 80)
    se.set_service(service())
    se.apply_slice(eps("web-a", [
        ep("10.0.0.1"),                                             # ready (nil)
        ep("10.0.0.2", ready=False, serving=True, terminating=True),  # draining
        ep("10.0.0.3", ready=False),                                # not ready, not terminating
    ]))  # fmt: skip
    assert addresses(se) == ["10.0.0.1:8080"]
    assert not se.fallback
    delta = se.apply_slice(eps("web-a", [
        ep("10.0.0.1", ready=False, serving=True, terminating=True),
        ep("10.0.0.2", ready=False, serving=True, terminating=True),
        ep("10.0.0.3", ready=False),
        ep("10.0.0.4", ready=False, serving=False, terminating=True),
    ]))  # fmt: skip
    assert se.fallback
    assert addresses(se) == ["10.0.0.1:8080", "10.0.0.2:8080"]
    assert {str(e) for e in delta.added} == {"10.0.0.1:8080", "10.0.0.2:8080"}
    delta = se.apply_slice(eps("web-b", [ep("10.0.0.9")]))
    assert not se.fallback
    assert addresses(se) == ["10.0.0.9:8080"]
    assert set(delta.removed) == {("10.0.0.1", 8080), ("10.0.0.2", 8080)}


def test_ipv4_and_ipv6_slices() -> None:
    se = ServiceEndpoints(SVC, 80)
    se.set_service(service())
    se.apply_slice(eps("web-v4", [ep("10.0.0.1")]))
    se.apply_slice(eps("web-v6", [ep("fd00::1")], family="IPv6"))
    assert addresses(se) == ["10.0.0.1:8080", "[fd00::1]:8080"]


def test_service_missing_or_port_unknown() -> None:
    se = ServiceEndpoints(SVC, 81)
    se.apply_slice(eps("web-a", [ep("10.0.0.1")]))
    assert se.error == f"{SVC} not found"
    assert addresses(se) == []
    se.set_service(service())
    assert se.error is not None
    assert "no port 81" in se.error
    ok = ServiceEndpoints(SVC, 80)
    ok.apply_slice(eps("web-a", [ep("10.0.0.1")]))  # the slice arrives before its Service
    delta = ok.set_service(service())
    assert ok.error is None
    assert [str(e) for e in delta.added] == ["10.0.0.1:8080"]
    assert ok.set_service(None).removed == (("10.0.0.1", 8080),)


def test_external_name_services_are_an_option() -> None:
    external = service(type="ExternalName", externalName="db.example.com")
    off = ServiceEndpoints(SVC, 80)
    off.set_service(external)
    assert addresses(off) == []
    assert off.error is not None
    assert "ExternalName" in off.error
    on = ServiceEndpoints(SVC, 80, allow_external_name=True)
    on.set_service(external)
    assert addresses(on) == ["db.example.com:80"]


def test_delta_touches_only_the_changed_slice() -> None:
    se = ServiceEndpoints(SVC, 80)
    se.set_service(service())
    for s in range(10):
        se.apply_slice(eps(f"web-{s}", [ep(f"10.0.{s}.{i}") for i in range(100)]))
    assert len(se.endpoints()) == 1000
    changed = [ep(f"10.0.3.{i}") for i in range(99)] + [ep("10.0.3.200")]
    delta = se.apply_slice(eps("web-3", changed))
    assert [str(e) for e in delta.added] == ["10.0.3.200:8080"]
    assert delta.removed == (("10.0.3.99", 8080),)


@pytest.mark.parametrize(
    ("conditions", "usable", "fallback"),
    [
        ([{}, {"ready": False}], ["a"], False),
        ([{"ready": False, "terminating": True}], ["a"], True),
        ([{"ready": False, "serving": False, "terminating": True}], [], True),
    ],
)
def test_select_usable_for_endpoints_from_anywhere(
    conditions: list[dict[str, bool]], usable: list[str], fallback: bool
) -> None:
    endpoints = [
        Endpoint(chr(ord("a") + i), 80, ready=c.get("ready", True),
                 serving=c.get("serving", True), terminating=c.get("terminating", False))
        for i, c in enumerate(conditions)
    ]  # fmt: skip
    chosen, is_fallback = select_usable(endpoints)
    assert [e.address for e in chosen] == usable
    assert is_fallback is fallback

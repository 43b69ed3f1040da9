"""kroute.status: each condition and reason, shown by objects a real cluster accepts (valid per
the Gateway API CRDs), and the merge's promises (hypothesis): merging again changes nothing,
lastTransitionTime moves only with a condition's status, other controllers' entries stay."""

from __future__ import annotations

import copy
import datetime
import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

import kroute
from kroute.cli import main
from kroute.rules.entrypoints import EntryPoint
from kroute.status import (
    CONTROLLER_NAME,
    PublishedAddresses,
    StatusSettings,
    merge_status,
    plan_status,
    withdraw_status,
)
from tests.builders import gateway, httproute, ingress, to

NOW = datetime.datetime(2025, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
LATER = NOW + datetime.timedelta(hours=1)
ADDRESSES = PublishedAddresses.parse(["192.0.2.10", "lb.example.com"])
GROUP = "gateway.networking.k8s.io"


def service(name: str, port: int = 80, namespace: str = "default", **extra: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"ports": [{"port": port, **extra}]}}  # fmt: skip


def gateway_class(name: str = "kroute", controller: str = CONTROLLER_NAME,
                  **spec: Any) -> dict[str, Any]:  # fmt: skip
    return {"apiVersion": f"{GROUP}/v1", "kind": "GatewayClass", "metadata": {"name": name},
            "spec": {"controllerName": controller, **spec}}  # fmt: skip


def statuses(*objects: dict[str, Any], **settings: Any) -> dict[tuple[str, str], Any]:
    """(kind, name) -> the status kroute would write."""
    settings.setdefault("addresses", ADDRESSES)
    updates = plan_status(objects, StatusSettings(**settings), now=NOW)
    return {(u.kind, u.name): u.status for u in updates}


def cond(conditions: list[dict[str, Any]], kind: str) -> tuple[str, str]:
    found = next(c for c in conditions if c["type"] == kind)
    return found["status"], found["reason"]


def listener(status: dict[str, Any], name: str) -> dict[str, Any]:
    return next(entry for entry in status["listeners"] if entry["name"] == name)


def parent(status: dict[str, Any], index: int = 0) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = status["parents"][index]["conditions"]
    return entries


# --- GatewayClass ---------------------------------------------------------------------------


def test_gateway_class_of_kroute_is_accepted_and_others_never_touched() -> None:
    found = statuses(gateway_class(), gateway_class("other", "example.net/gateway"))
    assert cond(found[("GatewayClass", "kroute")]["conditions"], "Accepted") == ("True", "Accepted")
    assert ("GatewayClass", "other") not in found
    # kroute's controllerName under another class name: another kroute may serve it.
    assert ("GatewayClass", "x") not in statuses(gateway_class("x"))


def test_gateway_class_with_parameters_is_not_accepted() -> None:
    cls = gateway_class(parametersRef={"group": "example.net", "kind": "Config", "name": "c"})
    found = statuses(cls)
    assert cond(found[("GatewayClass", "kroute")]["conditions"], "Accepted") == (
        "False", "InvalidParameters")  # fmt: skip


def test_gateways_of_a_class_another_controller_owns_get_nothing() -> None:
    found = statuses(gateway_class(controller="example.net/gateway"), gateway())
    assert found == {}


# --- Gateway and listeners ------------------------------------------------------------------


def test_gateway_accepted_programmed_with_addresses_and_attached_routes() -> None:
    gw = gateway(listeners=[{"name": "http", "protocol": "HTTP", "port": 80}])
    gw["metadata"]["generation"] = 3
    found = statuses(gw, httproute("r", [{"backendRefs": [to("svc")]}], hostnames=["a.test"]),
                     service("svc"))  # fmt: skip
    status = found[("Gateway", "gw")]
    assert status["addresses"] == [{"type": "IPAddress", "value": "192.0.2.10"},
                                   {"type": "Hostname", "value": "lb.example.com"}]  # fmt: skip
    assert cond(status["conditions"], "Accepted") == ("True", "Accepted")
    assert cond(status["conditions"], "Programmed") == ("True", "Programmed")
    assert all(c["observedGeneration"] == 3 for c in status["conditions"])
    assert all(c["lastTransitionTime"] == "2025-01-02T03:04:05Z" for c in status["conditions"])
    http = listener(status, "http")
    assert http["attachedRoutes"] == 1
    assert http["supportedKinds"] == [{"group": GROUP, "kind": "HTTPRoute"}]
    assert [cond(http["conditions"], t) for t in ("Accepted", "ResolvedRefs", "Programmed",
                                                   "Conflicted")] == [
        ("True", "Accepted"), ("True", "ResolvedRefs"), ("True", "Programmed"),
        ("False", "NoConflicts")]  # fmt: skip


def test_unsupported_protocol_listener() -> None:
    gw = gateway(listeners=[{"name": "http", "protocol": "HTTP", "port": 80},
                            {"name": "tcp", "protocol": "TCP", "port": 9000}])  # fmt: skip
    status = statuses(gw)[("Gateway", "gw")]
    tcp = listener(status, "tcp")
    assert cond(tcp["conditions"], "Accepted") == ("False", "UnsupportedProtocol")
    assert cond(tcp["conditions"], "Programmed") == ("False", "Invalid")
    assert tcp["supportedKinds"] == []
    # One listener left: the Gateway is accepted, and says which are not.
    assert cond(status["conditions"], "Accepted") == ("True", "ListenersNotValid")
    only_tcp = statuses(gateway(listeners=[{"name": "tcp", "protocol": "TCP", "port": 9000}]))
    assert cond(only_tcp[("Gateway", "gw")]["conditions"], "Accepted") == (
        "False", "ListenersNotValid")  # fmt: skip
    assert cond(only_tcp[("Gateway", "gw")]["conditions"], "Programmed") == ("False", "Invalid")


def https(name: str = "https", hostname: str | None = "a.test", **ref: Any) -> dict[str, Any]:
    out = {"name": name, "protocol": "HTTPS", "port": 443,
           "tls": {"mode": "Terminate", "certificateRefs": [{"name": "cert", **ref}]}}  # fmt: skip
    if hostname:
        out["hostname"] = hostname
    return out


def secret(
    name: str = "cert", namespace: str = "default", kind: str = "kubernetes.io/tls"
) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "type": kind,
            "metadata": {"name": name, "namespace": namespace},
            "data": {"tls.crt": "Y3J0", "tls.key": "a2V5"}}  # fmt: skip


def test_missing_or_unusable_certificate_secret() -> None:
    gw = gateway(listeners=[https()])
    missing = listener(statuses(gw)[("Gateway", "gw")], "https")
    assert cond(missing["conditions"], "ResolvedRefs") == ("False", "InvalidCertificateRef")
    assert cond(missing["conditions"], "Programmed") == ("False", "Invalid")
    assert "Secret default/cert not found" in missing["conditions"][1]["message"]
    opaque = listener(statuses(gw, secret(kind="Opaque"))[("Gateway", "gw")], "https")
    assert cond(opaque["conditions"], "ResolvedRefs") == ("False", "InvalidCertificateRef")
    good = listener(statuses(gw, secret())[("Gateway", "gw")], "https")
    assert cond(good["conditions"], "ResolvedRefs") == ("True", "ResolvedRefs")
    # Offline without Secrets in the manifests, a Secret cannot be said to be missing.
    unknown = statuses(gw, complete_kinds=frozenset({"Service"}))[("Gateway", "gw")]
    assert cond(listener(unknown, "https")["conditions"], "ResolvedRefs") == (
        "True", "ResolvedRefs")  # fmt: skip


def test_certificate_in_another_namespace_needs_a_grant() -> None:
    gw = gateway(listeners=[https(namespace="certs")])
    found = listener(statuses(gw, secret(namespace="certs"))[("Gateway", "gw")], "https")
    assert cond(found["conditions"], "ResolvedRefs") == ("False", "RefNotPermitted")
    grant = {"apiVersion": f"{GROUP}/v1beta1", "kind": "ReferenceGrant",
             "metadata": {"name": "g", "namespace": "certs"},
             "spec": {"from": [{"group": GROUP, "kind": "Gateway", "namespace": "default"}],
                      "to": [{"group": "", "kind": "Secret"}]}}  # fmt: skip
    granted = statuses(gw, secret(namespace="certs"), grant)[("Gateway", "gw")]
    assert cond(listener(granted, "https")["conditions"], "ResolvedRefs") == (
        "True", "ResolvedRefs")  # fmt: skip


def test_route_kinds_kroute_does_not_serve() -> None:
    gw = gateway(listeners=[{"name": "http", "protocol": "HTTP", "port": 80, "allowedRoutes": {
        "kinds": [{"kind": "HTTPRoute"}, {"group": GROUP, "kind": "GRPCRoute"}]}}])  # fmt: skip
    http = listener(statuses(gw)[("Gateway", "gw")], "http")
    assert cond(http["conditions"], "ResolvedRefs") == ("False", "InvalidRouteKinds")
    assert http["supportedKinds"] == [{"group": GROUP, "kind": "HTTPRoute"}]


@pytest.mark.parametrize(("second", "reason"), [
    ({"name": "b", "protocol": "HTTP", "port": 80, "hostname": "a.test"}, "HostnameConflict"),
    ({"name": "b", "protocol": "HTTPS", "port": 80, "hostname": "b.test",
      "tls": {"certificateRefs": [{"name": "cert"}]}}, "ProtocolConflict"),
])  # fmt: skip
def test_conflicted_listeners(second: dict[str, Any], reason: str) -> None:
    gw = gateway(listeners=[{"name": "a", "protocol": "HTTP", "port": 80, "hostname": "a.test"},
                            second])  # fmt: skip
    status = statuses(gw, secret())[("Gateway", "gw")]
    for name in ("a", "b"):
        assert cond(listener(status, name)["conditions"], "Conflicted") == ("True", reason)


def test_listener_on_a_port_no_entry_point_serves() -> None:
    gw = gateway(listeners=[{"name": "http", "protocol": "HTTP", "port": 8080}])
    status = statuses(gw, entry_points=[EntryPoint("web", 80)])[("Gateway", "gw")]
    assert cond(listener(status, "http")["conditions"], "Accepted") == ("False", "PortUnavailable")


def test_gateway_asking_for_an_address_kroute_does_not_publish() -> None:
    gw = gateway()
    gw["spec"]["addresses"] = [{"type": "IPAddress", "value": "192.0.2.99"}]
    status = statuses(gw)[("Gateway", "gw")]
    assert cond(status["conditions"], "Programmed") == ("False", "AddressNotUsable")
    gw["spec"]["addresses"] = [{"type": "example.net/Pool", "value": "p"}]
    status = statuses(gw)[("Gateway", "gw")]
    assert cond(status["conditions"], "Accepted") == ("False", "UnsupportedAddress")


# --- HTTPRoute ------------------------------------------------------------------------------


def route_status(route: dict[str, Any], *extra: dict[str, Any]) -> dict[str, Any]:
    found = statuses(gateway(), route, service("svc"), *extra)
    status: dict[str, Any] = found[("HTTPRoute", route["metadata"]["name"])]
    return status


@pytest.mark.parametrize(("route", "reason"), [
    (httproute("r", [{"backendRefs": [to("svc")]}]), "Accepted"),
    (httproute("r", [{"backendRefs": [to("svc")]}], namespace="team"), "NotAllowedByListeners"),
    (httproute("r", [{"backendRefs": [to("svc")]}],
               parents=[{"name": "gw", "sectionName": "nope"}]), "NoMatchingParent"),
    (httproute("r", [{"backendRefs": [to("svc")]}],
               parents=[{"name": "gw", "port": 8443}]), "NoMatchingParent"),
    (httproute("r", [{"matches": [{"path": {"type": "RegularExpression", "value": "/(a"}}],
                      "backendRefs": [to("svc")]}]), "UnsupportedValue"),
    (httproute("r", [{"sessionPersistence": {"sessionName": "s"},
                      "backendRefs": [to("svc")]}]), "UnsupportedValue"),
])  # fmt: skip
def test_route_accepted_reasons(route: dict[str, Any], reason: str) -> None:
    if route["metadata"]["namespace"] == "team":
        route["spec"]["parentRefs"][0]["namespace"] = "default"
    status = route_status(route)
    entry = status["parents"][0]
    assert entry["controllerName"] == CONTROLLER_NAME
    assert entry["parentRef"] == route["spec"]["parentRefs"][0]
    assert cond(entry["conditions"], "Accepted") == (
        ("True", "Accepted") if reason == "Accepted" else ("False", reason)
    )


def test_no_matching_listener_hostname() -> None:
    gw = gateway(listeners=[{"name": "http", "protocol": "HTTP", "port": 80,
                             "hostname": "*.example.com"}])  # fmt: skip
    route = httproute("r", [{"backendRefs": [to("svc")]}], hostnames=["shop.example.org"])
    found = statuses(gw, route, service("svc"))
    assert cond(parent(found[("HTTPRoute", "r")]), "Accepted") == (
        "False", "NoMatchingListenerHostname")  # fmt: skip
    assert listener(found[("Gateway", "gw")], "http")["attachedRoutes"] == 0


@pytest.mark.parametrize(("backend", "extra", "reason"), [
    (to("svc"), [], "ResolvedRefs"),
    (to("gone"), [], "BackendNotFound"),
    (to("svc", 81), [], "BackendNotFound"),
    (to("svc", namespace="other"), [service("svc", namespace="other")], "RefNotPermitted"),
    ({"group": "example.net", "kind": "Bucket", "name": "b"}, [], "InvalidKind"),
    (to("h2", 80), [service("h2", appProtocol="kubernetes.io/h2c")], "UnsupportedProtocol"),
])  # fmt: skip
def test_route_resolved_refs_reasons(
    backend: dict[str, Any], extra: list[dict[str, Any]], reason: str
) -> None:
    status = route_status(httproute("r", [{"backendRefs": [backend]}]), *extra)
    ok = "True" if reason == "ResolvedRefs" else "False"
    assert cond(parent(status), "ResolvedRefs") == (ok, reason)
    assert cond(parent(status), "Accepted") == ("True", "Accepted")  # its rules are served


def test_parents_of_other_controllers_are_kept_and_gateways_not_ours_ignored() -> None:
    route = httproute("r", [{"backendRefs": [to("svc")]}],
                      parents=[{"name": "gw"}, {"name": "theirs"}])  # fmt: skip
    theirs_entry = {"parentRef": {"name": "theirs"}, "controllerName": "example.net/gw",
                    "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted",
                                    "message": "", "lastTransitionTime": "2020-01-01T00:00:00Z"}]}  # fmt: skip
    route["status"] = {"parents": [theirs_entry]}
    found = statuses(gateway(), gateway("theirs", cls="other"), route, service("svc"))
    parents = found[("HTTPRoute", "r")]["parents"]
    assert parents[0] == theirs_entry
    assert [p["parentRef"] for p in parents[1:]] == [{"name": "gw"}]


def test_attached_routes_count_only_accepted_routes() -> None:
    good = httproute("good", [{"backendRefs": [to("svc")]}])
    bad = httproute("bad", [{"sessionPersistence": {"sessionName": "s"},
                             "backendRefs": [to("svc")]}])  # fmt: skip
    found = statuses(gateway(), good, bad, service("svc"))
    assert listener(found[("Gateway", "gw")], "http")["attachedRoutes"] == 1


# --- Ingress --------------------------------------------------------------------------------


def test_ingress_load_balancer_for_served_ingresses_only() -> None:
    ours = ingress("ours", [("a.test", [("/", "Prefix", "svc")])])
    theirs = ingress("theirs", [("b.test", [("/", "Prefix", "svc")])], cls="nginx")
    theirs["status"] = {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}, {"ip": "192.0.2.77"}]}}
    found = statuses(ours, theirs)
    assert found[("Ingress", "ours")] == {"loadBalancer": {"ingress": [
        {"ip": "192.0.2.10"}, {"hostname": "lb.example.com"}]}}  # fmt: skip
    # kroute stopped serving it: its own address goes, the other controller's stays.
    assert found[("Ingress", "theirs")] == {"loadBalancer": {"ingress": [{"ip": "192.0.2.77"}]}}
    assert statuses(ours, addresses=PublishedAddresses()) == {}  # nothing published, no write


def test_published_addresses_are_checked() -> None:
    with pytest.raises(ValueError, match="not an address"):
        PublishedAddresses.parse(["*.example.com"])
    with pytest.raises(ValueError, match="bad_name"):
        PublishedAddresses.parse(["bad_name"])


def test_published_service_addresses() -> None:
    """--publish-service: the load balancer's entries, else the external IPs; a hostile or
    absent Service publishes nothing rather than failing."""
    balancer = {"status": {"loadBalancer": {"ingress": [
        {"ip": "192.0.2.1", "ipMode": "VIP"}, {"hostname": "lb.example.com"}, {"ip": "nonsense"}]}},
        "spec": {"externalIPs": ["192.0.2.9"]}}  # fmt: skip
    assert PublishedAddresses.from_service(balancer).for_ingress() == [
        {"ip": "192.0.2.1"}, {"hostname": "lb.example.com"}]  # fmt: skip
    external = {"spec": {"externalIPs": ["192.0.2.9", "2001:db8::1"]}, "status": {}}
    assert PublishedAddresses.from_service(external).for_ingress() == [
        {"ip": "192.0.2.9"}, {"ip": "2001:db8::1"}]  # fmt: skip
    for hostile in (None, {}, {"status": "x"}, {"status": {"loadBalancer": {"ingress": [7]}}},
                    {"spec": {"externalIPs": "192.0.2.9"}}):  # fmt: skip
        assert not PublishedAddresses.from_service(hostile)
    both = PublishedAddresses.parse(["192.0.2.1"]) + PublishedAddresses.from_service(balancer)
    assert both.for_ingress() == [{"ip": "192.0.2.1"}, {"hostname": "lb.example.com"}]


@given(st.recursive(st.none() | st.text(max_size=5) | st.integers(),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.sampled_from(["status", "spec", "loadBalancer",
                                                       "ingress", "ip", "hostname",
                                                       "externalIPs"]), inner, max_size=3),
                    max_leaves=12))  # fmt: skip
def test_published_service_never_fails(service: Any) -> None:
    found = PublishedAddresses.from_service(service if isinstance(service, dict) else None)
    assert all(kind in ("ip", "hostname") for kind, _ in found.entries)


# --- merging --------------------------------------------------------------------------------

condition_status = st.sampled_from(["True", "False"])


@given(first=st.lists(condition_status, min_size=2, max_size=2),
       second=st.lists(condition_status, min_size=2, max_size=2))  # fmt: skip
def test_merge_is_idempotent_and_keeps_transition_times(
    first: list[str], second: list[str]
) -> None:
    def desired(values: list[str]) -> dict[str, Any]:
        return {"conditions": [
            {"type": t, "status": v, "reason": "R", "message": "", "observedGeneration": 1}
            for t, v in zip(("Accepted", "Programmed"), values, strict=True)],
            "addresses": [], "listeners": []}  # fmt: skip

    written = merge_status("Gateway", None, desired(first), NOW)
    assert written is not None
    assert merge_status("Gateway", written, desired(first), LATER) is None
    again = merge_status("Gateway", written, desired(second), LATER)
    if first == second:
        assert again is None
        return
    assert again is not None
    for before, after in zip(written["conditions"], again["conditions"], strict=True):
        moved = after["lastTransitionTime"] != before["lastTransitionTime"]
        assert moved == (after["status"] != before["status"])
    assert merge_status("Gateway", again, desired(second), LATER + LATER.resolution) is None


def test_merge_keeps_conditions_of_others_and_fresher_ones() -> None:
    current = {"conditions": [
        {"type": "example.net/Special", "status": "True", "reason": "X", "message": "",
         "lastTransitionTime": "2020-01-01T00:00:00Z"},
        {"type": "Accepted", "status": "False", "reason": "Newer", "message": "",
         "observedGeneration": 9, "lastTransitionTime": "2020-01-01T00:00:00Z"}]}  # fmt: skip
    desired = {"conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted",
                               "message": "", "observedGeneration": 2}]}  # fmt: skip
    # A condition written from generation 9 is not overwritten from a copy at generation 2.
    assert merge_status("GatewayClass", current, desired, NOW) is None


def test_plan_then_replan_writes_nothing_and_server_defaults_cause_no_write() -> None:
    objects = [gateway_class(), gateway(), httproute("r", [{"backendRefs": [to("svc")]}]),
               service("svc"), ingress("i", [("a.test", [("/", "Prefix", "svc")])])]  # fmt: skip
    settings = StatusSettings(addresses=ADDRESSES)
    first = plan_status(objects, settings, now=NOW)
    assert first
    assert all(u.changed for u in first)
    stored = copy.deepcopy(objects)
    by_name = {(u.kind, u.name): u.status for u in first}
    for obj in stored:
        if (obj["kind"], obj["metadata"]["name"]) in by_name:
            obj["status"] = copy.deepcopy(by_name[(obj["kind"], obj["metadata"]["name"])])
    # The API server fills in the CRD's defaults of the parentRef it stores.
    route = next(o for o in stored if o["kind"] == "HTTPRoute")
    route["status"]["parents"][0]["parentRef"].update(group=GROUP, kind="Gateway")
    second = plan_status(stored, settings, now=LATER)
    assert second
    assert not any(u.changed for u in second)


def test_withdraw_removes_only_kroutes_entries() -> None:
    current = {"parents": [{"controllerName": CONTROLLER_NAME, "parentRef": {"name": "gw"}},
                           {"controllerName": "example.net/gw", "parentRef": {"name": "x"}}]}  # fmt: skip
    out = withdraw_status("HTTPRoute", current, controller_name=CONTROLLER_NAME)
    assert out == {"parents": [current["parents"][1]]}
    assert withdraw_status("HTTPRoute", out, controller_name=CONTROLLER_NAME) is None
    assert withdraw_status("Gateway", {"conditions": []}, controller_name=CONTROLLER_NAME) is None


def test_public_api() -> None:
    for name in ("plan_status", "merge_status", "withdraw_status", "StatusSettings",
                 "PublishedAddresses", "StatusUpdate"):  # fmt: skip
        assert name in kroute.__all__
        assert getattr(kroute, name) is not None


# --- the offline command and the examples ---------------------------------------------------


def run_status(*args: str) -> tuple[int, list[dict[str, Any]], str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["status", *args], stdout=out, stderr=err)
    return code, json.loads(out.getvalue()) if code == 0 else [], err.getvalue()


def test_status_command_on_a_manifest_directory(tmp_path: Path) -> None:
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump_all([
        gateway_class(), gateway(), service("svc"),
        httproute("r", [{"backendRefs": [to("svc")]}]),
        httproute("lost", [{"backendRefs": [to("svc")]}],
                  parents=[{"name": "gw", "sectionName": "nope"}]),
        ingress("i", [("a.test", [("/", "Prefix", "svc")])]),
    ]))  # fmt: skip
    code, found, err = run_status("-f", str(tmp_path), "--publish-address", "192.0.2.10")
    assert code == 0
    assert "no Secret in the manifests" in err
    by_name = {(e["kind"], e["name"]): e for e in found}
    assert set(by_name) == {("GatewayClass", "kroute"), ("Gateway", "gw"), ("HTTPRoute", "r"),
                            ("HTTPRoute", "lost"), ("Ingress", "i")}  # fmt: skip
    assert all(e["changed"] for e in found)
    assert by_name[("Ingress", "i")]["status"] == {"loadBalancer": {"ingress": [
        {"ip": "192.0.2.10"}]}}  # fmt: skip
    assert cond(parent(by_name[("HTTPRoute", "lost")]["status"]), "Accepted") == (
        "False", "NoMatchingParent")  # fmt: skip
    code, found, _ = run_status("-f", str(tmp_path), "--controller-name", "example.net/other")
    assert code == 0
    assert found == []  # another controller's class: its Gateways and routes are not kroute's


def test_status_command_refuses_bad_input(tmp_path: Path) -> None:
    code, _, err = run_status("-f", str(tmp_path / "missing.yaml"))
    assert code == 2
    assert "missing.yaml" in err
    code, _, err = run_status("-f", str(tmp_path), "--publish-address", "not an address")
    assert code == 2
    assert "'not an address'" in err


EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_example_with_the_applications_own_filters() -> None:
    """Offline, the application's own filters (ExtensionRef kroute.dev Filter) are unknown: the
    route fails closed, and status says so; the application's Router compiles with them."""
    code, found, _ = run_status("-f", str(EXAMPLES / "filters/manifests"))
    assert code == 0
    (route,) = [e for e in found if e["kind"] == "HTTPRoute"]
    accepted = parent(route["status"])[0]
    assert (accepted["status"], accepted["reason"]) == ("False", "UnsupportedValue")
    assert "require-token" in accepted["message"]


@pytest.mark.parametrize("path", ["gateway/manifests", "deploy/routes.yaml",
                                  "explain/manifests"])  # fmt: skip
def test_examples_routes_are_accepted(path: str) -> None:
    code, found, _ = run_status("-f", str(EXAMPLES / path), "--publish-address", "192.0.2.10")
    assert code == 0
    routes = [e for e in found if e["kind"] == "HTTPRoute"]
    for entry in routes:
        for conditions in (p["conditions"] for p in entry["status"]["parents"]):
            assert cond(conditions, "Accepted") == ("True", "Accepted"), entry
    gateways = [e for e in found if e["kind"] == "Gateway"]
    assert gateways or not routes
    for entry in gateways:
        assert cond(entry["status"]["conditions"], "Programmed") == ("True", "Programmed"), entry

"""Entry points offline: which routes each entry point's table holds, and what the notes say
about what no entry point serves (IngressRoute entryPoints and tls, Traefik's Ingress
annotations, Gateway listeners by port and protocol)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kroute import EntryPoint, compile_objects
from kroute.gateway.router import Router
from kroute.rules.compile import CompileResult
from kroute.rules.entrypoints import DEFAULT_ENTRY_POINTS, check_entry_points
from kroute.rules.request import RequestHead
from kroute.testing import request_from_url as request
from kroute.watch.sources import MemorySource
from tests.builders import gateway, httproute, ingress, ingressroute, to

WEB, SECURE = DEFAULT_ENTRY_POINTS
ADMIN = EntryPoint("admin", 9000)


def served(result: CompileResult, point: EntryPoint) -> set[str]:
    return {route.name for route in result.table_for(point).routes}


def compiled(
    *objects: dict[str, Any], points: tuple[EntryPoint, ...] = DEFAULT_ENTRY_POINTS
) -> CompileResult:
    result = compile_objects(objects, entry_points=points)
    assert not result.errors, result.errors
    return result


def with_spec(obj: dict[str, Any], **spec: Any) -> dict[str, Any]:
    obj["spec"].update(spec)
    return obj


IR = "IngressRoute default/{} spec.routes[0]"


def route_to(svc: str) -> list[dict[str, Any]]:
    return [{"match": f"Host(`{svc}.test`)", "services": [{"name": svc, "port": 80}]}]


def test_ingressroute_entry_points_and_tls() -> None:
    result = compiled(
        ingressroute("any", route_to("any")),
        with_spec(ingressroute("secure", route_to("secure")), entryPoints=["websecure"]),
        with_spec(ingressroute("tls", route_to("tls")), tls={"secretName": "cert"}),
        with_spec(ingressroute("both", route_to("both")), entryPoints=["web", "admin"]),
        points=(WEB, SECURE, ADMIN),
    )
    assert served(result, WEB) == {IR.format("any"), IR.format("both")}
    assert served(result, SECURE) == {IR.format(n) for n in ("any", "secure", "tls")}
    assert served(result, ADMIN) == {IR.format("any"), IR.format("both")}
    assert not result.notes
    assert not result.refused
    # one compile, one table per entry point, made once
    assert result.table_for(WEB) is result.table_for(WEB)


def test_a_table_that_serves_every_route_is_the_compiled_table() -> None:
    result = compiled(
        ingressroute("any", route_to("any")), ingress("i", [(None, [("/", "Prefix", "s")])])
    )
    assert result.table_for(WEB) is result.table
    assert result.table_for(SECURE) is result.table


def test_ingressroute_tls_options_fail_closed() -> None:
    result = compiled(with_spec(ingressroute("opt", route_to("opt")),
                                tls={"secretName": "c", "options": {"name": "mtls"}}))  # fmt: skip
    assert [(e.field, "not supported" in e.reason) for e in result.refused] == [
        ("spec.tls.options", True)
    ]


def test_unknown_entry_point_names_are_noted() -> None:
    ann = {"traefik.ingress.kubernetes.io/router.entrypoints": "web, internal"}
    result = compiled(
        with_spec(ingressroute("typo", route_to("typo")), entryPoints=["websecur"]),
        ingress("i", [("i.test", [("/", "Prefix", "s")])], annotations=ann),
    )
    assert any("IngressRoute default/typo: spec.entryPoints: 'websecur' is not an entry point"
               in note for note in result.notes)  # fmt: skip
    assert any("Ingress default/i: metadata.annotations[traefik.ingress.kubernetes.io/router"
               ".entrypoints]: 'internal'" in note for note in result.notes)  # fmt: skip
    assert served(result, SECURE) == set()
    assert served(result, WEB) == {"Ingress default/i spec.rules[0].http.paths[0]"}


@pytest.mark.parametrize(
    ("annotations", "web", "secure"),
    [
        ({}, True, True),
        ({"traefik.ingress.kubernetes.io/router.entrypoints": "websecure"}, False, True),
        ({"traefik.ingress.kubernetes.io/router.entrypoints": "web,websecure"}, True, True),
        ({"traefik.ingress.kubernetes.io/router.tls": "true"}, False, True),
        ({"traefik.ingress.kubernetes.io/router.tls": "false"}, True, True),
        ({"traefik.ingress.kubernetes.io/router.tls": "True",
          "traefik.ingress.kubernetes.io/router.entrypoints": "web"}, False, False),
    ],
)  # fmt: skip
def test_ingress_annotations(annotations: dict[str, str], web: bool, secure: bool) -> None:
    result = compiled(ingress("i", [("i.test", [("/", "Prefix", "s")])], annotations=annotations))
    assert bool(served(result, WEB)) is web
    assert bool(served(result, SECURE)) is secure
    assert not result.refused  # the two annotations are applied, not refused


@pytest.mark.parametrize(
    ("name", "value"),
    [("router.tls", "yes"), ("router.entrypoints", "web,,websecure")],
)
def test_bad_annotation_values_reject_the_ingress(name: str, value: str) -> None:
    ann = {f"traefik.ingress.kubernetes.io/{name}": value}
    result = compile_objects([ingress("i", [("i.test", [("/", "Prefix", "s")])], annotations=ann)])
    assert [e.field for e in result.errors] == [
        f"metadata.annotations[traefik.ingress.kubernetes.io/{name}]"
    ]


def test_other_traefik_annotations_still_fail_closed() -> None:
    ann = {"traefik.ingress.kubernetes.io/router.middlewares": "default-auth@kubernetescrd"}
    result = compiled(ingress("i", [("i.test", [("/", "Prefix", "s")])], annotations=ann))
    assert [e.field for e in result.refused] == [
        "metadata.annotations[traefik.ingress.kubernetes.io/router.middlewares]"
    ]


LISTENERS = [
    {"name": "http", "protocol": "HTTP", "port": 80},
    {"name": "https", "protocol": "HTTPS", "port": 443},
    {"name": "alt", "protocol": "HTTP", "port": 8080, "hostname": "alt.test"},
    {"name": "tls-on-80", "protocol": "HTTPS", "port": 80, "hostname": "odd.test"},
]


def by_section(section: str) -> dict[str, Any]:
    return httproute(section, [{"backendRefs": [to("s")]}],
                     parents=[{"name": "gw", "sectionName": section}])  # fmt: skip


def test_gateway_listeners_bind_by_port_and_protocol() -> None:
    result = compiled(
        gateway(listeners=LISTENERS), *(by_section(str(lst["name"])) for lst in LISTENERS)
    )
    names = {n: f"HTTPRoute default/{n} spec.rules[0].matches[0]" for n in ("http", "https", "alt")}
    assert served(result, WEB) == {names["http"]}
    assert served(result, SECURE) == {names["https"]}
    unserved = [n for n in result.notes if "served nowhere" in n]
    assert len(unserved) == 2
    assert (
        "listener 'alt' (port 8080): no entry point that serves plain HTTP listens on port 8080"
        in unserved[0]
    )
    assert "listener 'tls-on-80' (port 80): no entry point that terminates TLS" in unserved[1]


def test_a_route_on_two_listeners_is_one_route_on_both_entry_points() -> None:
    result = compiled(
        gateway(listeners=LISTENERS[:2]), httproute("r", [{"backendRefs": [to("s")]}])
    )
    assert len(result.table) == 1
    assert (
        served(result, WEB)
        == served(result, SECURE)
        == {"HTTPRoute default/r spec.rules[0].matches[0]"}
    )
    assert result.table.routes[0].to_json()["entry_points"] == {
        "listeners": [{"port": 80, "https": False}, {"port": 443, "https": True}]
    }


def test_an_advertised_port_binds_listeners() -> None:
    behind = EntryPoint("web", 8000, advertised_port=80)
    result = compiled(gateway(listeners=LISTENERS[:1]), by_section("http"), points=(behind,))
    assert served(result, behind) == {"HTTPRoute default/http spec.rules[0].matches[0]"}
    listening = EntryPoint("web", 8000)
    result = compiled(gateway(listeners=LISTENERS[:1]), by_section("http"), points=(listening,))
    assert served(result, listening) == set()


def test_without_entry_points_the_compile_notes_nothing_about_them() -> None:
    result = compile_objects([gateway(listeners=LISTENERS), by_section("alt")])
    assert not [n for n in result.notes if "served nowhere" in n]


def test_parse() -> None:
    assert EntryPoint.parse("admin=127.0.0.1:9000") == EntryPoint("admin", 9000, host="127.0.0.1")
    assert EntryPoint.parse("s=[::1]:8443,tls,advertised=443") == EntryPoint(
        "s", 8443, tls=True, host="::1", advertised_port=443
    )
    assert EntryPoint.parse("web=:80") == EntryPoint("web", 80)
    for bad in ("web", "web=host", "web=:70000", "web=:80,quic", "=:80", "web=:80,advertised=x"):
        with pytest.raises(ValueError, match=r"web|port|NAME|option"):
            EntryPoint.parse(bad)


@given(st.lists(st.sampled_from(["web", "websecure", "admin"]), max_size=4))
def test_names_must_be_unique(names: list[str]) -> None:
    points = [EntryPoint(n, 80 + i) for i, n in enumerate(names)]
    if names and len(set(names)) == len(names):
        assert check_entry_points(points) == tuple(points)
    else:
        with pytest.raises(ValueError, match="entry point"):
            check_entry_points(points)


def test_router_routes_by_entry_point() -> None:
    objects = [
        ingressroute("any", route_to("any")),
        with_spec(ingressroute("secure", route_to("secure")), entryPoints=["websecure"]),
    ]
    router = Router([MemorySource(objects=objects)])
    secure = request("http://secure.test/")
    assert router.route(secure).status == 404  # a plain request: `web`
    assert router.route(secure, entry_point="websecure").route is not None
    https = RequestHead.build("GET", "secure.test", "/", scheme="https")
    assert router.route(https).route is not None  # an HTTPS request: websecure
    assert router.route(request("http://any.test/"), entry_point="web").route is not None
    assert len(router.table) == 2
    assert len(router.table_for("web")) == 1
    with pytest.raises(
        ValueError, match="no entry point 'nope' \\(the Router has web, websecure\\)"
    ):
        router.route(secure, entry_point="nope")

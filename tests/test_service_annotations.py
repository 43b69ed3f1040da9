"""Traefik's Service annotations (`traefik.ingress.kubernetes.io/service.*`, which Traefik v3
reads from the Service): sticky cookies and passHostHeader applied to the Service's traffic
from any route; the others, and malformed values, leave the Service without traffic (503 with
the reason) rather than traffic without them; values meaning Traefik's default are accepted.
Through every front against real echo backends."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from kroute.gateway.router import Router
from kroute.objects import ObjectRef, StickyCookie
from kroute.pool.endpoints import ServiceEndpoints
from kroute.pool.service_annotations import ServiceOptions
from kroute.rules.request import RequestHead
from kroute.transport.conformance import Backend
from kroute.watch.sources import MemorySource
from tests.builders import ingress
from tests.fronts import FrontClient, serving
from tests.test_gateway_e2e import endpoint_slice, service

PREFIX = "traefik.ingress.kubernetes.io/service."
STICKY = f"{PREFIX}sticky.cookie"


def annotated(name: str, annotations: dict[str, str]) -> dict[str, Any]:
    obj = service(name)
    obj["metadata"]["annotations"] = annotations
    return obj


# Traefik v3's "On Service" annotations example, value for value.
STICKY_SERVICE = {
    STICKY: "true",
    f"{STICKY}.name": "foobar",
    f"{STICKY}.secure": "true",
    f"{STICKY}.httponly": "true",
    f"{STICKY}.samesite": "none",
    f"{STICKY}.maxage": "42",
}
FOOBAR = StickyCookie("foobar", secure=True, http_only=True, same_site="None", max_age=42)


def _endpoints(annotations: dict[str, str]) -> ServiceEndpoints:
    endpoints = ServiceEndpoints(ObjectRef("Service", "default", "web"), 80)
    endpoints.set_service(annotated("web", annotations))
    endpoints.apply_slice(endpoint_slice("web", 8080, "192.0.2.1"))
    return endpoints


@pytest.mark.parametrize(
    ("annotations", "options"),
    [
        (STICKY_SERVICE, ServiceOptions(FOOBAR)),
        ({STICKY: "1"}, ServiceOptions(StickyCookie("_cf9eb"))),  # (Traefik's default name)
        ({f"{STICKY}.name": "foobar"}, ServiceOptions()),  # (sticky.cookie not set: off)
        ({STICKY: "false", f"{PREFIX}passhostheader": "true"}, ServiceOptions()),
        ({f"{PREFIX}passhostheader": "False"}, ServiceOptions(pass_host_header=False)),
    ],
)  # fmt: skip
def test_applied_annotations_become_the_service_options(
    annotations: dict[str, str], options: ServiceOptions
) -> None:
    endpoints = _endpoints(annotations)
    assert endpoints.error is None
    assert len(endpoints.endpoints()) == 1
    assert endpoints.options == options


@pytest.mark.parametrize(
    ("annotations", "error"),
    [
        ({f"{PREFIX}serversscheme": "https"}, "serversscheme]: 'https': not supported by kroute"),
        ({STICKY: "yes"}, f"{STICKY}]: 'yes' is not a boolean"),
        ({STICKY: "true", f"{STICKY}.samesite": "sometimes"},
         f"{STICKY}.samesite]: 'sometimes' is not none, lax or strict"),
        ({STICKY: "true", f"{STICKY}.maxage": "soon"}, f"{STICKY}.maxage]: 'soon' is not an "
                                                       "integer"),
        ({STICKY: "true", f"{STICKY}.path": "/\r\nX-Injected: yes"},
         f"{STICKY}.path]: '/\\r\\nX-Injected: yes' is not a cookie path"),
        ({STICKY: "true", f"{STICKY}.domain": "a;b.example"}, f"{STICKY}.domain]: 'a;b.example' "
                                                              "is not a domain name"),
    ],
)  # fmt: skip
def test_other_or_malformed_annotations_leave_the_service_without_endpoints(
    annotations: dict[str, str], error: str
) -> None:
    endpoints = _endpoints(annotations)
    assert endpoints.error is not None
    assert error in endpoints.error
    assert endpoints.endpoints() == ()


@pytest.fixture
async def served(every_front: str) -> AsyncIterator[tuple[FrontClient, Backend, Backend]]:
    one, two = Backend("127.0.0.2"), Backend("127.0.0.3")
    async with anyio.create_task_group() as group:
        await group.start(one.serve)
        await group.start(two.serve)
        second = endpoint_slice("sticky", two.port, two.address)
        second["metadata"] = {**second["metadata"], "name": "sticky-2"}
        objects = [
            ingress("web", [("sticky.local", [("/", "Prefix", "sticky")]),
                            ("host.local", [("/", "Prefix", "host")]),
                            ("https.local", [("/", "Prefix", "https")])]),
            annotated("sticky", STICKY_SERVICE),
            annotated("host", {f"{PREFIX}passhostheader": "false"}),
            annotated("https", {f"{PREFIX}serversscheme": "https"}),
            endpoint_slice("sticky", one.port, one.address), second,
            endpoint_slice("host", one.port, one.address),
            endpoint_slice("https", one.port, one.address),
        ]  # fmt: skip
        async with serving(Router([MemorySource(objects=objects)]), every_front) as front:
            yield front, one, two
        group.cancel_scope.cancel()


@pytest.mark.anyio
async def test_annotations_apply_to_the_service_of_an_ingress(
    served: tuple[FrontClient, Backend, Backend],
) -> None:
    front, one, two = served
    status, headers, _ = await front.request("sticky.local", "/echo")
    assert status == 200
    (cookie,) = [v for n, v in headers if n.lower() == b"set-cookie"]
    assert cookie.startswith(b"foobar=")
    assert cookie.endswith(b"; Path=/; Max-Age=42; HttpOnly; Secure; SameSite=None")
    for _ in range(5):
        status, headers, _ = await front.request("sticky.local", "/echo",
                                                 headers=[(b"Cookie", cookie.split(b";")[0])])  # fmt: skip
        assert status == 200
        assert not [v for n, v in headers if n.lower() == b"set-cookie"]
    assert sorted([one.hits.get("/echo", 0), two.hits.get("/echo", 0)]) == [0, 6]
    status, _, body = await front.request("host.local", "/echo")
    hosts = [v for n, v in json.loads(body)["headers"] if n.lower() == "host"]
    assert hosts == [f"127.0.0.2:{one.port}"]
    status, _, _ = await front.request("https.local", "/echo")
    assert status == 503  # (not reached otherwise than it asks: no traffic)


def test_a_change_of_annotations_reaches_kept_decisions() -> None:
    source = MemorySource(objects=[
        ingress("web", [("web.local", [("/", "Prefix", "web")])]),
        annotated("web", {}), endpoint_slice("web", 8080, "192.0.2.1"),
    ])  # fmt: skip
    router = Router([source])

    def decide() -> Any:
        return router.route_target("GET", "web.local", "/", lambda: RequestHead.build(
            "GET", "web.local", "/", headers={"Cookie": "foobar=x"}))  # fmt: skip

    assert not decide().endpoint_host
    assert not decide().endpoint_host  # (kept: FastGateway's direct path)
    assert not router.sets_cookies
    source.apply(annotated("web", {f"{PREFIX}passhostheader": "false", **STICKY_SERVICE}))
    decision = decide()
    assert decision.endpoint_host
    assert router.sets_cookies
    assert decision.sticky is not None
    assert decision.sticky.endpoint == "x"  # (read from the request: it names no endpoint)
    assert [n for n, _ in router.sticky_headers(decision)] == [b"Set-Cookie"]
    source.apply(annotated("web", {}))
    assert not decide().endpoint_host
    assert not router.sets_cookies

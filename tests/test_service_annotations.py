"""Traefik's Service annotations (`traefik.ingress.kubernetes.io/service.*`: sticky cookies and
the like, which Traefik v3 reads from the Service): kroute does not apply them, so a Service
carrying one gets no traffic (503 with the reason) rather than traffic without them; values
meaning Traefik's default are accepted. Through every front against a real echo backend."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from kroute.gateway.router import Router
from kroute.objects import ObjectRef
from kroute.pool.endpoints import ServiceEndpoints
from kroute.transport.conformance import Backend
from kroute.watch.sources import MemorySource
from tests.builders import ingress
from tests.fronts import FrontClient, serving
from tests.test_gateway_e2e import endpoint_slice, service

STICKY = "traefik.ingress.kubernetes.io/service.sticky.cookie"


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


@pytest.mark.parametrize(
    ("annotations", "error"),
    [
        (STICKY_SERVICE, f"metadata.annotations[{STICKY}]: 'true': kroute's sticky cookie is "
                         "the gateway's (Router(sticky_cookie=...)), not a Service's"),
        ({f"{STICKY}.name": "foobar"}, f"metadata.annotations[{STICKY}.name]: 'foobar': "
                                       "kroute's sticky cookie is the gateway's"),
        ({"traefik.ingress.kubernetes.io/service.serversscheme": "https"},
         "serversscheme]: 'https': not supported by kroute"),
        ({STICKY: "false", "traefik.ingress.kubernetes.io/service.passhostheader": "true"}, None),
    ],
)  # fmt: skip
def test_a_service_with_a_traefik_annotation_has_no_endpoints(
    annotations: dict[str, str], error: str | None
) -> None:
    endpoints = ServiceEndpoints(ObjectRef("Service", "default", "web"), 80)
    endpoints.set_service(annotated("web", annotations))
    endpoints.apply_slice(endpoint_slice("web", 8080, "192.0.2.1"))
    if error is None:
        assert endpoints.error is None
        assert len(endpoints.endpoints()) == 1
    else:
        assert endpoints.error is not None
        assert error in endpoints.error
        assert endpoints.endpoints() == ()


@pytest.fixture
async def served(every_front: str) -> AsyncIterator[tuple[FrontClient, Backend]]:
    backend = Backend("127.0.0.2")
    async with anyio.create_task_group() as group:
        await group.start(backend.serve)
        objects = [
            ingress("web", [("sticky.local", [("/", "Prefix", "sticky")]),
                            ("plain.local", [("/", "Prefix", "plain")])]),
            annotated("sticky", STICKY_SERVICE), annotated("plain", {STICKY: "false"}),
            endpoint_slice("sticky", backend.port, backend.address),
            endpoint_slice("plain", backend.port, backend.address),
        ]  # fmt: skip
        async with serving(Router([MemorySource(objects=objects)]), every_front) as front:
            yield front, backend
        group.cancel_scope.cancel()


@pytest.mark.anyio
async def test_the_annotated_service_is_never_forwarded_to(
    served: tuple[FrontClient, Backend],
) -> None:
    front, backend = served
    status, _, _ = await front.request("sticky.local", "/echo")
    assert status == 503
    status, _, body = await front.request("plain.local", "/echo")
    assert status == 200
    assert json.loads(body)["target"] == "/echo"
    assert backend.hits == {"/echo": 1}

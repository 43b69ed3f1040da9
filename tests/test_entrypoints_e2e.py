"""Entry points through every front (HttpServer on asyncio and trio, FastGateway, the ASGI
gateway on asyncio and trio): a route is served on the entry points it is attached to and
answers 404 on the others; a Gateway listener on a port no entry point listens on serves
nothing."""

from __future__ import annotations

import json

import anyio
import pytest

from kroute import AsgiGateway, EntryPoint, FastGateway, GatewayHandler
from kroute.gateway.router import Router
from kroute.transport.conformance import Backend
from kroute.watch.sources import MemorySource
from tests.builders import gateway, httproute, ingress, ingressroute, to
from tests.fronts import serving
from tests.test_gateway_e2e import endpoint_slice, service

#: Named as Traefik's; plain HTTP here, since what is shown is which routes each one serves.
POINTS = (EntryPoint("web", 8000), EntryPoint("websecure", 8443))


def objects() -> list[dict[str, object]]:
    secure_only = ingressroute("secure", [{"match": "Host(`secure.test`)",
                                           "services": [{"name": "web", "port": 80}]}])  # fmt: skip
    secure_only["spec"]["entryPoints"] = ["websecure"]
    everywhere = ingressroute("any", [{"match": "Host(`any.test`)",
                                       "services": [{"name": "web", "port": 80}]}])  # fmt: skip
    annotated = ingress("annotated", [("annotated.test", [("/", "Prefix", "web")])],
                        annotations={"traefik.ingress.kubernetes.io/router.entrypoints": "web"})  # fmt: skip
    listeners = [{"name": "on-8443", "protocol": "HTTP", "port": 8443, "hostname": "gw.test"},
                 {"name": "on-9000", "protocol": "HTTP", "port": 9000, "hostname": "other.test"}]  # fmt: skip
    routes = [httproute(n, [{"backendRefs": [to("web")]}], hostnames=[h])
              for n, h in (("gw", "gw.test"), ("other", "other.test"))]  # fmt: skip
    return [secure_only, everywhere, annotated, gateway(listeners=listeners), *routes]


#: Host -> whether web and websecure serve it.
EXPECTED = {
    "secure.test": (False, True),
    "any.test": (True, True),
    "annotated.test": (True, False),
    "gw.test": (False, True),
    "other.test": (False, False),
}


@pytest.mark.anyio
async def test_routes_are_served_only_on_their_entry_points(every_front: str) -> None:
    backend = Backend("127.0.0.2")
    async with anyio.create_task_group() as group:
        await group.start(backend.serve)
        for index, point in enumerate(("web", "websecure")):
            source = MemorySource(objects=[*objects(), service("web"),
                                           endpoint_slice("web", backend.port, backend.address)])  # fmt: skip
            router = Router([source], entry_points=POINTS)
            assert any("listener 'on-9000' (port 9000)" in n for n in router.notes)
            async with serving(router, every_front, point) as front:
                for host, expected in EXPECTED.items():
                    status, _, body = await front.request(host, "/echo")
                    if expected[index]:
                        assert status == 200, (point, host, body)
                        assert json.loads(body)["target"] == "/echo"
                    else:
                        assert status == 404, (point, host, body)
        group.cancel_scope.cancel()


@pytest.mark.parametrize("make", [FastGateway, GatewayHandler, AsgiGateway])
def test_a_front_refuses_an_entry_point_the_router_lacks(make: type) -> None:
    router = Router([MemorySource(objects=[])], entry_points=POINTS)
    with pytest.raises(ValueError, match="no entry point 'admin' \\(the Router has web, websecure"):
        make(router, entry_point="admin")

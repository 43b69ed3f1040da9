"""The admin API's /api/middlewares and the dashboard's Middlewares table, over a real socket:
each Middleware with its type, the routes using it (through chains too), its error, and what of
it fails closed."""

from __future__ import annotations

from importlib import resources

import anyio
import pytest

from kroute.gateway.admin import AdminHandler
from kroute.gateway.router import Router
from kroute.gateway.server import HttpServer
from kroute.watch.sources import MemorySource
from tests.builders import ingress
from tests.pods import Client
from tests.test_admin import listen
from tests.test_middlewares_e2e import middleware, using

pytestmark = pytest.mark.anyio

OBJECTS = [
    middleware("strip", {"stripPrefix": {"prefixes": ["/api"]}}),
    middleware("headers", {"headers": {"customRequestHeaders": {"X-A": "1"}}}),
    middleware("secured", {"chain": {"middlewares": [{"name": "strip"}, {"name": "headers"}]}}),
    middleware("broken", {"stripPrefix": {"prefixes": "/not-a-list"}}),
    middleware("compressed", {"passTLSClientCert": {"pem": True}}),
    middleware("unused", {"addPrefix": {"prefix": "/x"}}),
    using("a.local", "secured"),
    using("b.local", "strip", "broken"),
    using("c.local", "compressed"),
    ingress("annotated", [("d.local", [("/", "Prefix", "web")])], annotations={
        "traefik.ingress.kubernetes.io/router.middlewares": "default-headers@kubernetescrd"}),
]  # fmt: skip


async def test_middlewares_are_listed_with_their_routes_and_errors() -> None:
    router = Router([MemorySource(objects=OBJECTS)])
    async with anyio.create_task_group() as group:
        admin = Client(await listen(group, HttpServer(AdminHandler(router))))
        data = await admin.json("localhost", "/api/middlewares")
        await admin.aclose()
        group.cancel_scope.cancel()
    rows = {m["name"]: m for m in data["middlewares"]}
    assert list(rows) == ["broken", "compressed", "headers", "secured", "strip", "unused"]
    assert rows["strip"] == {
        "namespace": "default", "name": "strip", "types": ["stripPrefix"], "error": None,
        "refused": [],
        "routes": ["IngressRoute default/a spec.routes[0]", "IngressRoute default/b spec.routes[0]"],
    }  # fmt: skip
    assert rows["headers"]["routes"] == [
        "Ingress default/annotated spec.rules[0].http.paths[0]",
        "IngressRoute default/a spec.routes[0]",
    ]
    assert rows["secured"]["types"] == ["chain"]
    assert rows["broken"]["error"] == "spec.stripPrefix.prefixes: expected a list, got string"
    assert rows["broken"]["routes"] == ["IngressRoute default/b spec.routes[0]"]
    assert rows["compressed"]["refused"] == [
        "spec.passTLSClientCert: the passTLSClientCert middleware is not supported by kroute "
        "yet: kroute's TLS entry points do not ask clients for certificates"
    ]
    assert rows["unused"]["routes"] == []


def test_the_dashboard_shows_the_middlewares() -> None:
    page = (resources.files("kroute.gateway") / "dashboard.html").read_text()
    assert 'id="middlewares"' in page
    script = (resources.files("kroute.gateway") / "dashboard.js").read_text()
    assert 'panel("api/middlewares"' in script  # (what it renders: tests/test_dashboard_browser.py)

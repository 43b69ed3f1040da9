"""The `plugin` Middleware: the application's own Python steps by name, with the plugin's
configuration as a value (issue 19 item 4): checked at compile time, offline through
kroute.testing, and through every front against a real echo backend."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import pytest

import kroute
from kroute import Answer, Filters, UpstreamRequest
from kroute.gateway.router import Router
from kroute.testing import Routing
from kroute.transport.conformance import Backend
from tests.fronts import FrontClient, echo_gateway
from tests.test_middlewares_e2e import middleware, using
from tests.test_pipeline_e2e import headers_of

Step = Callable[[UpstreamRequest], Answer | None]


def app_filters() -> Filters:
    """What an application registers: a configurable plugin, an async one, a plain filter."""
    filters = Filters()

    @filters.plugin("tenant")
    def tenant(config: Mapping[str, Any]) -> Step:
        header = config.get("header", "X-Tenant")
        allowed = config["allowed"]
        if not isinstance(header, str) or not isinstance(allowed, list):
            raise ValueError("header must be a string and allowed a list")
        wanted = {str(a).encode() for a in allowed}

        def check(request: UpstreamRequest) -> Answer | None:
            if request.get(header.encode()) not in wanted:
                return Answer(403, "unknown tenant", body=b"no such tenant\n")
            request.set(b"X-Tenant-Checked", header.encode())
            return None

        return check

    @filters.plugin("slow-stamp")
    def slow_stamp(config: Mapping[str, Any]) -> Callable[..., Any]:
        value = str(config.get("value", "stamped")).encode()

        async def stamp(request: UpstreamRequest) -> Answer | None:
            request.set(b"X-Stamp", value)
            return None

        return stamp

    @filters.register("plain")
    def plain(request: UpstreamRequest) -> Answer | None:
        request.set(b"X-Plain", b"yes")
        return None

    return filters


# As Traefik's plugin documentation writes a plugin Middleware: `plugin: {<name>: {config}}`.
PLUGINS = [
    middleware("tenant", {"plugin": {"tenant": {"header": "X-Tenant", "allowed": ["a", "b"]}}}),
    middleware("stamp", {"plugin": {"slow-stamp": {"value": "from-config"}}}),
    middleware("plain", {"plugin": {"plain": {}}}),
    middleware("missing", {"plugin": {"demo": {"headers": {"Foo": "Bar"}}}}),
    middleware("bad-config", {"plugin": {"tenant": {"allowed": "a"}}}),
    middleware("no-config", {"plugin": {"tenant": {}}}),
    middleware("plain-with-config", {"plugin": {"plain": {"x": 1}}}),
    middleware("two", {"plugin": {"tenant": {"allowed": []}, "plain": {}}}),
]
ROUTES = [
    *PLUGINS,
    using("tenant.local", "tenant", "stamp"),
    using("plain.local", "plain"),
    using("missing.local", "missing"),
    using("bad.local", "bad-config"),
]


def test_a_plugin_gets_its_configuration_and_refusals_name_the_middleware() -> None:
    result = kroute.compile_objects(ROUTES, filters=app_filters())
    errors = {(e.obj, e.field): e.reason for e in result.errors}
    assert errors == {
        ("Middleware default/bad-config", "spec.plugin.tenant"):
            "plugin 'tenant' refused its configuration: header must be a string and allowed "
            "a list",
        ("Middleware default/no-config", "spec.plugin.tenant"):
            "plugin 'tenant' refused its configuration: 'allowed'",
        ("Middleware default/plain-with-config", "spec.plugin.plain"):
            "filter 'plain' takes no configuration (register it with Filters.plugin to receive "
            "one)",
        ("Middleware default/two", "spec.plugin"): "names exactly one plugin, found 2 "
                                                   "(tenant, plain)",
    }  # fmt: skip
    refused = {e.obj + " " + e.field: e.reason for e in result.refused}
    assert refused == {
        "IngressRoute default/missing spec.routes[0].middlewares[0]":
            "answers 500: Middleware default/missing (spec.plugin.demo): plugin 'demo' is not "
            "registered by the application (Filters.plugin; registered: plain, slow-stamp, "
            "tenant)",
        "IngressRoute default/bad spec.routes[0].middlewares[0]":
            "answers 500: Middleware default/bad-config is invalid: spec.plugin.tenant: plugin "
            "'tenant' refused its configuration: header must be a string and allowed a list",
    }  # fmt: skip


def test_without_the_application_filters_every_plugin_fails_closed() -> None:
    result = kroute.compile_objects(ROUTES)
    assert [e.obj for e in result.errors] == ["Middleware default/two"]  # (its shape)
    assert {e.obj for e in result.refused} == {
        f"IngressRoute default/{n}" for n in ("tenant", "plain", "missing", "bad")
    }


def test_a_plugin_offline_with_kroute_testing() -> None:
    routing = Routing.from_objects([*PLUGINS[:3], *ROUTES[-4:-2]], filters=app_filters())
    routing.expect_answer("tenant.local/x", 403)
    routing.expect_answer("tenant.local/x", 403, headers={"X-Tenant": "c"})
    routing.expect_forwarded("plain.local/x", headers={"x-plain": "yes"})
    step = routing.table.routes[0].chain.steps[0]
    assert step.label == ("Filter tenant (spec.routes[0].middlewares[0]: Middleware "
                          "default/tenant)")  # fmt: skip


def test_a_factory_sees_a_copy_of_its_configuration() -> None:
    seen: list[Mapping[str, Any]] = []
    filters = Filters()

    @filters.plugin("keep")
    def keep(config: Mapping[str, Any]) -> Step:
        seen.append(config)
        config["nested"]["x"] = 2
        return lambda request: None

    obj = middleware("keep", {"plugin": {"keep": {"nested": {"x": 1}}}})
    kroute.compile_objects([obj, using("k.local", "keep")], filters=filters)
    assert obj["spec"]["plugin"]["keep"] == {"nested": {"x": 1}}
    assert seen == [{"nested": {"x": 2}}]


def test_names_are_registered_once_across_plugins_and_filters() -> None:
    filters = app_filters()
    with pytest.raises(ValueError, match="registered already"):
        filters.plugin("plain")(lambda config: lambda request: None)
    with pytest.raises(ValueError, match="registered already"):
        filters.register("tenant")(lambda request: None)


@pytest.fixture
async def client(every_front: str) -> AsyncIterator[tuple[FrontClient, Backend, Router]]:
    async with echo_gateway(ROUTES, every_front, filters=app_filters()) as served:
        yield served


@pytest.mark.anyio
async def test_plugins_through_every_front(client: tuple[FrontClient, Backend, Router]) -> None:
    front, backend, _ = client
    status, _, body = await front.request("tenant.local", "/echo", headers=[(b"X-Tenant", b"b")])
    assert status == 200, body
    seen = headers_of(json.loads(body))
    assert seen["x-tenant-checked"] == ["X-Tenant"]
    assert seen["x-stamp"] == ["from-config"]  # the async plugin, awaited in its place
    status, _, body = await front.request("tenant.local", "/echo", headers=[(b"X-Tenant", b"z")])
    assert (status, body) == (403, b"no such tenant\n")
    status, _, _ = await front.request("plain.local", "/echo")
    assert status == 200
    for host in ("missing.local", "bad.local"):
        assert (await front.request(host, "/echo"))[0] == 500
    assert backend.hits == {"/echo": 2}

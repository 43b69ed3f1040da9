"""The common Middlewares as FastGateway plans them (stripPrefix and header edits remembered
per path, ipAllowList asked per client, response headers patched onto the head) make the same
decisions as the runner on every front (HttpServer on asyncio and trio, FastGateway, the ASGI
gateway on asyncio and trio). Each request is sent several times: a plan is made by the first
and used by the others."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from kroute.gateway.router import Router
from kroute.transport.conformance import Backend
from kroute.transport.proxy import TrustedProxies
from tests.fronts import FrontClient, echo_gateway
from tests.test_middlewares_e2e import middleware, using
from tests.test_pipeline_e2e import headers_of

pytestmark = pytest.mark.anyio

ROUTES = [
    middleware("strip", {"stripPrefix": {"prefixes": ["/api"]}}),
    middleware("headers", {"headers": {
        "customRequestHeaders": {"X-Env": "test", "X-Secret": ""},
        "customResponseHeaders": {"X-Served-By": "kroute", "Content-Type": ""},
        "frameDeny": True, "contentTypeNosniff": True, "stsSeconds": 60}}),
    middleware("allow", {"ipAllowList": {"sourceRange": ["127.0.0.1/32"]}}),
    middleware("deny", {"ipAllowList": {"sourceRange": ["192.0.2.0/24"]}}),
    # What bench_gateway measures: stripPrefix + headers + ipAllowList.
    using("planned.local", "strip", "headers", "allow"),
    using("denied.local", "strip", "headers", "deny"),
    using("deny-first.local", "deny", "strip"),
]  # fmt: skip


@pytest.fixture
async def client(every_front: str) -> AsyncIterator[tuple[FrontClient, Backend, Router]]:
    async with echo_gateway(ROUTES, every_front) as served:
        yield served


async def test_strip_prefix_headers_and_ip_allow_list(
    client: tuple[FrontClient, Backend, Router],
) -> None:
    front, backend, _ = client
    queries = ("", "?q=1", "", "?q=1")
    answers = [await front.request("planned.local", f"/api/echo{q}") for q in queries]
    for query, (status, answer, body) in zip(queries, answers, strict=True):
        assert status == 200
        echoed = json.loads(body)
        assert echoed["target"] == f"/echo{query}"
        seen = headers_of(echoed)
        assert seen["x-forwarded-prefix"] == ["/api"]
        assert seen["x-env"] == ["test"]
        assert seen["x-forwarded-for"] == ["127.0.0.1"]
        fields = {n.lower(): v for n, v in answer}
        assert fields[b"x-served-by"] == b"kroute"
        assert fields[b"x-frame-options"] == b"DENY"
        assert fields[b"x-content-type-options"] == b"nosniff"
        assert b"content-type" not in fields  # (an empty value removes the backend's)
        assert b"strict-transport-security" not in fields  # (only over HTTPS unless forced)
        assert len(answer) == len(fields)  # (one field of each name)
    assert backend.hits == {"/echo": 4}


async def test_fields_the_steps_name_sent_by_the_client(
    client: tuple[FrontClient, Backend, Router],
) -> None:
    """A request carrying a field the steps set or remove runs the steps on it (not the
    plan): the client's X-Forwarded-Prefix is replaced, its X-Secret removed."""
    front, _, _ = client
    for _ in range(2):
        status, _, body = await front.request(
            "planned.local",
            "/api/echo",
            headers=[
                (b"X-Forwarded-Prefix", b"/spoofed"),
                (b"X-Secret", b"s"),
                (b"X-Env", b"prod"),
            ],
        )
        assert status == 200
        seen = headers_of(json.loads(body))
        assert seen["x-forwarded-prefix"] == ["/api"]
        assert seen["x-env"] == ["test"]
        assert "x-secret" not in seen


async def test_ip_allow_list_refuses_before_and_after_a_plan(
    client: tuple[FrontClient, Backend, Router],
) -> None:
    front, backend, _ = client
    for _ in range(3):
        status, _, body = await front.request("denied.local", "/api/echo")
        assert (status, body) == (403, b"Forbidden")
    assert backend.hits == {}


@pytest.mark.parametrize(("host", "status"), [("denied.local", 400), ("deny-first.local", 403)])
async def test_the_first_step_that_answers_answers(
    client: tuple[FrontClient, Backend, Router], host: str, status: int
) -> None:
    """stripPrefix refuses a path it would leave unclean; ipAllowList refuses the client:
    whichever comes first in the chain answers, planned or not."""
    front, backend, _ = client
    for _ in range(2):
        assert (await front.request(host, "/api../echo"))[0] == status
    assert backend.hits == {}


async def test_a_trusted_proxys_forwarded_prefix(every_front: str) -> None:
    """From a trusted proxy X-Forwarded-Prefix is passed on, and stripPrefix replaces it as
    it does a client's (the first strip of a chain sets it)."""
    trusted = TrustedProxies.of("127.0.0.0/8")
    async with echo_gateway(ROUTES, every_front, trusted=trusted) as (front, _, _):
        for forwarded in ([(b"X-Forwarded-Prefix", b"/outer")], [], [], []):
            status, _, body = await front.request("planned.local", "/api/echo",
                                                  headers=forwarded)  # fmt: skip
            assert status == 200
            assert headers_of(json.loads(body))["x-forwarded-prefix"] == ["/api"]

"""The admin app and metrics, over real sockets: readiness, state API, Prometheus text, dashboard."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest

from kroute.gateway.admin import AdminHandler, routes_json
from kroute.gateway.handler import GatewayHandler
from kroute.gateway.metrics import Metrics
from kroute.gateway.router import Router
from kroute.gateway.server import HttpServer
from kroute.pool.health import HealthConfig, PassiveHealth
from kroute.rules.request import RequestHead
from kroute.transport.pooled import PooledTransport
from kroute.watch.sources import ManifestSource, MemorySource
from tests.builders import ingress
from tests.pods import Client, endpoint_slice, service, start_pods

pytestmark = pytest.mark.anyio


async def listen(group: anyio.abc.TaskGroup, server: HttpServer) -> int:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    await group.start(server.serve, listener)
    return int(listener.extra(anyio.abc.SocketAttribute.local_port))


@pytest.fixture
async def setup() -> AsyncIterator[tuple[Client, Client, MemorySource, Router]]:
    async with anyio.create_task_group() as group:
        _pods, pod_port = await start_pods(group, "www", ["127.0.0.41", "127.0.0.42"])
        source = MemorySource(objects=[
            ingress("www", [("www.test", [("/", "Prefix", "www")])]),
            ingress("broken", [("broken.test", [("/", "Nonsense", "www")])]),
            service("www"),
            endpoint_slice("www", pod_port, [("127.0.0.41", "ready"), ("127.0.0.42", "ready"),
                                             ("127.0.0.43", "ready")]),
        ])  # fmt: skip
        health = HealthConfig(passive=PassiveHealth(consecutive_gateway_failures=1))
        router = Router([source], transport=PooledTransport(), health=health)
        metrics = Metrics(router)
        gateway = Client(await listen(group, HttpServer(GatewayHandler(router))))
        admin = Client(await listen(group, HttpServer(AdminHandler(router, metrics=metrics))))
        yield gateway, admin, source, router
        for client in (gateway, admin):
            await client.aclose()
        await router.transport.aclose()  # type: ignore[union-attr]
        group.cancel_scope.cancel()


async def test_live_ready_and_errors(setup: Any) -> None:
    _, admin, _, _ = setup
    assert await admin.request("localhost", "/live") == (200, b"ok\n")
    status, body = await admin.request("localhost", "/ready")
    assert status == 200
    assert json.loads(body)["ready"] is True
    assert (await admin.request("localhost", "/nothing"))[0] == 404
    status, body = await admin.request("localhost", "/api/routes", method="POST", body=b"x")
    assert status == 405
    assert b"read-only" in body


async def test_ready_is_503_until_every_source_has_synced(tmp_path: Path) -> None:
    (tmp_path / "www.yaml").write_text(json.dumps(ingress("www", [("www.test", [("/", "Prefix", "www")])])))  # fmt: skip
    source = ManifestSource([tmp_path])
    router = Router([source])
    async with anyio.create_task_group() as group:
        admin = Client(await listen(group, HttpServer(AdminHandler(router))))
        status, body = await admin.request("localhost", "/ready")
        assert status == 503
        assert not json.loads(body)["ready"]
        assert not any(kind["synced"] for kind in json.loads(body)["kinds"])
        group.start_soon(router.run)
        with anyio.fail_after(5):
            while (await admin.request("localhost", "/ready"))[0] != 200:
                await anyio.sleep(0.02)
        routes = await admin.json("localhost", "/api/routes")
        assert [r["route"] for r in routes["routes"]] == ["Ingress default/www spec.rules[0].http.paths[0]"]  # fmt: skip
        status, body = await admin.request("localhost", "/metrics")
        assert status == 501
        assert b"kroute[metrics]" in body
        await admin.aclose()
        group.cancel_scope.cancel()


async def test_routes_and_services_show_state_and_reasons(setup: Any) -> None:
    gateway, admin, _, _ = setup
    routes = await admin.json("localhost", "/api/routes")
    (route,) = routes["routes"]
    assert route["match"] == "host www.test && path prefix / (element-wise)"
    assert route["backends"] == [{"namespace": "default", "name": "www", "port": 80, "weight": 1}]
    (error,) = routes["errors"]
    assert error["object"] == "Ingress default/broken"
    assert "pathType" in error["field"]
    # 127.0.0.43 has no server: a request there fails to connect, is retried elsewhere, and
    # the endpoint is ejected (one gateway failure is the threshold here).
    for _ in range(6):
        status, body = await gateway.request("www.test", "/")
        assert status == 200, body
    services = await admin.json("localhost", "/api/services")
    (pool,) = services["services"]
    assert services["mirrors"] == {"mirrored": 0, "dropped": 0, "failed": 0, "skipped": 0,
                                   "queued": 0}  # (RequestMirror copies: none here)  # fmt: skip
    states = {e["endpoint"]: (e["state"], e["reason"]) for e in pool["endpoints"]}
    assert states["127.0.0.41:" + states_port(states)][0] == "up"
    dead = states["127.0.0.43:" + states_port(states)]
    assert dead[0] == "ejected"
    assert "connect failure" in dead[1]
    assert pool["service"] == "default/www:80"
    assert pool["in_rotation"] == 2


async def test_traffic_and_health_transitions_are_served_for_the_dashboard(setup: Any) -> None:
    gateway, admin, _, router = setup
    for _ in range(6):  # 127.0.0.43 refuses, and is ejected (one gateway failure, here)
        assert (await gateway.request("www.test", "/"))[0] == 200
    assert (await gateway.request("nobody.test", "/"))[0] == 404
    traffic = await admin.json("localhost", "/api/traffic")
    assert (traffic["bucket_seconds"], traffic["buckets"]) == (10.0, 90)
    routes = {row["route"]: row for row in traffic["routes"]}
    www = routes["Ingress default/www spec.rules[0].http.paths[0]"]
    assert (www["requests"], www["errors"]) == (6, 0)
    assert len(www["rate"]) == len(www["p95_ms"]) == 90
    assert www["rate"][-1] > 0
    assert www["p95_ms"][-1] is not None
    assert routes[""]["requests"] == 1  # the 404
    (service,) = [row for row in traffic["services"] if row["service"]]
    assert (service["service"], service["requests"]) == ("default/www:80", 6)
    (pool,) = (await admin.json("localhost", "/api/services"))["services"]
    (dead,) = [e for e in pool["endpoints"] if e["endpoint"].startswith("127.0.0.43:")]
    (transition,) = dead["transitions"]
    assert transition["state"] == "ejected"
    assert "connect failure" in transition["reason"]
    assert transition["ago"] >= 0
    assert [e["transitions"] for e in pool["endpoints"]].count([]) == 2
    # One count per request, however many admin apps and Metrics read it.
    assert AdminHandler(router).traffic.counts is AdminHandler(router).traffic.counts  # type: ignore[union-attr]
    assert len(router.observers.forwarding) == 1
    status, script = await admin.request("localhost", "/dashboard.js")
    assert status == 200
    assert b'panel("api/traffic"' in script


async def test_the_charts_can_be_turned_off() -> None:
    router = Router([MemorySource()])
    handler = AdminHandler(router, traffic=False)
    assert handler.traffic is None
    assert not router.observers.forwarding  # nothing counted per request
    async with anyio.create_task_group() as group:
        admin = Client(await listen(group, HttpServer(handler)))
        assert (await admin.request("localhost", "/api/traffic"))[0] == 404
        await admin.aclose()
        group.cancel_scope.cancel()


def states_port(states: dict[str, Any]) -> str:
    return next(iter(states)).rsplit(":", 1)[1]


async def test_metrics_count_requests_and_show_endpoints(setup: Any) -> None:
    gateway, admin, _, _ = setup
    for _ in range(3):
        assert (await gateway.request("www.test", "/"))[0] == 200
    assert (await gateway.request("nobody.test", "/"))[0] == 404
    status, body = await admin.request("localhost", "/metrics")
    assert status == 200
    text = body.decode()
    route = "Ingress default/www spec.rules[0].http.paths[0]"
    assert (
        f'kroute_requests_total{{code="200",route="{route}",service="default/www:80"}} 3.0' in text
    )
    assert 'kroute_requests_total{code="404",route="",service=""} 1.0' in text
    assert re.search(rf'kroute_request_duration_seconds_count{{route="{re.escape(route)}",service="default/www:80"}} 3.0', text)  # fmt: skip
    assert re.search(r'kroute_endpoint_up\{endpoint="127.0.0.41:\d+",service="default/www:80",state="up"\} 1.0', text)  # fmt: skip
    assert "kroute_routes 1.0" in text
    assert "kroute_invalid_objects 1.0" in text
    assert "kroute_ready 1.0" in text
    assert 'kroute_watch_synced{kind="ingresses.networking.k8s.io"} 1.0' in text
    assert "kroute_table_rebuilds_total 1.0" in text
    assert 'kroute_mirror_copies_total{outcome="dropped"} 0.0' in text


async def test_rebuilds_are_timed_and_the_dashboard_is_served(setup: Any) -> None:
    _, admin, source, _ = setup
    source.apply(ingress("api", [("api.test", [("/", "Prefix", "www")])]))
    text = (await admin.request("localhost", "/metrics"))[1].decode()
    assert "kroute_table_rebuild_duration_seconds_count 1.0" in text
    assert "kroute_table_rebuilds_total 2.0" in text
    status, page = await admin.request("localhost", "/")
    assert status == 200
    assert b"<title>kroute</title>" in page
    assert b"api/services" in page
    assert b"api/certificates" in page
    assert (await admin.json("localhost", "/api/certificates"))["tls"] is False


def test_durations_fall_in_prometheus_buckets_and_counts_survive_rebuilds() -> None:
    source = MemorySource(objects=[ingress("www", [("www.test", [("/", "Prefix", "www")])]),
                                   service("www"),
                                   endpoint_slice("www", 80, [("127.0.0.41", "ready")])])  # fmt: skip
    router = Router([source])
    metrics = Metrics(router)
    decision = router.route(RequestHead.build("GET", "www.test", "/"))
    for seconds in (0.0005, 0.001, 0.003, 0.003, 20.0):
        metrics.counts.forwarded(decision, 200, seconds)
    source.apply(ingress("api", [("api.test", [("/", "Prefix", "www")])]))  # a rebuild
    decision = router.route(RequestHead.build("GET", "www.test", "/"))
    metrics.counts.forwarded(decision, 200, 0.2)
    text = metrics.render()[0].decode()
    labels = 'route="Ingress default/www spec.rules[0].http.paths[0]",service="default/www:80"'
    # Buckets are cumulative, `le` inclusive (0.001 lands in le="0.001").
    for bound, count in (("0.001", 2), ("0.0025", 2), ("0.005", 4), ("0.25", 5), ("10.0", 5),
                         ("+Inf", 6)):  # fmt: skip
        assert f'kroute_request_duration_seconds_bucket{{le="{bound}",{labels}}} {count}.0' in text
    assert f"kroute_request_duration_seconds_count{{{labels}}} 6.0" in text
    assert f"kroute_request_duration_seconds_sum{{{labels}}} 20.2075" in text
    assert f'kroute_requests_total{{code="200",{labels}}} 6.0' in text


def test_routes_that_fail_closed_are_listed_with_object_field_and_reason() -> None:
    annotation = "nginx.ingress.kubernetes.io/auth-url"
    guarded = ingress("guarded", [("guarded.test", [("/", "Prefix", "www")])],
                      annotations={annotation: "http://auth.example/check"})  # fmt: skip
    data = routes_json(Router([MemorySource(objects=[guarded])]))
    (refused,) = data["refused"]
    assert refused["object"] == "Ingress default/guarded"
    assert refused["field"] == f"metadata.annotations[{annotation}]"
    assert refused["reason"] == f"answers 500: annotation {annotation} is not supported by kroute"
    assert data["routes"][0]["steps"] == [f"Refuse (metadata.annotations[{annotation}])"]
    page = (resources.files("kroute.gateway") / "dashboard.html").read_text()
    assert 'id="refused"' in page  # the dashboard shows them

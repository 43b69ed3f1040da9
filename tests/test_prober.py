"""The seed's liveness scenario on loopback, with real HTTP backends, on asyncio and trio."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc
import pytest

from kroute.objects import ObjectRef
from kroute.pool.endpoints import Delta, Endpoint, ServiceEndpoints
from kroute.pool.health import ActiveHealth, HealthConfig, Outcome
from kroute.pool.pool import Pool
from kroute.pool.prober import ActiveProber, http_probe
from tests.backends import Backend, get, serve, start_backends

pytestmark = pytest.mark.anyio


def service(port: int) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": port}]}}  # fmt: skip


def slice_of(port: int, *addresses: str, zone: str = "a") -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
        "metadata": {"name": "web-1", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "web"}},
        "ports": [{"name": "http", "port": port}],
        "endpoints": [{"addresses": [a], "zone": zone} for a in addresses],
    }  # fmt: skip


async def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.01)


async def traffic(pool: Pool, requests: int) -> set[str]:
    """Send requests where the pool says, report outcomes; the names of who answered."""
    seen = set()
    rng = random.Random(5)
    for _ in range(requests):
        pick = pool.pick(now=anyio.current_time(), rng=rng)
        assert pick is not None
        key = pick.endpoint.key
        pool.begin(key)
        status, body = await get(*key)
        pool.end(
            key, Outcome.SUCCESS if status < 500 else Outcome.HTTP_5XX, now=anyio.current_time()
        )
        seen.add(body)
    return seen


def state(pool: Pool, address: str) -> tuple[str, str]:
    for row in pool.statistics(now=anyio.current_time()).endpoints:
        if row.endpoint.startswith(address + ":"):
            return row.state, row.reason
    raise AssertionError(f"{address} is not in the pool")


async def test_failing_health_check_leaves_rotation_and_comes_back() -> None:
    a, b = Backend("127.0.0.2", "a"), Backend("127.0.0.3", "b")
    async with anyio.create_task_group() as group:
        port = await start_backends(group, [a, b])
        endpoints = ServiceEndpoints(ObjectRef("Service", "default", "web"), 80)
        endpoints.set_service(service(port))
        health = HealthConfig(active=ActiveHealth(path="/healthz", interval=0.05, timeout=2.0,
                                                  rise=2, fall=2))  # fmt: skip
        pool = Pool("default/web:80", health=health)
        pool.apply(
            endpoints.apply_slice(slice_of(port, a.address, b.address)), now=anyio.current_time()
        )
        prober = ActiveProber(rng=random.Random(1))
        prober.watch(pool)
        group.start_soon(prober.run)

        assert await traffic(pool, 20) == {"a", "b"}
        b.healthy = False
        await wait_until(lambda: state(pool, b.address)[0] == "unhealthy")
        assert state(pool, b.address)[1] == "probe failed 2 time(s): HTTP 500"  # fall = 2
        hits = b.hits
        assert await traffic(pool, 30) == {"a"}
        assert b.hits == hits

        # An unrelated EndpointSlice update (a moves zone, c joins): b stays out.
        c = Backend("127.0.0.4", "c")
        more = await anyio.create_tcp_listener(local_host=c.address, local_port=port)
        group.start_soon(serve, more, c.handle)
        delta = endpoints.apply_slice(slice_of(port, a.address, b.address, c.address, zone="b"))
        pool.apply(delta, now=anyio.current_time())
        assert state(pool, b.address)[0] == "unhealthy"
        await wait_until(lambda: c.probes > 0)  # a new endpoint is probed at once
        assert await traffic(pool, 30) == {"a", "c"}

        b.healthy = True
        await wait_until(lambda: state(pool, b.address)[0] == "up")
        assert state(pool, b.address)[1] == "probe passed 2 time(s): HTTP 200"  # rise = 2
        assert "b" in await traffic(pool, 30)
        group.cancel_scope.cancel()


async def test_probe_outcomes() -> None:
    config = ActiveHealth(path="/healthz", timeout=0.5)
    backend = Backend("127.0.0.5", "x", healthy=False)
    async with anyio.create_task_group() as group:
        port = await start_backends(group, [backend])
        assert await http_probe(backend.address, port, config) == (False, "HTTP 500")
        backend.healthy = True
        assert await http_probe(backend.address, port, config) == (True, "HTTP 200")
        # A listener that accepts and never answers: the timeout.
        silent = await anyio.create_tcp_listener(local_host="127.0.0.6", local_port=0)
        silent_port = silent.extra(anyio.abc.SocketAttribute.local_port)

        async def hang(stream: anyio.abc.SocketStream) -> None:
            async with stream:
                await anyio.sleep_forever()

        group.start_soon(serve, silent, hang)
        ok, detail = await http_probe("127.0.0.6", silent_port, config)
        assert (ok, detail) == (False, "no answer within 0.5s")
        group.cancel_scope.cancel()
    refused = await http_probe("127.0.0.7", port, config)
    assert refused[0] is False
    assert refused[1].startswith("connection failed")


async def test_probes_are_spread_and_a_new_endpoint_is_probed_at_once() -> None:
    probed: list[str] = []

    async def record(address: str, port: int, config: ActiveHealth) -> tuple[bool, str]:
        probed.append(address)
        return True, "ok"

    pool = Pool("p", health=HealthConfig(active=ActiveHealth(interval=3600.0)))
    pool.replace([Endpoint(f"10.0.0.{i}", 80) for i in range(10)], now=0.0)
    prober = ActiveProber(rng=random.Random(3), probe=record)
    prober.watch(pool)
    async with anyio.create_task_group() as group:
        group.start_soon(prober.run)
        await anyio.sleep(0.2)
        # The ten present at start are spread over the hour-long interval, not fired together.
        assert probed == []
        pool.apply(Delta(added=(Endpoint("10.0.0.99", 80),)), now=anyio.current_time())
        await wait_until(lambda: probed == ["10.0.0.99"])
        pool.apply(Delta(removed=(("10.0.0.99", 80),)), now=anyio.current_time())
        group.cancel_scope.cancel()

"""The example gateway (examples/gateway/gateway.py) end to end, with requests flowing:
manifests edited on disk, a cluster changing through the Kubernetes API emulator, the seed's
health scenario, a rolling update, a backend killed under load (asyncio and trio)."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest

from kroute.gateway.router import Router
from kroute.watch import kinds
from tests.apiserver import ApiServer
from tests.builders import ingress
from tests.pods import Client, Pod, endpoint_slice, service, start_pods
from tests.test_kube import kubeconfig

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples" / "gateway"))
import gateway

sys.path.pop(0)

pytestmark = pytest.mark.anyio


async def until(condition: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    with anyio.fail_after(timeout):
        while not await condition():
            await anyio.sleep(0.02)


class Load:
    """Steady traffic from `workers` keep-alive clients until stopped; every answer recorded."""

    def __init__(self, port: int, host: str, path: str = "/", *, workers: int = 4) -> None:
        self.port, self.host, self.path, self.workers = port, host, path, workers
        self.answers: list[tuple[str, int, str]] = []  # (method, status, pod or body)
        self.stopped = anyio.Event()

    async def run(self, method: str = "GET", body: bytes | None = None) -> None:
        async def worker() -> None:
            client = Client(self.port)
            try:
                while not self.stopped.is_set():
                    status, answer = await client.request(self.host, self.path, method, body)
                    pod = json.loads(answer)["pod"] if status == 200 else answer.decode()
                    self.answers.append((method, status, pod))
            finally:
                await client.aclose()

        async with anyio.create_task_group() as group:
            for _ in range(self.workers):
                group.start_soon(worker)

    def failures(self) -> list[tuple[str, int, str]]:
        return [a for a in self.answers if a[1] != 200]

    def pods(self, since: int = 0) -> set[str]:
        return {pod for _, status, pod in self.answers[since:] if status == 200}


@pytest.fixture
async def group() -> AsyncIterator[anyio.abc.TaskGroup]:
    async with anyio.create_task_group() as group:
        yield group
        group.cancel_scope.cancel()


async def start_gateway(group: anyio.abc.TaskGroup, *where: str) -> tuple[Router, int, Client]:
    args = gateway.parse_args([*where, "--listen", "127.0.0.1:0", "--advertise", "web=8080",
                               "--admin", "127.0.0.1:0",
                               "--grace", "1", "--no-gc-freeze"])  # (a test process, shared)  # fmt: skip
    router, port, admin_port, *_ = await group.start(gateway.serve, args)
    return router, port, Client(admin_port)


# -- the example gateway on manifests: the seed's scenario -----------------------------------


async def test_example_manifests_edits_and_the_seed_health_scenario(
    group: anyio.abc.TaskGroup, tmp_path: Path
) -> None:
    manifests = tmp_path / "manifests"
    shutil.copytree(Path(gateway.__file__).parent / "manifests", manifests)
    pods = {address: Pod(name, address) for name, address in [
        ("www-1", "127.0.0.11"), ("www-2", "127.0.0.12"), ("api-1", "127.0.0.21"),
        ("api-2", "127.0.0.22")]}  # fmt: skip
    port = 0
    for pod in pods.values():  # the example's addresses, on a free port (not its 8081)
        port = await pod.start(group, port)
    slices = manifests / "endpointslices.yaml"
    slices.write_text(slices.read_text().replace("port: 8081", f"port: {port}"))
    router, gateway_port, admin = await start_gateway(group, "--manifests", str(manifests))
    client = Client(gateway_port)
    await until(lambda: _async(router.ready))
    seen = {(await client.json("test-www.localhost", "/"))["pod"] for _ in range(4)}
    assert seen == {"www-1", "www-2"}
    assert (await client.json("test-api.localhost", "/api/x"))["pod"] in {"api-1", "api-2"}
    assert (await client.request("test-api.localhost", "/other"))[0] == 404

    # A new manifest on disk: routed within the source's 1 s re-read, no restart.
    (manifests / "extra.yaml").write_text(json.dumps(
        ingress("extra", [("extra.localhost", [("/", "Prefix", "test-api")])], port="http")))  # fmt: skip

    async def extra_routed() -> bool:
        return (await client.request("extra.localhost", "/"))[0] == 200

    await until(extra_routed)

    # The seed's health scenario: www-2 fails its health check, leaves rotation, comes back.
    async def www_states() -> dict[str, str]:
        services = (await admin.json("localhost", "/api/services"))["services"]
        # The Ingress's pool (the HTTPRoute's, default/test-www:80, has the same pods)
        (www,) = [s for s in services if s["service"] == "default/test-www:http"]
        return {e["endpoint"]: e["state"] for e in www["endpoints"]}

    load = Load(gateway_port, "test-www.localhost")
    group.start_soon(load.run)
    pods["127.0.0.12"].healthy = False

    async def out_of_rotation() -> bool:
        return (await www_states())[f"127.0.0.12:{port}"] == "unhealthy"

    await until(out_of_rotation)
    await anyio.sleep(0.1)  # requests already sent to www-2 come back
    mark = len(load.answers)
    await anyio.sleep(0.3)
    assert load.pods(mark) == {"www-1"}  # no request reaches the failing pod
    pods["127.0.0.12"].healthy = True

    async def back_in_rotation() -> bool:
        return (await www_states())[f"127.0.0.12:{port}"] == "up"

    await until(back_in_rotation)
    await anyio.sleep(0.1)
    mark = len(load.answers)
    await anyio.sleep(0.3)
    load.stopped.set()
    assert load.pods(mark) == {"www-1", "www-2"}
    assert load.failures() == []
    for c in (client, admin):
        await c.aclose()


# -- the example gateway on a cluster (the Kubernetes API emulator) --------------------------


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The emulator, serving what the example gateway watches but Namespaces: kmock cannot parse
    the core collection's path (/api/v1/namespaces), so the gateway here does without them
    (tests/test_gateway_real.py runs it on a real API server with every kind)."""
    watched = tuple(kind for kind in gateway.KINDS if kind != kinds.NAMESPACE)
    monkeypatch.setattr(gateway, "KINDS", watched)
    with ApiServer(watched) as api:
        yield api


async def test_example_gateway_follows_cluster_changes_while_requests_flow(
    group: anyio.abc.TaskGroup, api: ApiServer, tmp_path: Path
) -> None:
    _pods, pod_port = await start_pods(group, "www", ["127.0.0.61", "127.0.0.62", "127.0.0.63"])
    api.create(kinds.INGRESS, ingress("www", [("www.test", [("/", "Prefix", "www")])]))
    api.create(kinds.SERVICE, service("www"))
    api.create(kinds.ENDPOINT_SLICE, endpoint_slice("www", pod_port, [("127.0.0.61", "ready")]))
    _, port, admin = await start_gateway(group, "--kubeconfig", str(kubeconfig(tmp_path, api.url)))
    client = Client(port)

    async def ready() -> bool:
        return (await admin.request("localhost", "/ready"))[0] == 200

    await until(ready)
    load = Load(port, "www.test")
    group.start_soon(load.run)

    # A new endpoint in the slice takes traffic.
    api.update(kinds.ENDPOINT_SLICE, endpoint_slice(
        "www", pod_port, [("127.0.0.61", "ready"), ("127.0.0.62", "ready")]))  # fmt: skip
    await until(lambda: _async("www-1" in load.pods()))

    # A new Ingress and its Service route at once; an update moves it; a delete removes it.
    api.create(kinds.SERVICE, service("api"))
    api.create(kinds.ENDPOINT_SLICE, endpoint_slice("api", pod_port, [("127.0.0.63", "ready")]))
    api.create(kinds.INGRESS, ingress("api", [("api.test", [("/v1", "Prefix", "api")])]))

    async def answers(path: str, status: int) -> bool:
        return (await client.request("api.test", path))[0] == status

    await until(lambda: answers("/v1/x", 200))
    assert (await client.json("api.test", "/v1/x"))["pod"] == "www-2"  # the pod at .63
    api.update(kinds.INGRESS, ingress("api", [("api.test", [("/v2", "Prefix", "api")])]))
    await until(lambda: answers("/v1/x", 404))
    assert (await client.request("api.test", "/v2/x"))[0] == 200
    # A Service change: health-check annotations turn active probing on for its pods.
    api.update(kinds.SERVICE, service("api", **{"kroute.dev/health-check-path": "/healthz",
                                                "kroute.dev/health-check-interval": "0.2"}))  # fmt: skip

    async def probed() -> bool:
        services = (await admin.json("localhost", "/api/services"))["services"]
        pool = next(p for p in services if p["service"] == "default/api:80")
        return bool(pool["endpoints"][0]["last_probe"] == "HTTP 200")

    await until(probed)
    # The Service is deleted: its route answers 503 naming it, not 404.
    api.delete(kinds.SERVICE, "default", "api")
    await until(lambda: answers("/v2/x", 503))
    assert b"Service default/api not found" in (await client.request("api.test", "/v2/x"))[1]
    # It comes back, then loses its endpoints: 503 again.
    api.create(kinds.SERVICE, service("api"))
    await until(lambda: answers("/v2/x", 200))
    api.update(kinds.ENDPOINT_SLICE, endpoint_slice("api", pod_port, []))
    await until(lambda: answers("/v2/x", 503))
    api.delete(kinds.INGRESS, "default", "api")
    await until(lambda: answers("/v2/x", 404))

    load.stopped.set()
    assert len(load.answers) > 20
    assert load.failures() == []  # the host that did not change never faltered
    for c in (client, admin):
        await c.aclose()


async def _async(value: bool) -> bool:
    return value


async def test_rolling_update_under_load_has_zero_failures(
    group: anyio.abc.TaskGroup, api: ApiServer, tmp_path: Path
) -> None:
    old, pod_port = await start_pods(group, "old", ["127.0.0.71", "127.0.0.72", "127.0.0.73"])
    new = [Pod(f"new-{i}", f"127.0.0.{81 + i}") for i in range(3)]
    state = {pod.address: "ready" for pod in old}

    def publish() -> None:
        api.update(kinds.ENDPOINT_SLICE, endpoint_slice("www", pod_port, list(state.items())))

    api.create(kinds.INGRESS, ingress("www", [("www.test", [("/", "Prefix", "www")])]))
    api.create(kinds.SERVICE, service("www"))
    api.create(kinds.ENDPOINT_SLICE, endpoint_slice("www", pod_port, list(state.items())))
    router, port, admin = await start_gateway(group, "--kubeconfig", str(kubeconfig(tmp_path, api.url)))  # fmt: skip
    await until(lambda: _async(router.ready))
    load = Load(port, "www.test", "/slow?s=0.02", workers=8)
    group.start_soon(load.run)
    await anyio.sleep(0.2)
    for before, after in zip(old, new, strict=True):
        await after.start(group, pod_port)  # the new pod starts, becomes ready
        state[after.address] = "ready"
        publish()
        await anyio.sleep(0.15)
        state[before.address] = "terminating"  # the old pod is deleted: terminating, serving
        publish()
        await anyio.sleep(0.15)
        await before.stop(grace=5)  # SIGTERM: it drains what it has, then exits
        del state[before.address]  # ... and leaves the slice
        publish()
        await anyio.sleep(0.15)
    mark = len(load.answers)
    await anyio.sleep(0.3)
    load.stopped.set()
    assert load.failures() == []
    assert len(load.answers) > 100
    assert load.pods(mark) == {"new-0", "new-1", "new-2"}  # only the new pods at the end
    assert all(pod.hits > 0 for pod in old + new)
    await admin.aclose()


# -- a backend killed under load -------------------------------------------------------------


async def test_backend_killed_under_load(group: anyio.abc.TaskGroup, tmp_path: Path) -> None:
    pods, pod_port = await start_pods(group, "www", ["127.0.0.91", "127.0.0.92", "127.0.0.93"])
    (tmp_path / "objects.json").write_text(json.dumps([
        ingress("www", [("www.test", [("/", "Prefix", "www")])]), service("www"),
        endpoint_slice("www", pod_port, [(p.address, "ready") for p in pods]),
    ]))  # fmt: skip
    router, port, admin = await start_gateway(group, "--manifests", str(tmp_path))
    await until(lambda: _async(router.ready))
    gets = Load(port, "www.test", "/slow?s=0.02", workers=6)
    posts = Load(port, "www.test", "/slow?s=0.02", workers=6)
    group.start_soon(gets.run)
    group.start_soon(posts.run, "POST", b"p" * 2000)  # streamed bodies: never sent twice
    await anyio.sleep(0.3)
    pods[1].kill()  # every connection cut at once, the port closed
    killed_at = (len(gets.answers), len(posts.answers))
    await anyio.sleep(0.05)  # handlers already resumed may still count their request
    hits_after_kill = pods[1].hits
    await anyio.sleep(0.55)
    after = (len(gets.answers), len(posts.answers))
    await anyio.sleep(0.4)
    gets.stopped.set()
    posts.stopped.set()

    # Safe requests (GET, nothing streamed) are retried on another pod: none fails.
    assert gets.failures() == []
    # A POST whose body was sent to the dead pod may fail (502), nothing else; at most those
    # that were in flight there when it died.
    assert all(status == 502 for _, status, _ in posts.failures())
    assert len(posts.failures()) <= posts.workers
    assert posts.answers[after[1] :]
    assert all(s == 200 for _, s, _ in posts.answers[after[1] :])
    assert gets.pods(killed_at[0] + 20) == {"www-0", "www-2"}
    assert pods[1].hits == hits_after_kill  # a killed pod serves nothing more
    (pool,) = (await admin.json("localhost", "/api/services"))["services"]
    dead = next(e for e in pool["endpoints"] if e["endpoint"].startswith("127.0.0.92:"))
    assert dead["state"] == "ejected"
    await admin.aclose()

"""KubernetesSource against the API emulator on loopback (kmock + tests/apiserver.py), for the
faults a real API server cannot be made to produce on demand: 410 in each of its two forms,
dropped, hung and failing streams, a refused streaming list, bookmarks every 0.2 s, a missing
CRD's recheck timing, random faults under churn. Everything else runs against the real
kube-apiserver in tests/test_kube_real.py."""

from __future__ import annotations

import datetime
import itertools
import random
import types
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
import trustme

from kroute.watch.api import MAX_RETRY_AFTER, Throttled, api_error
from kroute.watch.backoff import Backoff
from kroute.watch.cluster import Cluster
from kroute.watch.kinds import ENDPOINT_SLICE, INGRESS_ROUTE, SERVICE, Kind
from kroute.watch.kube import KubernetesSource
from tests.apiserver import ApiServer

pytestmark = pytest.mark.anyio


def svc(name: str, port: int = 80, namespace: str = "shop") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace}, "spec": {"ports": [{"port": port}]}}


def kubeconfig(tmp_path: Path, url: str, token: str = "t0ken") -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: emu, cluster: {{server: "{url}"}}}}]
users: [{{name: me, user: {{token: {token}}}}}]
contexts: [{{name: emu, context: {{cluster: emu, user: me}}}}]
current-context: emu
""")
    return path


def source_for(
    api: ApiServer, tmp_path: Path, kinds: tuple[Kind, ...], **options: Any
) -> KubernetesSource:
    options.setdefault("backoff", Backoff(initial=0.01, cap=0.05))
    options.setdefault("inactivity_timeout", 2.0)
    return KubernetesSource(Cluster.from_kubeconfig(str(kubeconfig(tmp_path, api.url))), kinds,
                            rng=random.Random(0), **options)  # fmt: skip


async def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.01)


def cached(source: KubernetesSource, kind: Kind) -> dict[tuple[str, str], Any]:
    return {k: v["spec"] for k, v in source.stores[kind].snapshot().items()}


def emulated(api: ApiServer, kind: Kind) -> dict[tuple[str, str], Any]:
    return {k: v["spec"] for k, v in api.state(kind).items()}


def assert_never_resumed_after_410(api: ApiServer, kind: Kind) -> None:
    """After a 410 the next request re-lists: no watch is retried with the expired version."""
    log = api.log[kind]
    for (what, version), (after, _) in itertools.pairwise(log):
        if what == "expired":
            assert after == "list", f"watch after 410 for {version}: {log}"


@pytest.fixture
async def running() -> AsyncIterator[Callable[[KubernetesSource], Any]]:
    async with anyio.create_task_group() as group:

        def start(source: KubernetesSource) -> None:
            group.start_soon(source.run)

        yield start
        group.cancel_scope.cancel()


@pytest.mark.parametrize("expired_as", ["http", "event"])
async def test_410_relists_and_removes_what_was_deleted_meanwhile(
    tmp_path: Path, running: Any, expired_as: str
) -> None:
    with ApiServer([SERVICE], expired_as=expired_as) as api:
        for name in ("a", "b", "c"):
            api.create(SERVICE, svc(name))
        source = source_for(api, tmp_path, (SERVICE,))
        running(source)
        with anyio.fail_after(10):
            await source.wait_synced()
        # The watch is dropped; while away, b is deleted and d created; history is compacted.
        api.fault(SERVICE, "drop")
        api.delete(SERVICE, "shop", "b")
        api.create(SERVICE, svc("d"))
        api.compact()
        api.fault(SERVICE, "drop")  # make sure the next watch starts from the old version
        await eventually(lambda: cached(source, SERVICE) == emulated(api, SERVICE))
        assert set(cached(source, SERVICE)) == {("shop", "a"), ("shop", "c"), ("shop", "d")}
        stats = {s.kind: s for s in source.statistics()}
        assert stats["services"].relists >= 1
        assert api.expired_versions[SERVICE]
        assert_never_resumed_after_410(api, SERVICE)


async def test_dropped_hung_and_failing_streams_recover(tmp_path: Path, running: Any) -> None:
    with ApiServer([SERVICE]) as api:
        api.create(SERVICE, svc("a"))
        source = source_for(api, tmp_path, (SERVICE,), inactivity_timeout=0.5)
        running(source)
        with anyio.fail_after(10):
            await source.wait_synced()
        api.fault(SERVICE, "drop", "http-500", "hang", "http-429", "drop")
        api.create(SERVICE, svc("b"))
        await eventually(lambda: cached(source, SERVICE) == emulated(api, SERVICE))
        await eventually(lambda: not api.faults[SERVICE])
        api.create(SERVICE, svc("c"))
        await eventually(lambda: ("shop", "c") in cached(source, SERVICE))
        stats = {s.kind: s for s in source.statistics()}
        assert stats["services"].reconnects >= 4
        assert stats["services"].last_error is not None
        assert stats["services"].relists == 0  # none of these needed a re-list


async def test_bookmarks_advance_the_resume_version(tmp_path: Path, running: Any) -> None:
    with ApiServer([SERVICE, ENDPOINT_SLICE], bookmark_interval=0.05) as api:
        api.create(SERVICE, svc("a"))
        source = source_for(api, tmp_path, (SERVICE, ENDPOINT_SLICE))
        running(source)
        with anyio.fail_after(10):
            await source.wait_synced()
        before = source.stores[SERVICE].resource_version
        api.create(ENDPOINT_SLICE, {"metadata": {"name": "s", "namespace": "shop"}, "spec": {}})
        # Services did not change, but bookmarks carry the server's newer version to them.
        await eventually(lambda: source.stores[SERVICE].resource_version != before)
        assert int(source.stores[SERVICE].resource_version or 0) > int(before or 0)


async def test_missing_crd_is_reported_and_rechecked_slowly(tmp_path: Path, running: Any) -> None:
    with ApiServer([SERVICE, INGRESS_ROUTE], missing=[INGRESS_ROUTE]) as api:
        source = source_for(api, tmp_path, (SERVICE, INGRESS_ROUTE), missing_recheck=3600)
        running(source)
        await eventually(
            lambda: {s.kind: s for s in source.statistics()}["ingressroutes.traefik.io"].missing
        )
        await anyio.sleep(0.3)
        stats = {s.kind: s for s in source.statistics()}["ingressroutes.traefik.io"]
        assert stats.reconnects == 1  # one attempt, then a slow recheck: no hot loop
        assert "CRD" in (stats.last_error or "")
        # Not served means none of them exist: an empty, complete list. Readiness does not
        # wait for a CRD that may never be installed.
        assert source.synced
        assert len(source.stores[INGRESS_ROUTE]) == 0


def test_service_account_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ca = trustme.CA()
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem.bytes())
    (tmp_path / "token").write_text("first-token")
    environ = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": "6443"}
    cluster = Cluster.in_cluster(str(tmp_path), environ=environ)
    assert cluster.base_url == "https://127.0.0.1:6443"
    assert cluster.ssl_context is not None
    assert {k: v.lower() for k, v in cluster.auth_headers().items()} == {
        "authorization": "bearer first-token"
    }

    # The token rotates (kubelet rewrites the file); after the loader's refresh period (one
    # minute) the next connection carries the new one.
    from kubernetes.config import incluster_config

    (tmp_path / "token").write_text("rotated-token")
    later = datetime.datetime.now() + datetime.timedelta(minutes=2)

    class Later(datetime.datetime):
        @classmethod
        def now(cls, tz: datetime.tzinfo | None = None) -> Later:
            return cls.fromtimestamp(later.timestamp())

    shim = types.SimpleNamespace(datetime=Later, timedelta=datetime.timedelta)
    monkeypatch.setattr(incluster_config, "datetime", shim)
    assert {k: v.lower() for k, v in cluster.auth_headers().items()} == {
        "authorization": "bearer rotated-token"
    }


@pytest.mark.parametrize("server_streams", [True, False])
async def test_streaming_list_or_fallback(
    tmp_path: Path, running: Any, server_streams: bool
) -> None:
    with ApiServer([SERVICE], streaming_lists=server_streams) as api:
        api.create(SERVICE, svc("a"))
        api.create(SERVICE, svc("b"))
        source = source_for(api, tmp_path, (SERVICE,), streaming_list=True)
        running(source)
        with anyio.fail_after(10):
            await source.wait_synced()
        assert cached(source, SERVICE) == emulated(api, SERVICE)
        stats = source.statistics()[0]
        assert stats.lists == (0 if server_streams else 1)
        if not server_streams:
            assert "streaming list refused" in (stats.last_error or "")
        api.create(SERVICE, svc("c"))
        await eventually(lambda: cached(source, SERVICE) == emulated(api, SERVICE))


async def test_cancellation_leaves_no_stream_behind(tmp_path: Path) -> None:
    with ApiServer([SERVICE, ENDPOINT_SLICE]) as api:
        source = source_for(api, tmp_path, (SERVICE, ENDPOINT_SLICE))
        async with anyio.create_task_group() as group:
            group.start_soon(source.run)
            with anyio.fail_after(10):
                await source.wait_synced()
            await eventually(
                lambda: api.watchers(SERVICE) == 1 and api.watchers(ENDPOINT_SLICE) == 1
            )
            group.cancel_scope.cancel()
        await eventually(lambda: api.watchers(SERVICE) == 0 and api.watchers(ENDPOINT_SLICE) == 0)


FAULTS = ["drop", "hang", "http-500", "http-429", "error-410", "http-410"]


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_random_churn_with_random_faults_converges(
    tmp_path: Path, running: Any, seed: int
) -> None:
    rng = random.Random(seed)
    kinds = (SERVICE, ENDPOINT_SLICE)
    with ApiServer(kinds, bookmark_interval=0.05, expired_as=rng.choice(["http", "event"])) as api:
        source = source_for(api, tmp_path, kinds, inactivity_timeout=0.3, page_size=3)
        running(source)
        with anyio.fail_after(10):
            await source.wait_synced()
        for step in range(120):
            kind = rng.choice(kinds)
            name = f"o{rng.randrange(12)}"
            roll = rng.random()
            if roll < 0.5:
                api.create(kind, svc(name, port=rng.randrange(1, 100)))
            elif roll < 0.75:
                api.delete(kind, "shop", name)
            elif roll < 0.9:
                api.fault(kind, rng.choice(FAULTS))
            elif roll < 0.95:
                api.compact()
            if step % 10 == 0:
                await anyio.sleep(0.02)
        await eventually(lambda: not any(api.faults[k] for k in kinds), timeout=20)
        await eventually(
            lambda: all(cached(source, k) == emulated(api, k) for k in kinds), timeout=20
        )
        for kind in kinds:
            assert_never_resumed_after_410(api, kind)


def test_retry_after_is_obeyed_and_bounded() -> None:
    # RFC 9110 10.2.3; the API server sends "Retry-After: 1" with 429 "storage is
    # (re)initializing" after it starts, and with API priority and fairness rejections.
    body = b'{"kind": "Status", "code": 429, "reason": "TooManyRequests", "message": "wait"}'
    throttled = api_error(429, [(b"Retry-After", b"1")], body)
    assert isinstance(throttled, Throttled)
    assert (throttled.status, throttled.retry_after) == (429, 1.0)
    assert "TooManyRequests: wait" in str(throttled)
    assert api_error(503, [(b"retry-after", b"9999")], b"").retry_after == MAX_RETRY_AFTER  # type: ignore[attr-defined]
    dated = api_error(429, [(b"Retry-After", b"Wed, 21 Oct 2026 07:28:00 GMT")], b"")
    assert isinstance(dated, Throttled)
    assert dated.retry_after == MAX_RETRY_AFTER
    for hostile in (b"nan", b"-inf", b"inf"):
        assert api_error(429, [(b"Retry-After", hostile)], b"").retry_after == MAX_RETRY_AFTER  # type: ignore[attr-defined]
    plain = api_error(500, [], b"oops")
    assert not isinstance(plain, Throttled)
    assert plain.status == 500

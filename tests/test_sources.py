"""Offline sources: memory and manifest files (polling, broken files, readiness, statistics)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import anyio
import pytest

from kroute.errors import ConfigError
from kroute.watch.kinds import INGRESS, SERVICE
from kroute.watch.sources import ManifestSource, MemorySource
from kroute.watch.store import Change

SVC = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop"},
       "spec": {"ports": [{"port": 80}]}}  # fmt: skip


def recorder() -> tuple[list[tuple[str, str, str]], object]:
    seen: list[tuple[str, str, str]] = []

    def listen(kind: object, changes: Sequence[Change]) -> None:
        seen.extend((str(kind), c.type, c.key[1]) for c in changes)

    return seen, listen


def test_memory_source_applies_and_deletes() -> None:
    source = MemorySource([SERVICE, INGRESS], objects=[SVC])
    assert source.synced
    seen, listen = recorder()
    source.subscribe(listen)  # type: ignore[arg-type]
    source.apply({**SVC, "spec": {"ports": [{"port": 81}]}})
    source.apply({**SVC, "metadata": {"name": "api", "namespace": "shop"}})
    source.delete(SVC)
    assert seen == [("services", "MODIFIED", "web"), ("services", "ADDED", "api"),
                    ("services", "DELETED", "web")]  # fmt: skip
    assert set(source.stores[SERVICE].snapshot()) == {("shop", "api")}
    stats = {s.kind: s for s in source.statistics()}
    assert stats["services"].objects == 1
    assert stats["services"].synced
    with pytest.raises(ConfigError, match="not a kind this source watches"):
        source.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}})


SERVICE_YAML = """apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: shop}}
spec: {{ports: [{{port: {port}}}]}}
"""


def write(path: Path, text: str) -> None:
    path.write_text(text)
    # Make the change visible to mtime polling even within one clock tick.
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))


def test_manifest_source_picks_up_changes_and_keeps_last_good_objects(tmp_path: Path) -> None:
    a, b = tmp_path / "a.yaml", tmp_path / "sub" / "b.yaml"
    b.parent.mkdir()
    write(a, SERVICE_YAML.format(name="web", port=80))
    write(b, SERVICE_YAML.format(name="api", port=80))
    source = ManifestSource([tmp_path], kinds=[SERVICE])
    seen, listen = recorder()
    source.subscribe(listen)  # type: ignore[arg-type]
    assert not source.synced
    source.load()
    assert source.synced
    assert sorted(seen) == [("services", "ADDED", "api"), ("services", "ADDED", "web")]
    seen.clear()
    write(a, SERVICE_YAML.format(name="web", port=81))
    source.load()
    assert seen == [("services", "MODIFIED", "web")]
    seen.clear()
    write(b, "kind: [broken\n")
    source.load()
    assert seen == []  # b's last good objects stay
    assert str(b) in source.errors
    assert "not valid YAML" in source.errors[str(b)]
    stats = {s.kind: s for s in source.statistics()}
    assert stats["services"].last_error is not None
    assert str(b) in stats["services"].last_error
    write(b, SERVICE_YAML.format(name="api2", port=80))
    source.load()
    assert sorted(seen) == [("services", "ADDED", "api2"), ("services", "DELETED", "api")]
    assert source.errors == {}
    seen.clear()
    a.unlink()
    source.load()
    assert seen == [("services", "DELETED", "web")]


@pytest.mark.anyio
async def test_manifest_source_polls_in_the_background(tmp_path: Path) -> None:
    file = tmp_path / "svc.yaml"
    write(file, SERVICE_YAML.format(name="web", port=80))
    source = ManifestSource([file], kinds=[SERVICE], interval=0.02)
    async with anyio.create_task_group() as group:
        group.start_soon(source.run)
        with anyio.fail_after(5):
            await source.wait_synced()
        write(file, SERVICE_YAML.format(name="web", port=8080))
        with anyio.fail_after(5):
            while source.stores[SERVICE].get(("shop", "web"))["spec"]["ports"][0]["port"] != 8080:  # type: ignore[index]
                await anyio.sleep(0.01)
        group.cancel_scope.cancel()

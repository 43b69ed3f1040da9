"""Where ACME certificates, account keys and shared challenges are kept: Secrets, or offline a
directory or memory.

Everything is a Secret object, in every store, so the same code reads it back:
- a certificate: `kubernetes.io/tls` (`tls.crt`: the full chain, `tls.key`), named by
  `kroute.acme.plan.secret_name`, annotated with its resolver and names;
- an account key: `Opaque`, `kroute-acme-account-RESOLVER`, `tls.key`;
- the challenges the leader is answering: `Opaque`, `kroute-acme-challenges`
  (`kroute.acme.responder`), which every replica answers from.
Each carries the labels `app.kubernetes.io/managed-by: kroute-acme` and `kroute.dev/acme-
resolver`, so `kubectl get secrets -l app.kubernetes.io/managed-by=kroute-acme` lists them.

`SecretStore` reads through a watch (a KubernetesSource of Secrets in its namespace, with the
label above: no request per read, and every replica sees a write as soon as its watch does) and
writes
through an `ApiClient` (server-side apply, field manager `kroute-acme`: only the leader
writes, and an apply needs no read first). `MemoryStore` and `DirectoryStore` (one JSON file
per Secret, mode 0600, written whole and renamed into place) are for `--manifests`.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from kroute.acme.plan import MANAGED_LABEL, MANAGED_VALUE, RESOLVER_LABEL
from kroute.objects import Obj, labels_of
from kroute.watch import kinds
from kroute.watch.api import ApiClient, Conflict
from kroute.watch.sources import Source

NAMES_ANNOTATION = "kroute.dev/acme-names"
FIELD_MANAGER = "kroute-acme"


def account_secret_name(resolver: str) -> str:
    return f"kroute-acme-account-{resolver}"


def secret(
    namespace: str,
    name: str,
    data: Mapping[str, bytes],
    *,
    resolver: str | None,
    tls: bool = False,
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A Secret kroute's ACME issuer writes (module docstring)."""
    labels = {MANAGED_LABEL: MANAGED_VALUE}
    if resolver is not None:
        labels[RESOLVER_LABEL] = resolver
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "labels": labels}
    if annotations:
        metadata["annotations"] = dict(annotations)
    return {
        "apiVersion": "v1", "kind": "Secret", "metadata": metadata,
        "type": "kubernetes.io/tls" if tls else "Opaque",
        "data": {key: base64.b64encode(value).decode() for key, value in data.items()},
    }  # fmt: skip


def secret_data(obj: Obj, key: str) -> bytes | None:
    """One data entry of a Secret, decoded (None when absent or not base64)."""
    data = obj.get("data")
    value = data.get(key) if isinstance(data, dict) else None
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        return None


class Store(Protocol):
    """The ACME Secrets of one namespace: read now, written, and changes told."""

    namespace: str

    def secrets(self) -> dict[str, Obj]: ...

    async def write(self, obj: dict[str, Any]) -> None: ...

    async def create(self, obj: dict[str, Any]) -> bool:
        """Write `obj` unless a Secret of its name exists; whether it was written."""
        ...

    def subscribe(self, listener: Callable[[], None]) -> None: ...

    async def wait_synced(self) -> None:
        """Return once `secrets()` says what is stored (a watch has listed)."""
        ...


def managed(objects: Mapping[str, Obj]) -> dict[str, Obj]:
    return {name: obj for name, obj in objects.items()
            if labels_of(obj).get(MANAGED_LABEL) == MANAGED_VALUE}  # fmt: skip


class MemoryStore:
    """Secrets in this process only (offline, tests): gone when it ends."""

    def __init__(self, namespace: str = "default") -> None:
        self.namespace = namespace
        self._secrets: dict[str, Obj] = {}
        self._listeners: list[Callable[[], None]] = []

    def secrets(self) -> dict[str, Obj]:
        return dict(self._secrets)

    async def write(self, obj: dict[str, Any]) -> None:
        self._secrets[obj["metadata"]["name"]] = obj
        self._saved(obj)
        for listener in self._listeners:
            listener()

    async def create(self, obj: dict[str, Any]) -> bool:
        if obj["metadata"]["name"] in self._secrets:
            return False
        await self.write(obj)
        return True

    def subscribe(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    async def wait_synced(self) -> None:
        return

    def _saved(self, obj: dict[str, Any]) -> None:
        """(Where a subclass persists a write.)"""


class DirectoryStore(MemoryStore):
    """Secrets as JSON files in `directory` (created, mode 0700), read back at start: the
    offline gateway keeps its account and certificates across restarts."""

    def __init__(self, directory: str | os.PathLike[str], namespace: str = "default") -> None:
        super().__init__(namespace)
        self.directory = Path(directory)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        for path in sorted(self.directory.glob("*.json")):
            obj = json.loads(path.read_text())
            self._secrets[obj["metadata"]["name"]] = obj

    def _saved(self, obj: dict[str, Any]) -> None:
        path = self.directory / f"{obj['metadata']['name']}.json"
        temporary = path.with_suffix(".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            json.dump(obj, file)
        temporary.replace(path)


class SecretStore:
    """Secrets in namespace `namespace` of a cluster: read from `sources` (which must watch
    Secrets), written through `api` (module docstring)."""

    def __init__(self, sources: Sequence[Source], api: ApiClient, namespace: str) -> None:
        self.sources = [s for s in sources if kinds.SECRET in s.stores]
        if not self.sources:
            raise ValueError("an ACME SecretStore reads Secrets from a source that watches them")
        self.api = api
        self.namespace = namespace

    def secrets(self) -> dict[str, Obj]:
        found: dict[str, Obj] = {}
        for source in self.sources:
            for (namespace, name), obj in source.stores[kinds.SECRET].snapshot().items():
                if namespace == self.namespace:
                    found[name] = obj
        return managed(found)

    async def write(self, obj: dict[str, Any]) -> None:
        await self.api.apply(kinds.SECRET, obj, field_manager=FIELD_MANAGER, force=True)

    async def create(self, obj: dict[str, Any]) -> bool:
        try:
            await self.api.create(kinds.SECRET, obj)
        except Conflict:
            return False
        return True

    def subscribe(self, listener: Callable[[], None]) -> None:
        def changed(kind: kinds.Kind, _: object) -> None:
            if kind == kinds.SECRET:
                listener()

        for source in self.sources:
            source.subscribe(changed)

    async def wait_synced(self) -> None:
        for source in self.sources:
            await source.wait_synced()

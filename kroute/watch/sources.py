"""Sources: where objects come from. All share one interface, so routing cannot tell them apart.

- `MemorySource`: objects applied and deleted by code (tests, users' own feeds);
- `ManifestSource`: files and directories, polled; a broken file keeps its last good objects;
- `KubernetesSource` (kroute.watch.kube): the API server, list then watch, per kind.

Each keeps one `Store` per kind, tells subscribers about every change, and is `synced` only once
every kind it watches has finished its first list.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import anyio
import anyio.to_thread
import attrs

from kroute.errors import ConfigError, ManifestError
from kroute.manifests import SUFFIXES, load_text
from kroute.watch.kinds import ROUTING_KINDS, Kind
from kroute.watch.store import Change, Obj, Store, key_of
from kroute.watch.wire import WatchEvent

_log = logging.getLogger(__name__)

#: Called with the kind and the changes of one list or event.
Listener = Callable[[Kind, Sequence[Change]], None]


@attrs.frozen
class KindStatistics:
    """How watching one kind goes."""

    kind: str
    synced: bool
    objects: int
    resource_version: str | None
    lists: int
    relists: int
    reconnects: int
    #: Answers that said to come back later (Retry-After), waited out as told.
    throttled: int
    #: Watches resumed after `inactivity_timeout` without a byte (no bookmarks from etcd).
    idle: int
    missing: bool
    last_error: str | None
    last_error_at: float | None


@attrs.define
class _Counters:
    lists: int = 0
    relists: int = 0
    reconnects: int = 0
    throttled: int = 0
    idle: int = 0
    missing: bool = False
    last_error: str | None = None
    last_error_at: float | None = None


class Source:
    """The shared half of every source: stores, subscribers, readiness, statistics."""

    def __init__(self, kinds: Iterable[Kind] = ROUTING_KINDS) -> None:
        self.kinds = tuple(kinds)
        self.stores: dict[Kind, Store] = {
            kind: Store(kind.kind, api_version=kind.api_version) for kind in self.kinds
        }
        self._counters = {kind: _Counters() for kind in self.kinds}
        self._listeners: list[Listener] = []
        self._synced_event: anyio.Event | None = None
        self._announced = False

    @property
    def synced(self) -> bool:
        """True once every kind has completed its first list."""
        return all(store.synced for store in self.stores.values())

    async def wait_synced(self) -> None:
        """Return once every kind has completed its first list."""
        if not self.synced:
            if self._synced_event is None:
                self._synced_event = anyio.Event()
            await self._synced_event.wait()

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def kind_of(self, obj: Obj) -> Kind | None:
        return next((k for k in self.kinds if k.matches(obj)), None)

    def _emit(self, kind: Kind, changes: Sequence[Change]) -> None:
        # Listeners also hear (with no changes) the moment the source as a whole has synced,
        # which may come with an empty list: readiness waits for it.
        announce = not self._announced and self.synced
        if changes or announce:
            self._announced = self._announced or announce
            for listener in self._listeners:
                listener(kind, changes)
        if self._synced_event is not None and self.synced:
            self._synced_event.set()

    def _error(self, kind: Kind, message: str, level: int | None = logging.WARNING) -> None:
        """Record a kind's latest problem (statistics, the admin API) and log it at `level`
        (None: the caller logged it once for every kind)."""
        if level is not None:
            _log.log(level, "%s: %s", kind, message)
        counters = self._counters[kind]
        counters.last_error = message
        counters.last_error_at = time.time()

    def statistics(self) -> tuple[KindStatistics, ...]:
        return tuple(
            KindStatistics(
                kind=str(kind),
                synced=self.stores[kind].synced,
                objects=len(self.stores[kind]),
                resource_version=self.stores[kind].resource_version,
                lists=c.lists,
                relists=c.relists,
                reconnects=c.reconnects,
                throttled=c.throttled,
                idle=c.idle,
                missing=c.missing,
                last_error=c.last_error,
                last_error_at=c.last_error_at,
            )
            for kind, c in self._counters.items()
        )

    async def run(self) -> None:
        """Keep the stores current until cancelled (nothing to do for a memory source)."""
        await anyio.sleep_forever()


def stored(sources: Iterable[Source], kind: Kind) -> Iterator[Obj]:
    """Every object of `kind` the sources hold, source after source (their current snapshots)."""
    for source in sources:
        store = source.stores.get(kind)
        if store is not None:
            yield from store.snapshot().values()


class MemorySource(Source):
    """Objects fed by code. Synced from the start: there is nothing to list."""

    def __init__(self, kinds: Iterable[Kind] = ROUTING_KINDS, objects: Iterable[Obj] = ()) -> None:
        super().__init__(kinds)
        self._version = 0
        initial: dict[Kind, list[Obj]] = {kind: [] for kind in self.kinds}
        for obj in objects:
            initial[self._kind(obj)].append(obj)
        for kind, items in initial.items():
            self._counters[kind].lists += 1
            self.stores[kind].replace(items, self._next_version())

    def _next_version(self) -> str:
        self._version += 1
        return str(self._version)

    def _kind(self, obj: Obj) -> Kind:
        kind = self.kind_of(obj)
        if kind is None:
            raise ConfigError(
                f"{obj.get('apiVersion')}/{obj.get('kind')} is not a kind this source watches"
            )
        return kind

    def _stamp(self, obj: Obj) -> Obj:
        meta = {**(obj.get("metadata") or {}), "resourceVersion": self._next_version()}
        return {**obj, "metadata": meta}

    def apply(self, obj: Obj) -> None:
        """Create or update an object."""
        kind = self._kind(obj)
        exists = self.stores[kind].get(key_of(obj)) is not None
        event = WatchEvent("MODIFIED" if exists else "ADDED", self._stamp(obj))
        self._emit(kind, self.stores[kind].apply(event))

    def delete(self, obj: Obj) -> None:
        """Delete an object (only its kind, namespace and name matter)."""
        kind = self._kind(obj)
        self._emit(kind, self.stores[kind].apply(WatchEvent("DELETED", self._stamp(obj))))


class ManifestSource(Source):
    """Objects from manifest files and directory trees, polled every `interval` seconds.

    A file that stops parsing keeps the objects it had (reported in `errors` with its name);
    a file that is removed takes its objects with it.
    """

    def __init__(
        self,
        paths: Iterable[str | os.PathLike[str]],
        kinds: Iterable[Kind] = ROUTING_KINDS,
        *,
        interval: float = 1.0,
    ) -> None:
        super().__init__(kinds)
        self.paths = [Path(p) for p in paths]
        self.interval = interval
        #: Files that could not be read, with the reason; their last good objects stay.
        self.errors: dict[str, str] = {}
        self._seen: dict[Path, tuple[int, int]] = {}
        self._objects: dict[Path, list[Obj]] = {}
        self._generation = 0

    def _files(self) -> list[Path]:
        files: list[Path] = []
        for path in self.paths:
            if path.is_dir():
                files.extend(
                    p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES
                )
            elif path.exists():
                files.append(path)
        return sorted(files)

    def scan(self) -> bool:
        """Read what changed on disk; True when the set of objects may have changed."""
        changed = False
        files = self._files()
        for gone in set(self._objects) - set(files):
            del self._objects[gone]
            self._seen.pop(gone, None)
            self.errors.pop(str(gone), None)
            changed = True
        for file in files:
            try:
                stat = file.stat()
            except OSError:
                continue
            stamp = (stat.st_mtime_ns, stat.st_size)
            if self._seen.get(file) == stamp:
                continue
            self._seen[file] = stamp
            try:
                text = file.read_text(encoding="utf-8")
                self._objects[file] = [dict(m.obj) for m in load_text(text, str(file))]
                self.errors.pop(str(file), None)
            except (OSError, UnicodeDecodeError) as exc:
                self.errors[str(file)] = f"{file}: cannot read: {exc}"
            except ManifestError as exc:
                self.errors[str(file)] = str(exc)
            if str(file) in self.errors:
                _log.warning("%s (its last good objects stay)", self.errors[str(file)])
            changed = True
        for message in self.errors.values():
            for kind in self.kinds:
                self._error(kind, message, level=None)
        return changed

    def publish(self) -> None:
        """Bring the stores in line with the objects read (a diff per kind)."""
        self._generation += 1
        by_kind: dict[Kind, list[Obj]] = {kind: [] for kind in self.kinds}
        for objects in self._objects.values():
            for obj in objects:
                kind = self.kind_of(obj)
                if kind is not None:
                    by_kind[kind].append(obj)
        for kind, items in by_kind.items():
            self._counters[kind].lists += 1
            self._emit(kind, self.stores[kind].replace(items, str(self._generation)))

    def load(self) -> None:
        """One synchronous scan and publish (the first one happens in `run` too)."""
        if self.scan() or not self.synced:
            self.publish()

    async def run(self) -> None:
        while True:
            changed = await anyio.to_thread.run_sync(self.scan)
            if changed or not self.synced:
                self.publish()
            await anyio.sleep(self.interval)

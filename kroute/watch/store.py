"""Per-kind object cache with the Kubernetes list/watch semantics. Pure and synchronous.

Sources: kubernetes.io "API Concepts" (resource versions, watch bookmarks, 410 Gone, streaming
lists); client-go `tools/cache/reflector.go`. What the store guarantees:
- every object that comes in, by list, watch or streaming list, carries its `kind` and
  `apiVersion`: a real API server leaves them off the items of a list (only the list says
  `IngressList`, `networking.k8s.io/v1`), so the store stamps them from its own kind, in this
  one place, and an object is the same dict value whichever way it arrived (a re-list then
  changes nothing that did not change);
- `replace(items, rv)` (a list, or a re-list after 410) diffs against the cache and emits
  ADDED, MODIFIED and the synthesized DELETED for objects that vanished while disconnected; the
  resume resourceVersion becomes the *list's* `metadata.resourceVersion`, never an item's;
- `apply(event)` folds in ADDED, MODIFIED, DELETED (emitting only real changes) and BOOKMARK,
  each advancing the resume resourceVersion to the event's, passed back unmodified and never
  compared across kinds;
- in a streaming list (`sendInitialEvents=true`) the initial ADDED events are collected without
  advancing the resume resourceVersion; the BOOKMARK annotated
  `k8s.io/initial-events-end: "true"` ends them and acts as the list;
- `synced` turns true after the first complete list, and stays true across re-lists;
- `snapshot()` is an immutable mapping that readers keep without locks: the store never
  mutates a snapshot it has handed out (copy on the first read after a change).
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from kroute.watch.wire import WatchEvent

ObjKey = tuple[str, str]
Obj = dict[str, Any]
Project = Callable[[Obj], Obj]

INITIAL_EVENTS_END = "k8s.io/initial-events-end"


def key_of(obj: Mapping[str, Any]) -> ObjKey:
    """(namespace, name); "" for cluster-scoped objects."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return ("", "")
    return (str(meta.get("namespace") or ""), str(meta.get("name") or ""))


def slim(obj: Obj) -> Obj:
    """The default projection: drop what routing never reads and what weighs most
    (`metadata.managedFields`, the last-applied-configuration annotation)."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return obj
    annotations = meta.get("annotations")
    heavy = "kubectl.kubernetes.io/last-applied-configuration"
    if "managedFields" not in meta and not (isinstance(annotations, dict) and heavy in annotations):
        return obj
    meta = {k: v for k, v in meta.items() if k != "managedFields"}
    if isinstance(annotations, dict) and heavy in annotations:
        meta["annotations"] = {k: v for k, v in annotations.items() if k != heavy}
    return {**obj, "metadata": meta}


@attrs.frozen
class Change:
    """One change to the cache. For DELETED, `object` is the last state known."""

    type: str
    key: ObjKey
    object: Obj
    old: Obj | None = None


def status_only(change: Change) -> bool:
    """A MODIFIED change that touched only the object's `status` (and its resourceVersion):
    what a controller writing status makes, kroute's StatusWriter included. Routing never reads
    `status`, so nothing needs compiling again for it (and state kept across rebuilds, such as a
    circuit breaker's, is not disturbed by every status write)."""
    old, new = change.old, change.object
    if (
        change.type != "MODIFIED"
        or old is None
        or old.keys() - {"status"} != new.keys() - {"status"}
    ):
        return False
    for key, value in new.items():
        if key == "metadata" and isinstance(value, dict) and isinstance(old.get(key), dict):
            if _unversioned(value) != _unversioned(old[key]):
                return False
        elif key != "status" and old.get(key) != value:
            return False
    return True


def _unversioned(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in meta.items() if k not in ("resourceVersion", "managedFields")}


class Store:
    """The cache of one kind."""

    def __init__(self, kind: str, *, api_version: str = "", project: Project = slim) -> None:
        self.kind = kind
        #: Stamped, with `kind`, on objects that come without them (list items do).
        self.api_version = api_version
        self._type = {"kind": kind, "apiVersion": api_version} if api_version else {"kind": kind}
        self.project = project
        #: Where the next watch resumes; None until a list has completed.
        self.resource_version: str | None = None
        self.synced = False
        self._objects: dict[ObjKey, Obj] = {}
        self._snapshot: Mapping[ObjKey, Obj] | None = types.MappingProxyType({})
        self._initial: dict[ObjKey, Obj] | None = None

    def __len__(self) -> int:
        return len(self._objects)

    def get(self, key: ObjKey) -> Obj | None:
        return self._objects.get(key)

    def snapshot(self) -> Mapping[ObjKey, Obj]:
        """An immutable view of every object now; later changes do not show in it."""
        if self._snapshot is None:
            self._snapshot = types.MappingProxyType(dict(self._objects))
        return self._snapshot

    def _take(self, item: Obj) -> Obj:
        """An object as the store keeps it: typed (kind, apiVersion), then projected."""
        if not (item.get("kind") and item.get("apiVersion")):
            missing = {k: v for k, v in self._type.items() if not item.get(k)}
            if missing:
                item = {**item, **missing}
        return self.project(item)

    def replace(self, items: Iterable[Obj], resource_version: str | None) -> list[Change]:
        """A complete list: the cache becomes exactly `items`; returns the difference.
        (`resource_version` None: nothing to resume from, as for a resource not served.)"""
        fresh = {}
        for item in items:
            obj = self._take(item)
            fresh[key_of(obj)] = obj
        changes = [
            Change("DELETED", key, gone, gone)
            for key, gone in self._objects.items()
            if key not in fresh
        ]
        for key, obj in fresh.items():
            old = self._objects.get(key)
            if old is None:
                changes.append(Change("ADDED", key, obj))
            elif old != obj:
                changes.append(Change("MODIFIED", key, obj, old))
            else:
                fresh[key] = old  # unchanged: the same dict (compile caches key on it)
        self._objects = fresh
        self._snapshot = None
        self.resource_version = resource_version
        self.synced = True
        self._initial = None
        return changes

    def start_initial_events(self) -> None:
        """A streaming list begins: collect ADDED events until the initial-events-end bookmark."""
        self._initial = {}

    def apply(self, event: WatchEvent) -> list[Change]:
        """Fold one watch event in (ERROR events are the caller's to handle)."""
        rv = event.resource_version
        if self._initial is not None:
            return self._apply_initial(event, rv)
        if event.type == "BOOKMARK":
            if rv is not None:
                self.resource_version = rv
            return []
        obj = self._take(event.object)
        key = key_of(obj)
        old = self._objects.get(key)
        changes = []
        if event.type == "DELETED":
            if old is not None:
                del self._objects[key]
                changes.append(Change("DELETED", key, old, old))
        elif event.type in ("ADDED", "MODIFIED"):
            if old is None:
                changes.append(Change("ADDED", key, obj))
            elif old != obj:
                changes.append(Change("MODIFIED", key, obj, old))
            self._objects[key] = obj
        if changes:
            self._snapshot = None
        if rv is not None:
            self.resource_version = rv
        return changes

    def _apply_initial(self, event: WatchEvent, rv: str | None) -> list[Change]:
        assert self._initial is not None
        if event.type == "BOOKMARK":
            annotations = event.object.get("metadata", {}).get("annotations") or {}
            if annotations.get(INITIAL_EVENTS_END) == "true" and rv is not None:
                return self.replace(self._initial.values(), rv)
            return []
        obj = self._take(event.object)
        if event.type == "DELETED":
            self._initial.pop(key_of(obj), None)
        elif event.type in ("ADDED", "MODIFIED"):
            self._initial[key_of(obj)] = obj
        return []

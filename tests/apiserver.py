"""A Kubernetes API emulator for tests: kmock serving HTTP, plus the semantics kmock lacks.

kmock (PyPI) serves a Kubernetes-shaped API over real HTTP on 127.0.0.1, but does not assign
resourceVersions, resume watches, send bookmarks, honour `timeoutSeconds` or page lists
(SEMANTICS.md section 7). This thin layer keeps the state itself and answers kmock's list and
watch requests from it:
- every change gets the next resourceVersion; a history of events per resource lets a watch
  resume from any version still in it; `compact()` forgets history, so older versions get 410
  (as an HTTP status or an in-stream ERROR event, as `expired_as` says);
- lists honour `limit`/`continue` (tokens expire with compaction);
- watches send bookmarks every `bookmark_interval` when asked, and end after `timeoutSeconds`;
- streaming lists (`sendInitialEvents=true`), or a 422 where `streaming_lists=False`;
- namespace paths and equality-based `labelSelector`s;
- list items without `kind` and `apiVersion`, as a real API server sends them;
- faults can be queued per resource: "http-500", "http-429", "http-410", "error-410",
  "drop" (end the stream at once), "hang" (send nothing, keep the connection open); queuing one
  ends the open watches of that resource, so that the next requests meet it;
- `token` makes every request without `Authorization: Bearer <token>` a 401.

kmock runs on asyncio in its own thread and loop, so tests on trio can use it too. Errors are
returned as `kmock.KubernetesError` (rendered as a Status with its code): a `kmock.Response`
returned from a reaction would set that status on the reaction for every later request.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import threading
from collections.abc import AsyncIterator, Iterable
from typing import Any

import kmock

from kroute.watch.kinds import Kind


class ApiServer:
    def __init__(
        self,
        kinds: Iterable[Kind],
        *,
        bookmark_interval: float = 0.2,
        expired_as: str = "event",
        token: str | None = None,
        missing: Iterable[Kind] = (),
        streaming_lists: bool = True,
    ) -> None:
        self.streaming_lists = streaming_lists
        self.kinds = [k for k in kinds if k not in set(missing)]
        self.bookmark_interval = bookmark_interval
        self.expired_as = expired_as
        self.token = token
        self.rv = 100
        self.objects: dict[Kind, dict[tuple[str, str], dict[str, Any]]] = {
            k: {} for k in self.kinds
        }
        self.history: dict[Kind, list[tuple[int, dict[str, Any]]]] = {k: [] for k in self.kinds}
        self.oldest = self.rv
        self.faults: dict[Kind, collections.deque[str]] = {
            k: collections.deque() for k in self.kinds
        }
        self.watch_versions: dict[Kind, list[str]] = {k: [] for k in self.kinds}
        #: (version, index into watch_versions) of every watch answered with 410.
        self.expired_versions: dict[Kind, list[tuple[str, int]]] = {k: [] for k in self.kinds}
        #: Every list ("list", "") and watch ("watch", version) request, in order; a watch
        #: answered with 410 is logged as ("expired", version).
        self.log: dict[Kind, list[tuple[str, str]]] = {k: [] for k in self.kinds}
        self.compacted_at: dict[Kind, int] = {}
        self._subscribers: dict[Kind, set[asyncio.Queue[dict[str, Any]]]] = {
            k: set() for k in self.kinds
        }
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self.url = ""

    # -- lifecycle (called from the test's thread) ---------------------------------------

    def __enter__(self) -> ApiServer:
        started: concurrent.futures.Future[str] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._serve(started)), daemon=True
        )
        self._thread.start()
        self.url = started.result(timeout=30)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None
        assert self._stop is not None
        assert self._thread is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)

    async def _serve(self, started: concurrent.futures.Future[str]) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        handler = kmock.KubernetesScaffold()
        for kind in self.kinds:
            res = kmock.resource(kind.group, kind.version, kind.plural)
            handler["list", res] << (lambda request, kind=kind: self._list(kind, request))
            handler["watch", res] << (lambda request, kind=kind: self._watch(kind, request))
        async with handler, kmock.Server(handler) as server:
            started.set_result(f"http://127.0.0.1:{server.port}")
            await self._stop.wait()
            for subscribers in self._subscribers.values():
                for queue in subscribers:
                    queue.put_nowait({"type": "_STOP"})

    def _call(self, fn: Any, *args: Any) -> Any:
        assert self._loop is not None
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn(*args))
            except BaseException as exc:
                future.set_exception(exc)

        self._loop.call_soon_threadsafe(run)
        return future.result(timeout=30)

    # -- state changes (thread-safe) -------------------------------------------------------

    def create(self, kind: Kind, obj: dict[str, Any]) -> None:
        self._call(self._change, kind, "ADDED", obj)

    def update(self, kind: Kind, obj: dict[str, Any]) -> None:
        self._call(self._change, kind, "MODIFIED", obj)

    def delete(self, kind: Kind, namespace: str, name: str) -> None:
        self._call(
            self._change, kind, "DELETED", {"metadata": {"namespace": namespace, "name": name}}
        )

    def compact(self) -> None:
        """Forget all history: watches from any earlier version now get 410."""
        self._call(self._compact)

    def fault(self, kind: Kind, *faults: str) -> None:
        """Queue faults for the next requests of `kind`, and end its open watches so that the
        next requests come soon."""
        self._call(self._fault, kind, faults)

    def _fault(self, kind: Kind, faults: tuple[str, ...]) -> None:
        self.faults[kind].extend(faults)
        for queue in self._subscribers[kind]:
            queue.put_nowait({"type": "_KICK"})

    def state(self, kind: Kind) -> dict[tuple[str, str], dict[str, Any]]:
        return dict(self._call(lambda: dict(self.objects[kind])))

    def watchers(self, kind: Kind) -> int:
        """Watch streams open now (to check that a stopped client leaves none behind)."""
        return int(self._call(lambda: len(self._subscribers[kind])))

    # -- on the server's loop ------------------------------------------------------------

    def _change(self, kind: Kind, type_: str, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        key = (meta.get("namespace") or "", meta["name"])
        if type_ == "DELETED":
            if key not in self.objects[kind]:
                return
            obj = self.objects[kind].pop(key)
        self.rv += 1
        obj = {**obj, "apiVersion": kind.api_version, "kind": kind.kind,
               "metadata": {**obj["metadata"], "resourceVersion": str(self.rv)}}  # fmt: skip
        if type_ != "DELETED":
            type_ = "MODIFIED" if key in self.objects[kind] else "ADDED"
            self.objects[kind][key] = obj
        event = {"type": type_, "object": obj}
        self.history[kind].append((self.rv, event))
        for queue in self._subscribers[kind]:
            queue.put_nowait(event)

    def _compact(self) -> None:
        self.oldest = self.rv
        for kind in self.kinds:
            self.history[kind].clear()

    def _status(self, code: int, reason: str, message: str) -> dict[str, Any]:
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "code": code, "reason": reason, "message": message}  # fmt: skip

    def _refuse(self, kind: Kind, request: kmock.Request, action: str) -> Any:
        if self.token and request.headers.get("Authorization") != f"Bearer {self.token}":
            return kmock.KubernetesError(status=401, reason="Unauthorized", message="no token")
        faults = self.faults[kind]
        if (
            faults
            and faults[0].startswith("http-")
            and (action == "watch" or faults[0] != "http-410")
        ):
            code = int(faults.popleft()[5:])
            if code == 410:
                self.log[kind][-1] = ("expired", self.log[kind][-1][1])
            reason = {410: "Expired", 429: "TooManyRequests"}.get(code, "InternalError")
            return kmock.KubernetesError(status=code, reason=reason, message="injected")
        return None

    def _list(self, kind: Kind, request: kmock.Request) -> Any:
        self.log[kind].append(("list", ""))
        refused = self._refuse(kind, request, "list")
        if refused is not None:
            return refused
        limit = int(request.params.get("limit") or 0)
        token = request.params.get("continue") or ""
        if token:
            rv, offset = (int(x) for x in token.split(":"))
            if rv < self.oldest:
                return kmock.KubernetesError(
                    status=410, reason="Expired", message="continue expired"
                )
        else:
            rv, offset = self.rv, 0
        items = [o for k, o in sorted(self.objects[kind].items()) if self._selected(request, o)]
        page = items[offset : offset + limit] if limit else items[offset:]
        # A real API server leaves kind and apiVersion off a list's items (only the list
        # says what they are); watch events carry both.
        page = [{k: v for k, v in o.items() if k not in ("kind", "apiVersion")} for o in page]
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        if limit and offset + limit < len(items):
            meta["continue"] = f"{rv}:{offset + limit}"
        return {
            "kind": f"{kind.kind}List",
            "apiVersion": kind.api_version,
            "metadata": meta,
            "items": page,
        }

    @staticmethod
    def _selected(request: kmock.Request, obj: dict[str, Any]) -> bool:
        """The request's namespace and equality-based labelSelector ("a=b,c=d")."""
        meta = obj.get("metadata", {})
        if request.namespace and meta.get("namespace") != request.namespace:
            return False
        labels = meta.get("labels") or {}
        for term in filter(None, (request.params.get("labelSelector") or "").split(",")):
            key, _, value = term.partition("=")
            if labels.get(key) != value:
                return False
        return True

    def _watch(self, kind: Kind, request: kmock.Request) -> Any:
        since = request.params.get("resourceVersion") or ""
        self.watch_versions[kind].append(since)
        self.log[kind].append(("watch", since))
        refused = self._refuse(kind, request, "watch")
        if refused is not None:
            return refused
        if request.params.get("sendInitialEvents") == "true" and not self.streaming_lists:
            return kmock.KubernetesError(
                status=422, reason="Invalid", message="sendInitialEvents is forbidden for watch"
            )
        if since and int(since) < self.oldest and self.expired_as == "http":
            self.expired_versions[kind].append((since, len(self.watch_versions[kind]) - 1))
            self.log[kind][-1] = ("expired", since)
            return kmock.KubernetesError(
                status=410, reason="Expired", message=f"too old resource version: {since}"
            )
        return self._stream(kind, request, since)

    async def _stream(self, kind: Kind, request: kmock.Request, since: str) -> AsyncIterator[Any]:
        yield b""  # headers now, even if nothing happens for a while
        fault = self.faults[kind].popleft() if self.faults[kind] else ""
        if fault == "drop":
            return
        if fault == "hang":
            await asyncio.sleep(3600)
            return
        if fault == "error-410" or (since and int(since) < self.oldest):
            self.expired_versions[kind].append((since, len(self.watch_versions[kind]) - 1))
            self.log[kind][-1] = ("expired", since)
            yield {
                "type": "ERROR",
                "object": self._status(410, "Expired", f"too old resource version: {since}"),
            }
            return
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._subscribers[kind].add(queue)
        try:
            if request.params.get("sendInitialEvents") == "true":
                for _, obj in sorted(self.objects[kind].items()):
                    if self._selected(request, obj):
                        yield {"type": "ADDED", "object": obj}
                yield {"type": "BOOKMARK", "object": {
                    "kind": kind.kind, "apiVersion": kind.api_version,
                    "metadata": {"resourceVersion": str(self.rv),
                                 "annotations": {"k8s.io/initial-events-end": "true"}}}}  # fmt: skip
                since = str(self.rv)
            for rv, event in self.history[kind]:
                if rv > int(since or 0) and self._selected(request, event["object"]):
                    yield event
            loop = asyncio.get_running_loop()
            deadline = loop.time() + float(request.params.get("timeoutSeconds") or 3600)
            bookmarks = request.params.get("allowWatchBookmarks") == "true"
            while (left := deadline - loop.time()) > 0:
                wait = min(left, self.bookmark_interval) if bookmarks else left
                try:
                    event = await asyncio.wait_for(queue.get(), timeout=wait)
                except TimeoutError:
                    if bookmarks and deadline - loop.time() > 0:
                        yield {"type": "BOOKMARK", "object": {"kind": kind.kind, "apiVersion": kind.api_version,
                               "metadata": {"resourceVersion": str(self.rv)}}}  # fmt: skip
                    continue
                if event["type"] in ("_STOP", "_KICK"):
                    return
                if self._selected(request, event["object"]):
                    yield event
        finally:
            self._subscribers[kind].discard(queue)

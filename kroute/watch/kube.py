"""KubernetesSource: list, then watch, every kind, for as long as it runs; on anyio + httpcore.

The protocol (SEMANTICS.md section 4; kubernetes.io "API Concepts"; client-go reflector):
- list in pages (`limit`/`continue`), then watch from the list's resourceVersion with
  `allowWatchBookmarks=true` and a server `timeoutSeconds` drawn between 5 and 10 minutes;
- a watch that ends (timeout, EOF) resumes from the last resourceVersion without a re-list;
- 410 Gone, as an HTTP status or as an ERROR event in a 200 stream, and an expired `continue`
  token, mean re-list: the store diffs the new list against the cache (synthesizing the deletes
  that happened while away) and the watch restarts from the new list's resourceVersion; a watch
  is never retried with an expired resourceVersion;
- no byte for `inactivity_timeout` (default 90 s, bookmarks come about once a minute) ends the
  connection: a half-open TCP connection never errors by itself;
- failures back off with jitter (0.8 s doubling to 30 s, reset after 2 minutes of health); a
  watch that ends within a second with no event counts as a failure; 5xx back off too; an
  answer with `Retry-After` (429 "storage is (re)initializing" right after an API server
  starts, 429 from API priority and fairness) is waited out as told, and counted as throttling,
  not as an error;
- no byte for `inactivity_timeout` ends the watch and it resumes at once: a watch served by
  etcd (`--watch-cache=false`) gets no bookmarks, so a quiet kind's watch is silent by design;
- a list's items carry no `kind` or `apiVersion` on a real API server: the store stamps them
  (kroute.watch.store), and the list's own kind must be the kind asked for;
- 401 and 403 are reported as credential problems (an exec plugin that failed silently sends
  requests without credentials);
- a kind whose resource is not served (404 on list: its CRD is not installed) is reported as
  missing (one log line, not one per recheck), holds no objects, counts as synced, and is
  rechecked every `missing_recheck` seconds, never in a hot loop: a CRD installed later is
  picked up then (one line again, on streaming lists too);
- the streaming list (`sendInitialEvents=true`, `resourceVersionMatch=NotOlderThan`) is used
  when `streaming_list=True`, and abandoned for list+watch if the server refuses it.
Cancelling `run()` cancels every request; httpcore closes their connections.
"""

from __future__ import annotations

import json
import logging
import random
import time
from typing import Any
from urllib.parse import urlencode

import anyio
import httpcore

from kroute.errors import KrouteError
from kroute.watch.api import (
    NETWORK_ERRORS,
    ApiError,
    Throttled,
    api_error,
    request_extensions,
    request_headers,
)
from kroute.watch.backoff import Backoff
from kroute.watch.cluster import Cluster
from kroute.watch.kinds import ROUTING_KINDS, Kind
from kroute.watch.sources import Source
from kroute.watch.wire import WatchDecoder, WatchProtocolError


class Expired(KrouteError):
    """The resourceVersion or continue token is too old (410): re-list."""


_log = logging.getLogger(__name__)


class KubernetesSource(Source):
    """Objects from the Kubernetes API, kept current by list and watch."""

    def __init__(
        self,
        cluster: Cluster,
        kinds: tuple[Kind, ...] = ROUTING_KINDS,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        page_size: int = 500,
        inactivity_timeout: float = 90.0,
        watch_timeout: tuple[int, int] = (300, 600),
        missing_recheck: float = 300.0,
        streaming_list: bool = False,
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(kinds)
        self.cluster = cluster
        self.namespace = namespace
        self.label_selector = label_selector
        self.page_size = page_size
        self.inactivity_timeout = inactivity_timeout
        self.watch_timeout = watch_timeout
        self.missing_recheck = missing_recheck
        self.streaming_list = streaming_list
        self._backoff_template = backoff or Backoff()
        self._rng = rng or random.Random()
        self._pool: httpcore.AsyncConnectionPool | None = None

    async def run(self) -> None:
        pool = httpcore.AsyncConnectionPool(
            ssl_context=self.cluster.ssl_context, max_connections=len(self.kinds) + 4
        )
        self._pool = pool
        try:
            async with anyio.create_task_group() as group:
                for kind in self.kinds:
                    group.start_soon(self._follow, kind)
        finally:
            self._pool = None
            # Shielded: when run() is cancelled, httpcore's own clean-up of the open watch
            # streams is cancelled too, and their sockets would be left to the GC.
            with anyio.CancelScope(shield=True):
                await pool.aclose()

    # -- one kind -----------------------------------------------------------------------

    async def _follow(self, kind: Kind) -> None:
        store = self.stores[kind]
        counters = self._counters[kind]
        backoff = Backoff(
            initial=self._backoff_template.initial,
            factor=self._backoff_template.factor,
            cap=self._backoff_template.cap,
            reset_after=self._backoff_template.reset_after,
            jitter=self._backoff_template.jitter,
        )
        streaming = self.streaming_list
        while True:
            delay = 0.0
            try:
                if store.resource_version is None:
                    if streaming:
                        try:
                            await self._watch(kind, initial_events=True)
                            continue
                        except ApiError as exc:
                            if exc.status in (401, 403, 404, 429) or exc.status >= 500:
                                raise
                            streaming = False  # the server does not do streaming lists
                            self._error(kind, f"streaming list refused ({exc}); list+watch")
                    await self._list(kind)
                started = anyio.current_time()
                events = await self._watch(kind, initial_events=False)
                if events == 0 and anyio.current_time() - started < 1.0:
                    raise WatchProtocolError("watch ended within a second with no event")
            except Throttled as exc:
                counters.throttled += 1
                _log.info("%s: %s; retrying in %.1f s as told", kind, exc, exc.retry_after)
                delay = exc.retry_after
            except Expired as exc:
                counters.relists += 1
                store.resource_version = None  # never resume from an expired version
                self._error(kind, f"{exc}; re-listing", logging.INFO)
            except ApiError as exc:
                if exc.status == 404:
                    # No such resource (its CRD is not installed, or was removed): none of its
                    # objects exist, which is a complete, empty list. The kind counts as
                    # synced, so a gateway on a cluster without, say, the Gateway API is ready;
                    # it is listed again every `missing_recheck` seconds.
                    self._missing(kind, exc)
                    self._emit(kind, store.replace([], None))
                    delay = self.missing_recheck
                else:
                    if exc.status in (401, 403):
                        message = f"credentials rejected ({exc})"
                    else:
                        message = str(exc)
                    self._error(kind, message)
                    delay = backoff.failure(time.monotonic(), self._rng)
            except (*NETWORK_ERRORS, WatchProtocolError) as exc:
                self._error(kind, f"{type(exc).__name__}: {exc}")
                delay = backoff.failure(time.monotonic(), self._rng)
            counters.reconnects += 1
            if delay:
                await anyio.sleep(delay)

    def _missing(self, kind: Kind, exc: ApiError) -> None:
        """A 404 for the kind: recorded every time, logged once until it is served again (a
        recheck every `missing_recheck` seconds says nothing new)."""
        counters = self._counters[kind]
        message = (
            f"not served (is its CRD installed?): skipped, rechecked every "
            f"{self.missing_recheck:g} s; {exc}"
        )
        self._error(kind, message, None if counters.missing else logging.WARNING)
        counters.missing = True

    def _served(self, kind: Kind) -> None:
        """A 200 for the kind: one that was missing has had its CRD installed since. Logged
        at the level its absence was, so whoever saw one line sees the other."""
        counters = self._counters[kind]
        if counters.missing:
            counters.missing = False
            _log.warning("%s: served now (its CRD is installed): listing and watching it", kind)

    def _url(self, kind: Kind, params: dict[str, str]) -> str:
        if self.label_selector:
            params["labelSelector"] = self.label_selector
        return f"{self.cluster.base_url}{kind.path(self.namespace)}?{urlencode(params)}"

    async def _list(self, kind: Kind) -> None:
        assert self._pool is not None
        store = self.stores[kind]
        items: list[dict[str, Any]] = []
        token = ""
        while True:
            params = {"limit": str(self.page_size)}
            if token:
                params["continue"] = token
            response = await self._pool.request(
                "GET", self._url(kind, params), headers=await request_headers(self.cluster),
                extensions=request_extensions(self.cluster, 60.0),
            )  # fmt: skip
            if response.status == 410:
                raise Expired(f"list of {kind}: continue token expired")
            if response.status != 200:
                raise api_error(response.status, response.headers, response.content)
            self._served(kind)
            try:
                page = json.loads(response.content)
                items.extend(page.get("items") or [])
                meta = page.get("metadata") or {}
                list_kind = page.get("kind")
            except (ValueError, AttributeError) as exc:
                raise WatchProtocolError(f"list of {kind}: not a list: {exc}") from None
            if list_kind not in (None, f"{kind.kind}List"):
                raise WatchProtocolError(f"list of {kind} answered with a {list_kind!r}")
            token = meta.get("continue") or ""
            if not token:
                break
        counters = self._counters[kind]
        counters.lists += 1
        version = str(meta.get("resourceVersion") or "")
        # The first list of each kind is routine (debug); a re-list follows a lost watch.
        _log.log(logging.INFO if counters.lists > 1 else logging.DEBUG,
                 "%s: listed %d objects at resourceVersion %s%s", kind, len(items), version,
                 " (re-list)" if counters.lists > 1 else "")  # fmt: skip
        self._emit(kind, store.replace(items, version))

    async def _watch(self, kind: Kind, *, initial_events: bool) -> int:
        """Stream events into the store until the server ends the watch; the event count."""
        assert self._pool is not None
        store = self.stores[kind]
        params = {
            "watch": "true",
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(self._rng.randint(*self.watch_timeout)),
        }
        if initial_events:
            params.update(sendInitialEvents="true", resourceVersionMatch="NotOlderThan")
            store.start_initial_events()
        else:
            params["resourceVersion"] = store.resource_version or ""
        decoder = WatchDecoder()
        try:
            events = await self._stream(kind, params, decoder)
        except httpcore.ReadTimeout:
            # Nothing for `inactivity_timeout`: a half-open connection, or a quiet kind on a
            # watch without bookmarks (served by etcd). Either way: resume from here at once.
            self._counters[kind].idle += 1
            _log.info("%s: watch idle for %.0f s; resuming", kind, self.inactivity_timeout)
            return 0
        if initial_events and not store.synced:
            raise WatchProtocolError(f"streaming list of {kind} ended before its initial events")
        return events

    async def _stream(self, kind: Kind, params: dict[str, str], decoder: WatchDecoder) -> int:
        """One watch request: its events into the store until it ends; how many."""
        assert self._pool is not None
        store = self.stores[kind]
        events = 0
        async with self._pool.stream(
            "GET", self._url(kind, params), headers=await request_headers(self.cluster),
            extensions=request_extensions(self.cluster, self.inactivity_timeout),
        ) as response:  # fmt: skip
            if response.status == 410:
                raise Expired(f"watch of {kind} from {params.get('resourceVersion')}: 410 Gone")
            if response.status != 200:
                raise api_error(response.status, response.headers, await response.aread())
            self._served(kind)
            # Nothing may leave this loop but the stream's own end or exceptions raised inside
            # it: abandoning httpcore's nested body generators mid-way leaks them on trio. After
            # an ERROR event the server ends the watch, so the error waits for that end.
            failure: KrouteError | None = None
            async for chunk in response.aiter_stream():
                if failure is not None:
                    continue
                try:
                    for event in decoder.feed(chunk):
                        events += 1
                        if event.type == "ERROR":
                            status = event.status
                            if status.expired:
                                raise Expired(f"watch of {kind}: {status.message or '410 Gone'}")
                            raise ApiError(status.code or 500, status.message)
                        self._emit(kind, store.apply(event))
                except KrouteError as exc:
                    failure = exc
            if failure is not None:
                raise failure
            for event in decoder.close():
                events += 1
                self._emit(kind, store.apply(event))
        return events

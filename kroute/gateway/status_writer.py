"""StatusWriter: the status kroute computes (kroute.status), written to the API server.

The decisions are kroute.status's (pure): which objects, what status, merged with what each has,
`changed` or not. This shell adds the I/O, and the promises of a good citizen (docs/status.md):

- **Only what changed is written**, however many events arrive. Each round plans on what the
  sources hold and writes the updates marked `changed`. kroute's own writes come back as watch
  events and plan to `changed` False; until one has come back, the object's answer to the write
  stands in for the stored copy (`_Pending`), so an event arriving in between (another object's)
  does not write the same status twice.
- **The status subresource, at the resourceVersion read** (an update, HTTP PUT of `/status`),
  not server-side apply: kroute merges into the status it read (other controllers'
  `status.parents` entries, conditions of other types), and `status.parents` and
  `status.loadBalancer.ingress` are atomic lists, which an apply would own whole and so take
  from the other controllers writing them. The resourceVersion makes a write over anybody
  else's fail (409, `Conflict`): the object is read again and the same decision made on what is
  there (`update_for`), up to `retries` times; if its spec changed meanwhile (another
  generation), the watch event of that change brings a new plan instead.
- **Rate-limited** by a token bucket (`rate` writes per second, bursts of `burst`), and a
  server's 429 is obeyed (its Retry-After).
- **Only while leading** when given a LeaderElection (kroute.watch.leader): the writing stops
  the moment leadership ends; routing, which is the Router's, goes on in every replica.
- **One bad object never stops the others**: an error is logged naming the object and the
  round goes on; objects that failed are tried again after a backoff.
"""

from __future__ import annotations

import datetime
import logging
import math
import random
from collections.abc import Callable, Iterable
from typing import Any

import anyio
import attrs

from kroute.gateway.router import Router
from kroute.objects import Obj, ObjectRef
from kroute.status import (
    CONTROLLER_NAME,
    Desired,
    PublishedAddresses,
    StatusSettings,
    StatusUpdate,
    desired_statuses,
    object_generation,
    update_for,
)
from kroute.watch import kinds
from kroute.watch.api import ApiClient, ApiError, Conflict, NotFound, Throttled
from kroute.watch.backoff import Backoff
from kroute.watch.leader import LeaderElection, while_leading
from kroute.watch.sources import stored
from kroute.watch.store import Change, key_of

_log = logging.getLogger(__name__)

#: The kinds whose status kroute writes, by `kind`.
WRITTEN = {k.kind: k for k in (kinds.INGRESS, kinds.GATEWAY_CLASS, kinds.GATEWAY,
                               kinds.HTTP_ROUTE)}  # fmt: skip
#: The kinds status is computed from: the Router's, and the Services and Secrets references
#: resolve to. EndpointSlices say nothing about status: their events wake no round.
READ = (*WRITTEN.values(), kinds.INGRESS_CLASS, kinds.REFERENCE_GRANT, kinds.NAMESPACE,
        kinds.INGRESS_ROUTE, kinds.MIDDLEWARE, kinds.SERVICE, kinds.SECRET)  # fmt: skip

NO_ADDRESSES = PublishedAddresses()
_Key = tuple[str, str, str]  # kind, namespace, name


class TokenBucket:
    """A token bucket (pure: the time is passed in): `rate` tokens a second, at most `burst`
    saved up. `take(now)` reserves one and says how long to wait before using it, so callers
    waiting together are spaced `1/rate` apart. A rate of `math.inf` never waits."""

    def __init__(self, rate: float, burst: int) -> None:
        if not rate > 0 or burst < 1:
            raise ValueError(f"a token bucket needs rate > 0 and burst >= 1 (got {rate}, {burst})")
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._at: float | None = None

    def take(self, now: float) -> float:
        if math.isinf(self.rate):
            return 0.0
        if self._at is not None:
            self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.rate)
        self._at = now
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate


@attrs.frozen
class WriterStatistics:
    """Counts since the writer started: rounds planned, status writes made, conflicts met
    (each costs a read), objects given up on (logged), requests to the API server."""

    rounds: int
    writes: int
    conflicts: int
    failures: int
    requests: int


class StatusWriter:
    """Writes the status of the objects `router` serves through `api` (module docstring).

    `addresses` and the Service `publish_service` (namespace, name; its load-balancer
    addresses or external IPs, followed as it changes) are where clients reach kroute: they
    become Ingress and Gateway addresses. Run `run()` next to `router.run()`.
    """

    def __init__(
        self,
        router: Router,
        api: ApiClient,
        *,
        controller_name: str = CONTROLLER_NAME,
        addresses: PublishedAddresses = NO_ADDRESSES,
        publish_service: tuple[str, str] | None = None,
        election: LeaderElection | None = None,
        rate: float = 20.0,
        burst: int = 50,
        debounce: float = 0.2,
        retries: int = 5,
        concurrency: int = 4,
        clock: Callable[[], datetime.datetime] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.router = router
        self.api = api
        self.controller_name = controller_name
        self.addresses = addresses
        self.publish_service = publish_service
        self.election = election
        self.debounce = debounce
        self.retries = retries
        self.concurrency = concurrency
        self.clock = clock or (lambda: datetime.datetime.now(datetime.UTC))
        self._bucket = TokenBucket(rate, burst)
        self._rng = rng or random.Random()
        self._wake: anyio.Event | None = None
        self._idle = False
        self._pending = _Pending()
        self._withdrawals = _Withdrawals()
        self._counts = {"rounds": 0, "writes": 0, "conflicts": 0, "failures": 0, "requests": 0}
        for source in router.sources:
            source.subscribe(self._changed)

    def statistics(self) -> WriterStatistics:
        return WriterStatistics(**self._counts)

    @property
    def settled(self) -> bool:
        """Running, and every change the sources delivered has been planned and written (what
        tests and benchmarks wait for)."""
        return self._idle and self._wake is not None and not self._wake.is_set()

    def settings(self) -> StatusSettings:
        """The settings of this round: the Router's classes and entry points, the addresses
        published now, and the kinds whose every object the sources hold."""
        addresses = self.addresses
        if self.publish_service is not None:
            namespace, name = self.publish_service
            service = next((s.stores[kinds.SERVICE].get((namespace, name))
                            for s in self.router.sources if kinds.SERVICE in s.stores),
                           None)  # fmt: skip
            addresses = addresses + PublishedAddresses.from_service(service)
        watched = {k.kind for s in self.router.sources for k in s.kinds}
        return StatusSettings(
            controller_name=self.controller_name, addresses=addresses,
            ingress_class=self.router.ingress_class, gateway_class=self.router.gateway_class,
            entry_points=self.router.entry_points,
            complete_kinds=frozenset({"Service", "Secret"} & watched),
        )  # fmt: skip

    async def run(self) -> None:
        """Write status until cancelled (while leading, with an election)."""
        await while_leading(self.election, self._serve)

    async def _serve(self) -> None:
        self._pending = _Pending()  # a new term: nothing of ours is on its way
        backoff = Backoff(initial=1.0, cap=30.0)
        for source in self.router.sources:  # a partial picture would withdraw what it misses
            await source.wait_synced()
        while True:
            self._wake = anyio.Event()
            try:
                failed = await self.write_round()
            except Exception:  # a bug here must not stop routing, which shares the task group
                _log.exception("status: the round failed")
                failed = 1
            wait = backoff.failure(anyio.current_time(), self._rng) if failed else math.inf
            self._idle = not failed
            try:
                with anyio.move_on_after(wait):
                    await self._wake.wait()  # (set by any change since the round began)
            finally:
                self._idle = False
            await anyio.sleep(self.debounce)  # the rest of a burst of events arrives first

    async def write_round(self) -> int:
        """Plan on what the sources hold now and write each status that changed; the number
        of objects that could not be written."""
        self._counts["rounds"] += 1
        settings = self.settings()
        compiled = self.router.compiled  # (rebuilt first if a routing object changed)
        objects = self._pending.overlay(
            o for kind in READ for o in stored(self.router.sources, kind)
        )
        now = self.clock()
        todo = []
        served: dict[tuple[str, str], StatusUpdate] = {}
        for want in desired_statuses(objects, settings, compiled=compiled):
            update = update_for(want, settings, now=now)
            self._withdrawals.note(want)
            if update is not None and want.ref.kind == "Gateway" and want.status is not None:
                served[(want.ref.namespace, want.ref.name)] = update
            if update is not None and update.changed and self._withdrawals.allows(want):
                todo.append((want, update))
        todo += self._withdrawals.gateways(served, objects)
        failures = 0
        limiter = anyio.CapacityLimiter(self.concurrency)

        async def write(want: Desired, update: StatusUpdate) -> None:
            nonlocal failures
            async with limiter:
                if await self._write(want, update, settings):
                    self._withdrawals.wrote(want)
                else:
                    failures += 1
                    self._counts["failures"] += 1

        async with anyio.create_task_group() as group:
            for want, update in todo:
                group.start_soon(write, want, update)
        return failures

    async def _write(self, want: Desired, update: StatusUpdate, settings: StatusSettings) -> bool:
        """Write one object's status; on a conflict, read it and decide again. False when it
        could not be written (logged)."""
        kind = WRITTEN[update.kind]
        stored_version = update.resource_version
        for _ in range(self.retries):
            if update.resource_version is None:
                _log.warning("status: %s %s has no resourceVersion", update.kind, _where(update))
                return False
            await self._limit()
            try:
                self._counts["requests"] += 1
                answer = await self.api.replace(kind, _body(kind, update), subresource="status")
                self._counts["writes"] += 1
                self._pending.wrote(update.kind, stored_version, answer)
                return True
            except Conflict:
                self._counts["conflicts"] += 1
            except Throttled as exc:
                await anyio.sleep(exc.retry_after)
                continue
            except NotFound:
                return True  # deleted meanwhile: nothing to write to
            except ApiError as exc:
                _log.warning("status not written: %s", exc)
                return False
            try:  # someone else wrote first: decide again on what is there now
                self._counts["requests"] += 1
                fresh = await self.api.get(kind, update.namespace or None, update.name)
            except NotFound:
                return True
            except ApiError as exc:
                _log.warning("status not written: %s", exc)
                return False
            if object_generation(fresh) != object_generation(want.obj):
                return True  # its spec changed: the watch event of that brings a new plan
            self._pending.wrote(update.kind, stored_version, fresh)
            want = Desired(fresh, want.ref, want.status)
            again = update_for(want, settings, now=self.clock())
            if again is None or not again.changed:
                return True  # what is there now is already right
            update = again
        _log.warning("status not written: %s %s: still conflicting after %d tries",
                     update.kind, _where(update), self.retries)  # fmt: skip
        return False

    async def _limit(self) -> None:
        delay = self._bucket.take(anyio.current_time())
        if delay > 0:
            await anyio.sleep(delay)

    def _changed(self, kind: kinds.Kind, changes: Iterable[Change]) -> None:
        if kind != kinds.ENDPOINT_SLICE and self._wake is not None:
            self._wake.set()


class _Withdrawals:
    """Ingresses kroute took its published addresses from (it stopped serving them), and
    those where the addresses came back since: another writer publishes the same ones there (a
    second kroute installation on the same nodes serving another class, say). Taking them again
    would fight it write for write, for ever; kroute leaves such an Ingress alone, says so once,
    and takes it up again when it serves it. The Gateways it stopped serving: `gateways`."""

    def __init__(self) -> None:
        self.taken: set[tuple[str, str]] = set()
        self.contested: set[tuple[str, str]] = set()
        #: The Gateways kroute served in the last round, with their status as of then.
        self.last: dict[tuple[str, str], StatusUpdate] = {}

    def note(self, want: Desired) -> None:
        """Every object planned: one kroute serves (again) is nobody else's to fight over."""
        if want.ref.kind == "Ingress" and want.status is not None:
            key = (want.ref.namespace, want.ref.name)
            self.taken.discard(key)
            self.contested.discard(key)

    def allows(self, want: Desired) -> bool:
        """Whether a changed status of `want` may be written."""
        if want.ref.kind != "Ingress" or want.status is not None:
            return True
        key = (want.ref.namespace, want.ref.name)
        if key in self.contested:
            return False
        if key in self.taken:
            self.contested.add(key)
            _log.warning("status: Ingress %s/%s got kroute's addresses back from another writer "
                         "after kroute took them (it does not serve it): left as it is",
                         *key)  # fmt: skip
            return False
        return True

    def wrote(self, want: Desired) -> None:
        if want.ref.kind == "Ingress" and want.status is None:
            self.taken.add((want.ref.namespace, want.ref.name))

    def gateways(
        self, served: dict[tuple[str, str], StatusUpdate], objects: Iterable[Obj]
    ) -> list[tuple[Desired, StatusUpdate]]:
        """The Gateways kroute served in the last round and no longer does (their class
        changed, or its controller), each with the update that takes kroute's parts away
        (its conditions, listeners and addresses), if the status is still what kroute made
        of it: once another controller wrote there, it is that controller's. `served`: this
        round's Gateways, with the status each has or is given now."""
        gone = self.last.keys() - served.keys()
        out = []
        for obj in objects:
            meta = obj.get("metadata")
            if obj.get("kind") != "Gateway" or not isinstance(meta, dict):
                continue
            key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
            if key not in gone or obj.get("status") != dict(self.last[key].status):
                continue
            version = meta.get("resourceVersion")
            update = attrs.evolve(self.last[key], status=_without_kroute(obj["status"]),
                                  changed=True, resource_version=str(version))  # fmt: skip
            out.append((Desired(obj, ObjectRef("Gateway", *key), None), update))
        self.last = served
        return out


#: A Gateway's conditions as its CRD defaults them: what a Gateway no controller took up says.
UNCLAIMED = [
    {"type": kind, "status": "Unknown", "reason": "Pending", "message": "Waiting for controller",
     "lastTransitionTime": "1970-01-01T00:00:00Z"} for kind in ("Accepted", "Programmed")
]  # fmt: skip


def _without_kroute(status: Any) -> dict[str, Any]:
    """A Gateway's status without what kroute wrote there: its `Accepted` and `Programmed`
    conditions back to the CRD's defaults (Pending: waiting for a controller), the listeners'
    entries and the addresses gone; conditions of other types stay."""
    out = dict(status) if isinstance(status, dict) else {}
    out.pop("listeners", None)
    out.pop("addresses", None)
    conditions = out.get("conditions")
    others = [c for c in conditions if isinstance(c, dict) and c.get("type") not in (
        "Accepted", "Programmed")] if isinstance(conditions, list) else []  # fmt: skip
    out["conditions"] = [*UNCLAIMED, *others]
    return out


class _Pending:
    """kroute's own writes whose watch events have not arrived yet: per object, the
    resourceVersion the store had when it was written and the API server's answer. While the
    store still has that version, the answer stands in for it; once the store has moved on,
    the entry goes."""

    def __init__(self) -> None:
        self._writes: dict[_Key, tuple[str | None, Obj]] = {}

    def wrote(self, kind: str, stored_version: str | None, answer: Obj) -> None:
        answer = {**answer, "kind": kind, "apiVersion": WRITTEN[kind].api_version}
        self._writes[(kind, *key_of(answer))] = (stored_version, answer)

    def overlay(self, objects: Iterable[Obj]) -> list[Obj]:
        out, seen = [], set()
        for obj in objects:
            key = (str(obj.get("kind")), *key_of(obj))
            found = self._writes.get(key)
            if found is not None:
                seen.add(key)
                meta = obj.get("metadata")
                version = meta.get("resourceVersion") if isinstance(meta, dict) else None
                if version == found[0]:
                    obj = found[1]
                else:
                    seen.discard(key)  # the store caught up (or moved on)
            out.append(obj)
        self._writes = {k: v for k, v in self._writes.items() if k in seen}
        return out


def _body(kind: kinds.Kind, update: StatusUpdate) -> dict[str, Any]:
    """What a status update sends: the object's identity at the version read, and the status
    (the API server takes nothing else from a write to /status)."""
    meta = {"name": update.name, "resourceVersion": update.resource_version}
    if kind.namespaced:
        meta["namespace"] = update.namespace
    return {"apiVersion": kind.api_version, "kind": kind.kind, "metadata": meta,
            "status": dict(update.status)}  # fmt: skip


def _where(update: StatusUpdate) -> str:
    return f"{update.namespace}/{update.name}" if update.namespace else update.name

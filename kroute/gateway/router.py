"""Router: sources -> route table and pools -> routing decisions and forwarding.

What it keeps current, and how (each change costs what it touches):
- the route table is rebuilt from every routing object (Ingress, IngressClass, Gateway,
  GatewayClass, HTTPRoute, ReferenceGrant, Namespace, IngressRoute) when one of them changes,
  and swapped in whole: readers take no lock. Objects that did not change are not compiled
  again (`CompileCache`): a change costs one object's compile and the table's re-indexing;
- a pool per backend (namespace, Service, port) that some route names, fed by that Service's
  EndpointSlices one slice at a time (`ServiceEndpoints` deltas). Pools outlive table rebuilds,
  so health, in-flight counts and balancer state survive configuration changes;
- a new EndpointSlice is in the pool before the source's next event is read; a routing object
  change marks the table stale, and the next reader (a routing decision, the admin API) or
  `run()`'s rebuild task, one loop turn later, rebuilds it: a burst of events costs one
  rebuild, and no decision ever sees an outdated table (Traefik throttles to one rebuild every
  2 s).

Each entry point (`kroute.rules.entrypoints`: `web` and `websecure` unless told otherwise)
has its own table, the routes attached to it, made from the same compile when first asked for;
a front names the entry point it serves, or takes the Router's first one of its kind (plain or
TLS).

`route(head)` decides without I/O: the route, the backend (by weight), the endpoint (by the
pool's balancer and health), or the status that answers instead: 404 (no route), 500 (the
chosen backend reference is unusable), 503 (a route whose Service has no usable endpoint).
`forward(head, request)` sends through the transport with safe retries on other endpoints,
reporting every attempt to the pool's passive health. `route_service` and `forward_service`
do the same for a Service port named directly (client-side use, no route involved): its pool
is kept from then on.

`run()` is the I/O shell: it runs the sources, the active health probes of every pool and the
workers that send RequestMirror copies (`mirror`, `kroute.gateway.mirror`), each to an endpoint
of the mirror backend's pool, kept like any other.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import anyio
import attrs

from kroute.errors import (
    Answered,
    InvalidBackend,
    InvalidObject,
    KrouteError,
    NoHealthyEndpoint,
    NoRoute,
    Redirected,
    UpstreamError,
    UpstreamTimeout,
)
from kroute.gateway.mirror import Mirrors, MirrorStatistics
from kroute.objects import BackendRef, FieldError, ObjectRef
from kroute.pipeline.filters import Mirror, MirrorCopy
from kroute.pipeline.registry import NO_FILTERS, Filters
from kroute.pipeline.steps import Chain, UpstreamRequest, run_request_async, run_response
from kroute.pool.balance import Balancer, HashOn, RoundRobin, WeightedSplit, cookie_value
from kroute.pool.endpoints import ServiceEndpoints
from kroute.pool.health import HealthConfig, Outcome, health_from_annotations
from kroute.pool.pool import Pick, Pool, PoolStatistics, sticky_value
from kroute.pool.prober import ActiveProber
from kroute.rules.compile import CompileCache, CompileResult, compile_objects
from kroute.rules.entrypoints import DEFAULT_ENTRY_POINTS, EntryPoint, check_entry_points
from kroute.rules.memo import RouteMemo
from kroute.rules.policy import RoutePolicy
from kroute.rules.request import RequestHead
from kroute.rules.route import Route
from kroute.rules.table import RouteTable
from kroute.transport.base import ForwardRequest, ForwardResponse, Target, Transport
from kroute.transport.retry import send_with_retries
from kroute.transport.retry_policy import RetryPolicy
from kroute.watch import kinds
from kroute.watch.sources import Source
from kroute.watch.store import Change

ROUTING_KINDS = frozenset({
    kinds.INGRESS, kinds.INGRESS_CLASS, kinds.GATEWAY, kinds.GATEWAY_CLASS, kinds.HTTP_ROUTE,
    kinds.REFERENCE_GRANT, kinds.NAMESPACE, kinds.INGRESS_ROUTE, kinds.MIDDLEWARE,
})  # fmt: skip

_log = logging.getLogger(__name__)

BackendKey = tuple[str, str, int | str]
#: How many made decisions the Router keeps for reuse (see `Router._decided`).
DECISIONS_KEPT = 10_000


@attrs.frozen
class Decision:
    """Where one request goes, or the status that answers it instead."""

    status: int
    route: Route | None = None
    backend: BackendRef | None = None
    pick: Pick | None = None
    reason: str = ""
    location: str | None = None  # for redirects (301, 302, 308)
    #: The request's sticky cookie ("" when it had none), when the Router sets sticky cookies.
    cookie: str | None = None
    #: The pool `pick` is from: a front that forwards itself reports each attempt to it.
    pool: Pool | None = attrs.field(default=None, eq=False, repr=False)
    #: The steps the request goes through (the route's, then the backend's), None for none:
    #: what fronts test before running `kroute.pipeline` on the request.
    chain: Chain | None = attrs.field(init=False, eq=False, repr=False)

    @chain.default
    def _chain(self) -> Chain | None:
        if self.route is None:
            return None
        chain = self.route.chain_for(self.backend)
        return chain if chain.steps else None


class Observer(Protocol):
    """Told of every forwarded request and every table rebuild (metrics, logs)."""

    def forwarded(self, decision: Decision, status: int, seconds: float) -> None:
        """`status` is what the client is answered (an error's `status_hint` on failure)."""

    def rebuilt(self, seconds: float) -> None: ...


@attrs.frozen
class RouterStatistics:
    ready: bool
    routes: int
    invalid_objects: int
    rebuilds: int
    last_rebuild_seconds: float
    pools: tuple[PoolStatistics, ...]
    mirrors: MirrorStatistics


class _Backend:
    """One Service port: its endpoints as the slices say, and the pool that balances them."""

    def __init__(self, key: BackendKey, pool: Pool, *, allow_external_name: bool) -> None:
        namespace, name, port = key
        self.endpoints = ServiceEndpoints(
            ObjectRef("Service", namespace, name), port, allow_external_name=allow_external_name
        )
        self.pool = pool


class Router:
    """Routing decisions and forwarding over sources kept current (see the module docstring)."""

    def __init__(
        self,
        sources: Sequence[Source],
        *,
        transport: Transport | None = None,
        ingress_class: str = "kroute",
        gateway_class: str = "kroute",
        health: HealthConfig = HealthConfig(),
        balancer: Callable[[], Balancer] = RoundRobin,
        allow_external_name: bool = False,
        retry: RetryPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        prober: ActiveProber | None = None,
        hash_on: HashOn | None = None,
        sticky_cookie: str | None = None,
        filters: Filters = NO_FILTERS,
        entry_points: Sequence[EntryPoint] = DEFAULT_ENTRY_POINTS,
    ) -> None:
        self.sources = list(sources)
        #: Where the gateway serves; each has its own table (see the module docstring).
        self.entry_points = check_entry_points(entry_points)
        #: The application's own steps, which routes name (ExtensionRef, `kroute.pipeline`).
        self.filters = filters
        self.transport = transport
        self.ingress_class = ingress_class
        self.gateway_class = gateway_class
        self.health = health
        self.balancer = balancer
        self.allow_external_name = allow_external_name
        #: Whether a failed attempt goes to another endpoint, for every front (FastGateway's
        #: exchanges and `forward` alike), and the retry budget they share.
        self.retry = retry or RetryPolicy()
        self.clock = clock
        self.rng = rng or random.Random()
        self.prober = prober or ActiveProber(rng=self.rng)
        #: Endpoint affinity: the request key a hashing balancer (RingHash) hashes, and the
        #: name of the cookie that brings a client back to the endpoint that answered it.
        self.hash_on = hash_on
        self.sticky_cookie = sticky_cookie
        self._affinity = hash_on is not None or sticky_cookie is not None
        self.observers: list[Observer] = []
        #: RequestMirror copies: the queue and its workers (replace before `run` to resize).
        self.mirrors = Mirrors()
        self._result = CompileResult(RouteTable())
        #: Per (entry point name or None, TLS): its table and the memo of its answers by raw
        #: (method, Host, target) for route_target. Tables are dropped at each rebuild.
        self._serving: dict[tuple[str | None, bool], tuple[RouteTable, RouteMemo]] = {}
        self._memos: dict[str, RouteMemo] = {}
        self._errors: tuple[InvalidObject, ...] = ()
        self._notes: tuple[str, ...] = ()
        self._refused: tuple[InvalidObject, ...] = ()
        #: A routing object changed since the last rebuild; the next reader rebuilds.
        self._stale = False
        self._wake: anyio.Event | None = None
        self._backends: dict[BackendKey, _Backend] = {}
        #: The backends of each Service (one per port a route names): what an event updates.
        self._by_service: dict[tuple[str, str], list[_Backend]] = {}
        self._splits: dict[int, WeightedSplit] = {}
        #: Decisions to send to an endpoint, by (route, backend, pick) identity: the same value
        #: every time, made once rather than per request. An entry keeps its three alive, so
        #: their ids stay theirs; cleared at each rebuild and when it grows past DECISIONS_KEPT.
        self._decided: dict[tuple[int, int, int], Decision] = {}
        #: Routes (by identity) whose one backend has a pool, with that backend: what
        #: `route_target` needs to pick without the general path. Entries keep their route
        #: alive (its id stays its); cleared at each rebuild.
        self._direct: dict[int, tuple[Route, BackendRef, _Backend]] = {}
        #: The RetryPolicy of each route policy met (`retry_for`); cleared at each rebuild.
        self._retries: dict[RoutePolicy, RetryPolicy] = {}
        #: Backends asked for by name (route_service): kept whatever the routes say.
        self._pinned: set[BackendKey] = set()
        self._compiled = CompileCache()  # objects unchanged since the last rebuild: not recompiled
        self._published = False
        self._rebuilds = 0
        self._rebuild_seconds = 0.0
        for source in self.sources:
            source.subscribe(self._changed)
        self.rebuild()

    async def run(self) -> None:
        """Run the sources and the active health probes until cancelled; rebuild the table
        soon after routing objects change (a burst of events: one rebuild)."""
        async with anyio.create_task_group() as group:
            for source in self.sources:
                group.start_soon(source.run)
            group.start_soon(self.prober.run)
            group.start_soon(self.mirrors.run, self._send_mirror, lambda: self.transport)
            while True:
                self._wake = anyio.Event()
                await self._wake.wait()
                await anyio.sleep(0)  # the rest of a burst of events is read first
                self.refresh()

    @property
    def table(self) -> RouteTable:
        """Every route, whichever entry points serve it, as of every change the sources have
        delivered (what the admin API lists); `table_for` is what one entry point serves."""
        self.refresh()
        return self._result.table

    def entry_point(self, name: str | None = None, *, tls: bool = False) -> EntryPoint:
        """The entry point called `name`, or for None the first that terminates TLS (`tls`)
        or not, else the first; ValueError for a name the Router does not have."""
        if name is None:
            return next((e for e in self.entry_points if e.tls == tls), self.entry_points[0])
        for point in self.entry_points:
            if point.name == name:
                return point
        known = ", ".join(e.name for e in self.entry_points)
        raise ValueError(f"no entry point {name!r} (the Router has {known})")

    def table_for(self, name: str | None = None, *, tls: bool = False) -> RouteTable:
        """The routes the entry point `name` serves (None: see `entry_point`)."""
        return self._served(name, tls)[0]

    def _served(self, name: str | None, tls: bool) -> tuple[RouteTable, RouteMemo]:
        self.refresh()
        found = self._serving.get((name, tls))
        if found is None:
            point = self.entry_point(name, tls=tls)
            memo = self._memos.setdefault(point.name, RouteMemo())
            found = self._serving[(name, tls)] = (self._result.table_for(point), memo)
        return found

    @property
    def errors(self) -> tuple[InvalidObject, ...]:
        """The objects rejected by the last compile, each with its field and reason."""
        self.refresh()
        return self._errors

    @property
    def refused(self) -> tuple[InvalidObject, ...]:
        """What routes are configured to do that kroute cannot: those routes answer 500 (fail
        closed), each listed with its object, field and reason."""
        self.refresh()
        return self._refused

    @property
    def notes(self) -> tuple[str, ...]:
        self.refresh()
        return self._notes

    def refresh(self) -> None:
        """Rebuild now if a routing object changed since the last rebuild."""
        if self._stale:
            self.rebuild()

    # -- keeping current ---------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Every source has synced and a table built from them is published."""
        return self._published and all(source.synced for source in self.sources)

    def _objects(self, kind: kinds.Kind) -> Iterable[dict[str, Any]]:
        for source in self.sources:
            store = source.stores.get(kind)
            if store is not None:
                yield from store.snapshot().values()

    def rebuild(self) -> None:
        """Recompile the table from every routing object and bring the pools in line."""
        started = time.perf_counter()
        self._stale = False
        objects = [obj for kind in ROUTING_KINDS for obj in self._objects(kind)]
        result = compile_objects(
            objects, ingress_class=self.ingress_class, gateway_class=self.gateway_class,
            cache=self._compiled, filters=self.filters, entry_points=self.entry_points,
        )  # fmt: skip
        wanted = {
            (b.namespace, b.name, b.port)
            for route in result.table.routes
            for b in (*route.backends, *_mirrored(route))
            if b.error is None and b.port is not None
        } | self._pinned
        self._add_backends(wanted - self._backends.keys())
        for key in self._backends.keys() - wanted:
            self.prober.unwatch(self._backends.pop(key).pool)
        self._by_service = {}
        for key, backend in self._backends.items():
            self._by_service.setdefault(key[:2], []).append(backend)
        self._result = result  # the swap: readers see the old tables or the new ones
        self._serving = {}
        known = {str(error) for error in (*self._errors, *self._refused)}
        for error in result.errors:  # each rejection is logged once, when it appears
            if str(error) not in known:
                _log.warning("not routed: %s", error)
        for error in result.refused:
            if str(error) not in known:
                _log.warning("fails closed: %s", error)
        self._errors, self._notes, self._refused = result.errors, result.notes, result.refused
        self._splits = {}
        self._decided = {}
        self._direct = {}
        self._retries = {}
        self._published = self._published or all(s.synced for s in self.sources)
        self._rebuilds += 1
        self._rebuild_seconds = time.perf_counter() - started
        for observer in self.observers:
            observer.rebuilt(self._rebuild_seconds)

    def _add_backends(self, new: set[BackendKey]) -> None:
        if not new:
            return
        # One pass over the slices for every new backend, not one pass per backend.
        slices: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for slice_obj in self._objects(kinds.ENDPOINT_SLICE):
            try:
                owner = ServiceEndpoints.owner_of(slice_obj)
            except FieldError:
                continue
            if owner is not None:
                slices.setdefault((owner.namespace, owner.name), []).append(slice_obj)
        for key in new:
            self._backends[key] = self._new_backend(key, slices.get(key[:2], []))
            self.prober.watch(self._backends[key].pool)

    def _service(self, namespace: str, name: str) -> dict[str, Any] | None:
        for source in self.sources:
            store = source.stores.get(kinds.SERVICE)
            found = store.get((namespace, name)) if store is not None else None
            if found is not None:
                return found
        return None

    def _new_backend(self, key: BackendKey, slices: Sequence[dict[str, Any]]) -> _Backend:
        namespace, name, port = key
        service = self._service(namespace, name)
        pool = Pool(f"{namespace}/{name}:{port}", balancer=self.balancer(),
                    health=self._health_for(service))  # fmt: skip
        backend = _Backend(key, pool, allow_external_name=self.allow_external_name)
        now = self.clock()
        pool.apply(backend.endpoints.set_service(service), now=now)
        for slice_obj in slices:
            pool.apply(backend.endpoints.apply_slice(slice_obj), now=now)
        return backend

    def _health_for(self, service: dict[str, Any] | None) -> HealthConfig:
        annotations = (service or {}).get("metadata", {}).get("annotations") or {}
        config, _problems = health_from_annotations(annotations, self.health)
        return config

    def _changed(self, kind: kinds.Kind, changes: Sequence[Change]) -> None:
        if kind in ROUTING_KINDS:
            self._stale = True
            if not self._published and all(s.synced for s in self.sources):
                self.rebuild()  # the first table: readiness waits for it
            elif self._wake is not None:
                self._wake.set()
            return
        now = self.clock()
        if kind == kinds.SERVICE:
            for change in changes:
                service = None if change.type == "DELETED" else change.object
                health = self._health_for(service)
                for backend in self._by_service.get(change.key, []):
                    backend.pool.apply(backend.endpoints.set_service(service), now=now)
                    if backend.pool.health != health:
                        # New kroute.dev/* annotations: endpoint health state is kept.
                        self.prober.unwatch(backend.pool)
                        backend.pool.health = health
                        self.prober.watch(backend.pool)
        elif kind == kinds.ENDPOINT_SLICE:
            for change in changes:
                try:
                    owner = ServiceEndpoints.owner_of(change.object)
                except FieldError:
                    continue
                if owner is None:
                    continue
                for backend in self._by_service.get((owner.namespace, owner.name), []):
                    if change.type == "DELETED":
                        delta = backend.endpoints.delete_slice(change.key[1])
                    else:
                        delta = backend.endpoints.apply_slice(change.object)
                    backend.pool.apply(delta, now=now)
        if not self._published and all(s.synced for s in self.sources):
            self.rebuild()

    # -- deciding ----------------------------------------------------------------------

    def pool(self, backend: BackendRef) -> Pool | None:
        """The pool of a backend (None when neither a route nor `route_service` names it)."""
        found = self._backends.get((backend.namespace, backend.name, backend.port))  # type: ignore[arg-type]
        return None if found is None else found.pool

    def _choose(self, route: Route) -> BackendRef | None:
        if len(route.backends) == 1:
            return route.backends[0] if route.backends[0].weight > 0 else None
        split = self._splits.get(id(route))
        if split is None:
            split = self._splits[id(route)] = WeightedSplit([b.weight for b in route.backends])
        index = split.pick(self.rng)
        return None if index is None else route.backends[index]

    def route(
        self,
        head: RequestHead,
        *,
        exclude: Sequence[tuple[str, int]] = (),
        entry_point: str | None = None,
    ) -> Decision:
        """Where `head` goes (no I/O): a route, a backend, an endpoint; or 404, 500, 503; or
        a redirect the route answers with (301, 302, 308, with `location`). Only routes of
        `entry_point` take it (None: the first entry point of the request's scheme)."""
        table = self._served(entry_point, head.scheme == "https")[0]  # (rebuilt if stale)
        return self._decide(table.match(head), head, exclude)

    def route_target(
        self,
        method: str,
        host: str,
        target: str,
        build: Callable[[], RequestHead],
        entry_point: str | None = None,
    ) -> Decision:
        """`route` for a request as it arrived (method, Host header, target) on `entry_point`,
        where `build` makes its `RequestHead`: called only when the answer is not remembered
        (`RouteMemo`). What fronts on the hot path use."""
        if self._affinity:  # the endpoint depends on headers: nothing to remember
            return self.route(build(), entry_point=entry_point)
        table, memo = self._served(entry_point, False)
        route, head = memo.match(table, method, host, target, build)
        direct = self._direct.get(id(route))
        if direct is not None:  # one backend with a pool, no redirect: pick, or say why not
            _, backend, found = direct
            pick = found.pool.pick(now=self.clock(), rng=self.rng)
            if pick is None:
                return self._unavailable(route, backend, found)
            return self._made(route, backend, found.pool, pick)
        if route is not None and route.redirect is not None and head is None:
            head = build()
        return self._decide(route, head, ())

    def _decide(
        self, route: Route | None, head: RequestHead | None, exclude: Sequence[tuple[str, int]]
    ) -> Decision:
        if route is None:
            return Decision(404, reason="no route matches")
        redirect = route.redirect
        if redirect is not None and head is not None and redirect.applies(head.scheme):
            location = redirect.location(scheme=head.scheme, host=head.host, port=head.port,
                                         path=head.path, query=head.query_string)  # fmt: skip
            return Decision(redirect.status, route, reason=f"redirect to {location}",
                            location=location)  # fmt: skip
        backend = self._choose(route)
        if backend is None:
            return Decision(500, route, reason="the route has no backend to send to")
        return self._endpoint(route, backend, exclude, head)

    def route_service(self, namespace: str, name: str, port: int | str) -> Decision:
        """An endpoint of Service `namespace/name` port `port` (number or name), or 503.

        No route is involved (client-side use); the backend's pool is created on first use and
        kept from then on, fed by the Service's EndpointSlices like any other.
        """
        key = (namespace, name, port)
        if key not in self._pinned:
            self._pinned.add(key)
            if key not in self._backends:
                self._add_backends({key})
                self._by_service.setdefault(key[:2], []).append(self._backends[key])
        return self._endpoint(None, BackendRef(namespace, name, port), ())

    def _endpoint(
        self,
        route: Route | None,
        backend: BackendRef,
        exclude: Sequence[tuple[str, int]],
        head: RequestHead | None = None,
    ) -> Decision:
        if backend.error is not None:
            return Decision(500, route, backend, reason=backend.error)
        found = self._backends.get((backend.namespace, backend.name, backend.port))  # type: ignore[arg-type]
        if found is None:
            return Decision(503, route, backend, reason="no pool for the backend")
        hash_key = cookie = None
        if self._affinity and head is not None:
            if self.hash_on is not None:
                client = None if head.client_ip is None else str(head.client_ip)
                hash_key = self.hash_on.key(head.headers, client)
            if self.sticky_cookie is not None:
                cookie = cookie_value(head.headers, self.sticky_cookie) or ""
        pick = found.pool.pick(now=self.clock(), rng=self.rng, exclude=exclude,
                               hash_key=hash_key, sticky=cookie or None)  # fmt: skip
        if pick is None:
            return self._unavailable(route, backend, found)
        if cookie is not None:
            return Decision(200, route, backend, pick, cookie=cookie, pool=found.pool)
        if route is not None and route.redirect is None and len(route.backends) == 1:
            self._direct[id(route)] = (route, backend, found)
        return self._made(route, backend, found.pool, pick)

    @staticmethod
    def _unavailable(route: Route | None, backend: BackendRef, found: _Backend) -> Decision:
        reason = found.endpoints.error or f"{backend} has no usable endpoint"
        return Decision(503, route, backend, reason=reason)

    def _made(self, route: Route | None, backend: BackendRef, pool: Pool, pick: Pick) -> Decision:
        """The decision to send to `pick`, made once per (route, backend, pick)."""
        key = (id(route), id(backend), id(pick))
        decision = self._decided.get(key)
        if decision is None:
            if len(self._decided) >= DECISIONS_KEPT:
                self._decided.clear()  # (endpoints come and go between rebuilds)
            decision = self._decided[key] = Decision(200, route, backend, pick, pool=pool)
        return decision

    def sticky_header(
        self, decision: Decision, key: tuple[str, int] | None = None
    ) -> tuple[bytes, bytes] | None:
        """The Set-Cookie header that brings the client back to the endpoint that answered
        (`key`, else the decision's pick), when sticky cookies are on and the request's cookie
        named another endpoint or none (as Traefik's sticky sessions do). The value is a hash:
        endpoint addresses are not disclosed."""
        if self.sticky_cookie is None or decision.cookie is None:
            return None
        if key is None:
            if decision.pick is None:
                return None
            key = decision.pick.endpoint.key
        value = sticky_value(key)
        if value == decision.cookie:
            return None
        return b"Set-Cookie", f"{self.sticky_cookie}={value}; Path=/; HttpOnly".encode()

    def retry_for(self, route: Route | None) -> RetryPolicy:
        """The retry policy of a route: the Router's, with what the route's own policy
        (HTTPRoute rule `retry`) changes; every route's shares the Router's budget."""
        policy = None if route is None else route.policy
        if policy is None or (policy.retries is None and not policy.codes and not policy.backoff):
            return self.retry
        found = self._retries.get(policy)
        if found is None:
            attempts = self.retry.attempts if policy.retries is None else policy.retries + 1
            found = self._retries[policy] = attrs.evolve(
                self.retry, attempts=attempts, codes=policy.codes, backoff=policy.backoff
            )
        return found

    # -- forwarding --------------------------------------------------------------------

    async def forward(
        self, head: RequestHead, request: ForwardRequest, *, entry_point: str | None = None
    ) -> tuple[Decision, ForwardResponse]:
        """Route `head` (on `entry_point`, as `route`) and send `request` there, retrying
        safely on other endpoints.

        The route's steps run first (`kroute.pipeline`): they may change the request, or
        answer it themselves (Answered: a refusal, a user's check); its response steps edit the
        response's headers.

        Raises a KrouteError whose `status_hint` says how to answer: NoRoute (404),
        InvalidBackend (500), NoHealthyEndpoint (503), UpstreamError (502, 504), Answered.
        """
        decision = self.route(head, entry_point=entry_point)
        chain = decision.chain
        if chain is None:
            return await self._send(decision, request)
        started = time.perf_counter()
        upstream = UpstreamRequest.from_target(
            request.method, request.target, list(request.headers), routed=head.path,
            scheme=head.scheme, client="" if head.client_ip is None else str(head.client_ip),
        )  # fmt: skip
        answer = await run_request_async(chain, upstream)
        if answer is not None:
            self.observe(decision, answer.status, started)
            raise Answered(answer.status, answer.reason, answer.headers, answer.body)
        self.mirror(upstream, body=request.body != b"" or request.upgrade is not None)
        request = attrs.evolve(request, target=upstream.target, headers=upstream.headers)
        decision, response = await self._send(decision, request)
        if chain.response:
            run_response(chain, response.status, response.headers, upstream)
        return decision, response

    def mirror(self, request: UpstreamRequest, *, body: bool) -> None:
        """Queue the copies `request`'s RequestMirror steps made, without waiting (`body`: the
        request has a body, so it is not copied). Every front calls this once the request steps
        have let the request through; `run()` sends the copies."""
        if request.mirrors:
            self.mirrors.offer(request.mirrors, body=body, draw=self.rng.random)

    async def _send_mirror(self, copy: MirrorCopy, transport: Transport) -> None:
        """One copy to one endpoint of its backend's pool, no retry; the response is read and
        discarded, and the attempt reported to the pool's passive health."""
        backend = copy.step.backend
        found = self._backends.get((backend.namespace, backend.name, backend.port))  # type: ignore[arg-type]
        pick = None if found is None else found.pool.pick(now=self.clock(), rng=self.rng)
        if found is None or pick is None:
            raise NoHealthyEndpoint(f"{backend} has no usable endpoint")
        pool, key = found.pool, pick.endpoint.key
        pool.begin(key)
        try:
            target = Target(pick.endpoint.address, pick.endpoint.port)
            response = await transport.send(target, ForwardRequest(
                copy.method, copy.target, list(copy.headers)))  # fmt: skip
            async for _ in response.body:
                pass
        except UpstreamError as exc:
            pool.end(key, outcome_of(exc), now=self.clock())
            raise
        except BaseException:
            pool.abandon(key)
            raise
        outcome = Outcome.HTTP_5XX if response.status >= 500 else Outcome.SUCCESS
        pool.end(key, outcome, now=self.clock())

    async def forward_service(
        self, namespace: str, name: str, port: int | str, request: ForwardRequest
    ) -> tuple[Decision, ForwardResponse]:
        """Send `request` to an endpoint of a Service port, as `forward` does for a route."""
        return await self._send(self.route_service(namespace, name, port), request)

    async def _send(
        self, first: Decision, request: ForwardRequest
    ) -> tuple[Decision, ForwardResponse]:
        if self.transport is None:
            raise RuntimeError("this Router has no transport")
        started = time.perf_counter()
        policy = None if first.route is None else first.route.policy
        try:
            # The route's request timeout (HTTPRoute `timeouts.request`): every try and the
            # backoffs between them, until a response head; 504 when it runs out.
            with anyio.fail_after(None if policy is None else policy.request):
                decision, response = await self._attempts(first, request)
        except TimeoutError:
            self.observe(first, 504, started)
            raise UpstreamTimeout("request") from None
        except KrouteError as exc:
            self.observe(first, exc.status_hint, started)
            raise
        self.observe(decision, response.status, started)
        return decision, response

    def observe(self, decision: Decision, status: int, started: float) -> None:
        """Tell the observers of a request answered with `status`; `started` is its
        `time.perf_counter()` at routing (fronts that forward themselves call this)."""
        if self.observers:
            seconds = time.perf_counter() - started
            for observer in self.observers:
                observer.forwarded(decision, status, seconds)

    async def _attempts(
        self, first: Decision, request: ForwardRequest
    ) -> tuple[Decision, ForwardResponse]:
        assert self.transport is not None
        if first.status != 200 or first.backend is None or first.pick is None:
            raise status_error(first)
        backend = self._backends[(first.backend.namespace, first.backend.name, first.backend.port)]  # type: ignore[index]
        pool = backend.pool
        picks = {first.pick.endpoint.key: first.pick}

        open_keys: set[tuple[str, int]] = set()  # begun, not yet ended

        def pick(tried: Sequence[Target]) -> Target | None:
            if not tried:
                chosen: Pick | None = first.pick
            else:
                chosen = pool.pick(now=self.clock(), rng=self.rng,
                                   exclude=[(t.host, t.port) for t in tried])  # fmt: skip
            if chosen is None:
                return None
            picks[chosen.endpoint.key] = chosen
            pool.begin(chosen.endpoint.key)
            open_keys.add(chosen.endpoint.key)
            return Target(chosen.endpoint.address, chosen.endpoint.port)

        def report(target: Target, outcome: UpstreamError | int) -> None:
            key = (target.host, target.port)
            open_keys.discard(key)
            pool.end(key, outcome_of(outcome), now=self.clock())

        policy = first.route.policy if first.route is not None else None
        try:
            response, target = await send_with_retries(
                self.transport, request, pick, policy=self.retry_for(first.route),
                now=self.clock, report=report,
                attempt_timeout=None if policy is None else policy.backend_request,
            )  # fmt: skip
        except BaseException:
            for key in open_keys:  # cancelled (the client went away, a timeout): no verdict
                pool.abandon(key)
            raise
        return attrs.evolve(first, pick=picks[(target.host, target.port)]), response

    def statistics(self) -> RouterStatistics:
        now = self.clock()
        return RouterStatistics(
            ready=self.ready,
            routes=len(self.table),
            invalid_objects=len(self.errors),
            rebuilds=self._rebuilds,
            last_rebuild_seconds=self._rebuild_seconds,
            pools=tuple(b.pool.statistics(now=now) for b in self._backends.values()),
            mirrors=self.mirrors.statistics(),
        )


def _mirrored(route: Route) -> Iterable[BackendRef]:
    """The backends a route's RequestMirror steps copy requests to (their pools are kept)."""
    for chain in (route.chain, *route.backend_chains):
        for step in chain.steps:
            if isinstance(step, Mirror):
                yield step.backend


def outcome_of(error: UpstreamError | int) -> Outcome:
    """What an attempt's failure, or its response status, tells passive health."""
    if isinstance(error, int):
        return Outcome.HTTP_5XX if error >= 500 else Outcome.SUCCESS
    if isinstance(error, UpstreamTimeout):
        return Outcome.TIMEOUT
    return Outcome.CONNECT_FAILURE if not error.request_sent else Outcome.RESET


def status_error(decision: Decision) -> KrouteError:
    """The error that answers a decision that is not 200 (404, 500, 503, or a redirect)."""
    if decision.location is not None:
        return Redirected(decision.location, decision.status)
    if decision.status == 404:
        return NoRoute(decision.reason)
    if decision.status == 500:
        return InvalidBackend(decision.reason)
    return NoHealthyEndpoint(decision.reason)

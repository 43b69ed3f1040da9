"""Router: sources -> route table and pools -> routing decisions and forwarding.

What it keeps current, and how (each change costs what it touches):
- the route table is rebuilt from every routing object (Ingress, IngressClass, Gateway,
  GatewayClass, HTTPRoute, ReferenceGrant, Namespace, IngressRoute) when one of them changes,
  and swapped in whole: readers take no lock. Objects that did not change are not compiled
  again (`CompileCache`): a change costs one object's compile and the table's re-indexing;
- a pool per backend that some route names, fed by its Service's EndpointSlices one slice at a
  time (`backends`): pools outlive table rebuilds;
- a new EndpointSlice is in the pool before the source's next event is read; a routing object
  change marks the table stale, and the next reader (a routing decision, the admin API) or
  `run()`'s rebuild task, one loop turn later, rebuilds it: a burst of events costs one
  rebuild, and no decision ever sees an outdated table (Traefik throttles to one rebuild every
  2 s).

Each entry point (`kroute.rules.entrypoints`: `web` and `websecure` unless told otherwise)
has its own table, the routes attached to it, made from the same compile when first asked for;
a front names the entry point it serves, or takes the Router's first one of its kind (plain or
TLS).

`route(head)` decides without I/O (`decisions`): the route, the backend, the endpoint, or the
status that answers instead. `forward(head, request)` runs the route's steps and sends through
the transport with safe retries on other endpoints (`forwarding`). `route_service` and
`forward_service` do the same for a Service port named directly (client-side use, no route
involved): its pool is kept from then on.

`run()` is the I/O shell: it runs the sources, the active health probes of every pool and the
workers that send RequestMirror copies (`mirror`, `kroute.gateway.mirror`), each to an endpoint
of the mirror backend's pool, kept like any other.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import anyio
import attrs

from kroute.errors import Answered, InvalidObject, KrouteError
from kroute.gateway.events import RequestEvent, RequestRecord
from kroute.gateway.fetch import Fetches
from kroute.gateway.mirror import Mirrors, MirrorStatistics
from kroute.gateway.router.backends import Backends
from kroute.gateway.router.decisions import Affinity, Decider, Decision, status_error
from kroute.gateway.router.forwarding import (
    limited,
    outcome_of,
    send,
    send_copy,
    until_end,
    with_body,
)
from kroute.gateway.router.observers import EventSink, Facts, Make, Observer, Observers
from kroute.gateway.workers import Workers
from kroute.objects import BackendRef
from kroute.pipeline.body import Replace, RequestTooLarge, run_body
from kroute.pipeline.fetch import Call, FetchFailed, Reply
from kroute.pipeline.filters import MirrorCopy
from kroute.pipeline.registry import NO_FILTERS, Filters
from kroute.pipeline.steps import (
    UpstreamRequest,
    run_end,
    run_outcome,
    run_request_async,
    run_response,
)
from kroute.pool.balance import Balancer, HashOn, RoundRobin
from kroute.pool.health import HealthConfig
from kroute.pool.pool import Pool, PoolStatistics
from kroute.pool.prober import ActiveProber
from kroute.rules.compile import CompileCache, CompileResult, compile_objects
from kroute.rules.entrypoints import DEFAULT_ENTRY_POINTS, EntryPoint, check_entry_points
from kroute.rules.memo import RouteMemo
from kroute.rules.middlewares import Usage
from kroute.rules.policy import RoutePolicy
from kroute.rules.request import RequestHead
from kroute.rules.route import Route
from kroute.rules.table import RouteTable
from kroute.transport.base import ForwardRequest, ForwardResponse, Headers, Transport
from kroute.transport.http1 import bodiless
from kroute.transport.proxy import REASONS
from kroute.transport.retry_policy import RetryPolicy
from kroute.watch import kinds
from kroute.watch.sources import Source, stored
from kroute.watch.store import Change, status_only

__all__ = [
    "ROUTING_KINDS", "Decision", "EventSink", "Observer", "Observers", "Router",
    "RouterStatistics", "outcome_of", "status_error",
]  # fmt: skip

ROUTING_KINDS = frozenset({
    kinds.INGRESS, kinds.INGRESS_CLASS, kinds.GATEWAY, kinds.GATEWAY_CLASS, kinds.HTTP_ROUTE,
    kinds.REFERENCE_GRANT, kinds.NAMESPACE, kinds.INGRESS_ROUTE, kinds.MIDDLEWARE,
    kinds.TRAEFIK_SERVICE, kinds.SECRET,  # (basicAuth Middlewares read their users from Secrets)
})  # fmt: skip

if TYPE_CHECKING:
    from kroute.acme.http01 import Http01Challenges
    from kroute.gateway.tracing import Propagation, Tracing

_log = logging.getLogger(__name__)


@attrs.frozen
class RouterStatistics:
    ready: bool
    routes: int
    invalid_objects: int
    rebuilds: int
    last_rebuild_seconds: float
    pools: tuple[PoolStatistics, ...]
    mirrors: MirrorStatistics


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
        tracing: Tracing | None = None,
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
        #: Whether a response may set sticky cookies: the gateway's, or a route's (Traefik's
        #: `sticky.cookie`, `Route.sticky`), as of the last rebuild. What fronts test before
        #: asking `sticky_headers`.
        self.sets_cookies = sticky_cookie is not None
        #: Told of requests and rebuilds (`observers`): Metrics, access logs, users' sinks.
        self.observers = Observers()
        #: OpenTelemetry spans and W3C trace context for every front (`kroute.gateway.tracing`);
        #: None: no tracing, nothing imported or paid.
        self.tracing = tracing
        #: ACME HTTP-01 challenges answered before any routing, on every front
        #: (`kroute.acme`); None: none.
        self.challenges: Http01Challenges | None = None
        #: RequestMirror copies: the queue and its workers (replace before `run` to resize).
        self.mirrors = Mirrors()
        self._fetches = Fetches()
        #: Worker threads for steps' blocking work (`UpstreamRequest.offload`: bcrypt), bounded.
        self.workers = Workers()
        self._backends = Backends(
            self.sources, balancer=balancer, health=health,
            allow_external_name=allow_external_name, clock=clock, prober=self.prober,
        )  # fmt: skip
        self._decider = Decider(self._backends, Affinity(hash_on, sticky_cookie),
                                clock=clock, rng=self.rng)  # fmt: skip
        self._result = CompileResult(RouteTable())
        #: Per (entry point name or None, TLS): its table and the memo of its answers by raw
        #: (method, Host, target) for route_target. Tables are dropped at each rebuild.
        self._serving: dict[tuple[str | None, bool], tuple[RouteTable, RouteMemo]] = {}
        self._memos: dict[str, RouteMemo] = {}
        #: A routing object changed since the last rebuild; the next reader rebuilds.
        self._stale = False
        self._wake: anyio.Event | None = None
        #: The RetryPolicy of each route policy met (`retry_for`); cleared at each rebuild.
        self._retries: dict[RoutePolicy, RetryPolicy] = {}
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
        try:
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
        finally:
            await self.aclose()

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
        if self._stale:  # (`refresh`, written out: every request comes through here)
            self.rebuild()
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
        return self._result.errors

    @property
    def refused(self) -> tuple[InvalidObject, ...]:
        """What routes are configured to do that kroute cannot: those routes answer 500 (fail
        closed), each listed with its object, field and reason."""
        self.refresh()
        return self._result.refused

    @property
    def notes(self) -> tuple[str, ...]:
        self.refresh()
        return self._result.notes

    @property
    def compiled(self) -> CompileResult:
        """The last compile's whole result, as of every change delivered: what status
        write-back reads (each HTTPRoute parentRef's outcome, the errors, what fails closed)."""
        self.refresh()
        return self._result

    @property
    def middlewares(self) -> tuple[Usage, ...]:
        """Each Traefik Middleware of the last compile: types, routes using it, error."""
        self.refresh()
        return self._result.middlewares

    def refresh(self) -> None:
        """Rebuild now if a routing object changed since the last rebuild."""
        if self._stale:
            self.rebuild()

    # -- keeping current ---------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Every source has synced and a table built from them is published."""
        return self._published and all(source.synced for source in self.sources)

    def rebuild(self) -> None:
        """Recompile the table from every routing object and bring the pools in line."""
        started = time.perf_counter()
        self._stale = False
        objects = [obj for kind in ROUTING_KINDS for obj in stored(self.sources, kind)]
        result = compile_objects(
            objects, ingress_class=self.ingress_class, gateway_class=self.gateway_class,
            cache=self._compiled, filters=self.filters, entry_points=self.entry_points,
        )  # fmt: skip
        self._backends.keep(result.table.routes)
        known = {str(error) for error in (*self._result.errors, *self._result.refused)}
        self._result = result  # the swap: readers see the old tables or the new ones
        self._serving = {}
        for error in result.errors:  # each rejection is logged once, when it appears
            if str(error) not in known:
                _log.warning("not routed: %s", error)
        for error in result.refused:
            if str(error) not in known:
                _log.warning("fails closed: %s", error)
        self._decider.forget()
        self._options_changed()
        self._retries = {}
        self._published = self._published or all(s.synced for s in self.sources)
        self._rebuilds += 1
        self._rebuild_seconds = time.perf_counter() - started
        for observer in self.observers.rebuilding:
            observer.rebuilt(self._rebuild_seconds)

    def _changed(self, kind: kinds.Kind, changes: Sequence[Change]) -> None:
        if kind in ROUTING_KINDS:
            if self._published and all(status_only(change) for change in changes):
                return  # (status written: nothing routing reads changed)
            self._stale = True
            if not self._published and all(s.synced for s in self.sources):
                self.rebuild()  # the first table: readiness waits for it
            elif self._wake is not None:
                self._wake.set()
            return
        if self._backends.changed(kind, changes):
            self._decider.forget()  # (kept decisions carry the Services' options)
            self._options_changed()
        if not self._published and all(s.synced for s in self.sources):
            self.rebuild()

    def _options_changed(self) -> None:
        """Whether responses may set cookies and decisions read the request's head, after the
        routes or a Service's Traefik annotations changed."""
        service_sticky = self._decider.service_sticky = self._backends.sticky()
        routes = self._result.table.routes
        self.sets_cookies = (self.sticky_cookie is not None or service_sticky
                             or any(route.sticky for route in routes))  # fmt: skip

    # -- deciding (`decisions`) --------------------------------------------------------

    def pool(self, backend: BackendRef) -> Pool | None:
        """The pool of a backend (None when neither a route nor `route_service` names it)."""
        found = self._backends.get(backend)
        return None if found is None else found.pool

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
        if self.challenges is not None:  # ACME HTTP-01, before any route (`kroute.acme`)
            answered = self.challenges.answer(head.method, head.path)
            if answered is not None:
                raise answered
        table = self._served(entry_point, head.scheme == "https")[0]  # (rebuilt if stale)
        return self._decider.decide(table.match(head), head, exclude)

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
        if self.challenges is not None:  # ACME HTTP-01, before any route (`kroute.acme`)
            answered = self.challenges.answer(method, target)
            if answered is not None:
                raise answered
        decider = self._decider
        if decider.per_request:  # the endpoint depends on headers: nothing to remember
            return self.route(build(), entry_point=entry_point)
        if self._stale:  # (`_served`, written out for the hot path)
            self.rebuild()
        found = self._serving.get((entry_point, False))
        table, memo = self._served(entry_point, False) if found is None else found
        route, head = memo.match(table, method, host, target, build)
        return decider.decide_target(route, head, build)

    def route_service(self, namespace: str, name: str, port: int | str) -> Decision:
        """An endpoint of Service `namespace/name` port `port` (number or name), or 503.

        No route is involved (client-side use); the backend's pool is created on first use and
        kept from then on, fed by the Service's EndpointSlices like any other.
        """
        self._backends.pin((namespace, name, port))
        return self._decider.endpoint(None, BackendRef(namespace, name, port), ())

    def sticky_header(
        self, decision: Decision, key: tuple[str, int] | None = None
    ) -> tuple[bytes, bytes] | None:
        """The Set-Cookie header for the endpoint that answered (`key`, else the decision's
        pick), when sticky cookies are on (`Affinity.set_cookie`)."""
        return self._decider.affinity.set_cookie(decision, key)

    def sticky_headers(
        self, decision: Decision, key: tuple[str, int] | None = None
    ) -> list[tuple[bytes, bytes]]:
        """The Set-Cookie fields of the response from endpoint `key` (else the decision's
        pick): the gateway's sticky cookie (`sticky_header`) and the route's Traefik sticky
        cookies (`Decision.sticky`)."""
        out = []
        cookie = self._decider.affinity.set_cookie(decision, key)
        if cookie is not None:
            out.append(cookie)
        if decision.sticky is not None:
            if key is None and decision.pick is not None:
                key = decision.pick.endpoint.key
            out += decision.sticky.headers(key)
        return out

    def retry_for(self, route: Route | None) -> RetryPolicy:
        """The retry policy of a route: the Router's, with what the route's own policy
        (HTTPRoute rule `retry`, or a retry Middleware) changes; every route's shares the
        Router's budget."""
        policy = None if route is None else route.policy
        if policy is None or (policy.retries is None and not policy.codes and not policy.backoff):
            return self.retry
        found = self._retries.get(policy)
        if found is None:
            attempts = self.retry.attempts if policy.retries is None else policy.retries + 1
            found = self._retries[policy] = attrs.evolve(
                self.retry,
                attempts=attempts,
                codes=policy.codes,
                backoff=policy.backoff,
                multiplier=policy.multiplier,
            )
        return found

    # -- forwarding (`forwarding`) -----------------------------------------------------

    async def forward(
        self,
        head: RequestHead,
        request: ForwardRequest,
        *,
        entry_point: str | None = None,
        record: RequestRecord | None = None,
    ) -> tuple[Decision, ForwardResponse]:
        """Route `head` (on `entry_point`, as `route`) and send `request` there, retrying
        safely on other endpoints.

        The route's steps run first (`kroute.pipeline`): they may change the request, or
        answer it themselves (Answered: a refusal, a user's check); its response steps edit the
        response's headers.

        Raises a KrouteError whose `status_hint` says how to answer: NoRoute (404),
        InvalidBackend (500), NoHealthyEndpoint (503), UpstreamError (502, 504), Answered.
        `record` (a front's, when observers want events or the Router traces) learns the
        decision and attempts; the request passes its trace's context on (`kroute.gateway.
        tracing`).
        """
        decision = self.route(head, entry_point=entry_point)
        trace = None
        if record is not None:
            record.decision = decision
            trace = record.trace
            if trace is not None:
                request = attrs.evolve(request, headers=trace.propagate(request.headers))
        chain = decision.chain
        if chain is None:
            return await self._send(decision, request, record)
        started = time.perf_counter()
        upstream = UpstreamRequest.from_target(
            request.method, request.target, list(request.headers), routed=head.path,
            scheme=head.scheme, client="" if head.client_ip is None else str(head.client_ip),
            clock=self.clock, offload=self.workers.run,
        )  # fmt: skip
        try:
            fetch = self.fetch if trace is None else trace.fetcher(self.fetch)
            answer = await run_request_async(chain, upstream, fetch)
            if answer is not None:
                self.observe(decision, answer.status, started)
                if chain.outcome:
                    run_outcome(chain, upstream, answer.status, time.perf_counter() - started)
                raise Answered(answer.status, answer.reason, answer.headers, answer.body)
            waiting = self.mirror(upstream, body=request.body != b"",
                                  upgrade=request.upgrade is not None, trace=trace)  # fmt: skip
            request = attrs.evolve(request, target=upstream.target, headers=upstream.headers)
            if waiting:  # (copies of the body: kept as it goes through, `kroute.gateway.mirror`)
                if isinstance(request.body, bytes):
                    self.mirrors.completed(waiting, request.body, trace)
                else:
                    tee = self.mirrors.tee(waiting, trace)
                    request = attrs.evolve(request, body=tee.passing(request.body))
            limit = chain.request_limit
            if limit is not None and not isinstance(request.body, bytes):
                if request.content_length is not None and request.content_length > limit:
                    raise RequestTooLarge(limit)  # (Content-Length: refused before sending)
                request = attrs.evolve(request, body=limited(request.body, limit))
            try:
                decision, response = await self._send(decision, request, record)
            except KrouteError as exc:
                if chain.outcome:
                    run_outcome(chain, upstream, exc.status_hint, time.perf_counter() - started)
                raise
            failed = None
            if chain.response:
                failed = run_response(chain, response.status, response.headers, upstream)
                if failed is not None:  # (fails closed: the response is not sent unedited)
                    await response.aclose()
            if chain.outcome:
                status = response.status if failed is None else failed.status
                run_outcome(chain, upstream, status, time.perf_counter() - started)
            if failed is not None:
                raise Answered(failed.status, failed.reason, failed.headers, failed.body)
            if (
                chain.body
                and response.status != 101
                and not bodiless(request.method, response.status)
            ):
                made = run_body(chain, response.status, response.headers, upstream)
                if made is not None:
                    response = await with_body(response, made, self.error_page)
            if chain.ends:
                response = until_end(response, lambda: run_end(chain, upstream))
        except BaseException:
            run_end(chain, upstream)  # (answered, failed or cancelled: the request is over)
            raise
        return decision, response

    async def fetch(self, call: Call) -> Reply:
        """An HTTP call a step makes (forwardAuth's), through the Router's transport, or one
        the Router keeps for them when it has none (`kroute.gateway.fetch.Fetches`); every
        front's steps call out through this."""
        return await self._fetches.fetch(self.transport, call)

    async def aclose(self) -> None:
        """Close what the Router made for itself (the transport of its steps' calls, when it
        has none of its own; `run` does this when it ends). The Router's `transport` is the
        caller's to close."""
        await self._fetches.aclose()

    async def error_page(self, page: Replace) -> tuple[Headers, bytes]:
        """The headers and body of the error page `page` asks for (the errors Middleware),
        from an endpoint of its backend through `fetch`; every front answers with it. No page
        (no endpoint, a failed call): the status's reason phrase, as Traefik answers then."""
        backend = page.backend
        found = self._decider.endpoint(None, backend, ())  # (its pool: `Step.backends`)
        pick = found.pick
        try:
            if pick is None:  # (the Service missing, or none of its endpoints usable)
                raise FetchFailed(found.reason)
            call = Call(pick.endpoint.address, pick.endpoint.port, False, "GET", page.target,
                        page.headers, page.timeout, page.limit)  # fmt: skip
            reply = await self.fetch(call)
        except FetchFailed as exc:
            _log.warning("%s: no error page from %s: %s; the status's reason phrase answers",
                         page.step, backend, exc)  # fmt: skip
            text = REASONS.get(page.status, "Error").encode()
            return [(b"Content-Type", b"text/plain; charset=utf-8")], text
        drop = (b"content-length", b"transfer-encoding")
        return [(n, v) for n, v in reply.headers if n.lower() not in drop], reply.body

    def mirror(
        self, request: UpstreamRequest, *, body: bool, upgrade: bool = False,
        trace: Propagation | None = None
    ) -> list[MirrorCopy]:  # fmt: skip
        """Queue the copies `request`'s RequestMirror steps made, without waiting; those that
        copy its `body` are returned, for the front to pass the body through
        `self.mirrors.tee(...)` as it streams (`kroute.gateway.mirror`). An `upgrade` is never
        copied. `trace`: the request's, when the Router traces. Every front calls this once the
        request steps have let the request through; `run()` sends the copies, each in the
        request's trace (`Propagation.mirrored`: a span of its own when it records)."""
        if not request.mirrors:
            return []
        return self.mirrors.offer(request.mirrors, body=body, draw=self.rng.random,
                                  upgrade=upgrade, trace=trace)  # fmt: skip

    async def _send_mirror(
        self, copy: MirrorCopy, transport: Transport, trace: Propagation | None
    ) -> None:
        backend = copy.step.target(self.rng.random())
        found = self._backends.get(backend)
        pool = None if found is None else found.pool
        host = not backend.pass_host_header or (
            found is not None and not found.endpoints.options.pass_host_header
        )

        async def sent(copy: MirrorCopy) -> None:
            await send_copy(transport, copy, backend, pool, endpoint_host=host, clock=self.clock,
                            rng=self.rng)  # fmt: skip

        if trace is None:
            await sent(copy)
        else:
            await trace.mirrored(copy, sent)

    async def forward_service(
        self, namespace: str, name: str, port: int | str, request: ForwardRequest
    ) -> tuple[Decision, ForwardResponse]:
        """Send `request` to an endpoint of a Service port, as `forward` does for a route."""
        return await self._send(self.route_service(namespace, name, port), request)

    async def _send(
        self, first: Decision, request: ForwardRequest, record: RequestRecord | None = None
    ) -> tuple[Decision, ForwardResponse]:
        if self.transport is None:
            raise RuntimeError("this Router has no transport")
        return await send(self.transport, first, request, retry=self.retry_for(first.route),
                          clock=self.clock, rng=self.rng, observe=self.observe,
                          record=record)  # fmt: skip

    def observe(self, decision: Decision, status: int, started: float) -> None:
        """Tell the observers of a request answered with `status`; `started` is its
        `time.perf_counter()` at routing (fronts that forward themselves call this)."""
        forwarding = self.observers.forwarding
        if forwarding:
            seconds = time.perf_counter() - started
            for observer in forwarding:
                observer.forwarded(decision, status, seconds)

    def emit_later(self, facts: Facts, make: Make) -> None:
        """`emit` for a front that captured a request's `facts` (`Facts`): the sinks that make
        the event later get them, the others the event made now."""
        observers = self.observers
        for sink in observers.later:
            sink.requested_later(facts, make)
        if observers.now:
            event = make(facts)
            for other in observers.now:
                other.requested(event)

    def emit(self, event: RequestEvent) -> None:
        """Tell the observers that want events (`Observers.listening`) of a request that
        ended; fronts build `event` only when there are some."""
        for sink in self.observers.listening:
            sink.requested(event)

    def statistics(self) -> RouterStatistics:
        now = self.clock()
        return RouterStatistics(
            ready=self.ready,
            routes=len(self.table),
            invalid_objects=len(self.errors),
            rebuilds=self._rebuilds,
            last_rebuild_seconds=self._rebuild_seconds,
            pools=tuple(pool.statistics(now=now) for pool in self._backends.pools()),
            mirrors=self.mirrors.statistics(),
        )

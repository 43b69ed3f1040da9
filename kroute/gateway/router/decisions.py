"""Deciding, without I/O, where a request that matched a route goes.

A route gives a backend (by weight), its pool an endpoint (by balancer and health), unless a
status answers instead: 404 (no route), 500 (the chosen backend reference is unusable), 503 (the
Service has no usable endpoint), or the route's redirect (301, 302, 308).

Why decisions are kept (`Decider`): on the hot path most requests go to a route with one backend,
and the decision to send to an endpoint is the same value every time. So a route whose one
backend has a pool is filed once (`decide_target` picks from that pool directly), and each
(route, backend, pick) decision is made once and reused; both are forgotten at each rebuild.

Endpoint affinity (`Affinity`): a hashing balancer's key and the sticky cookie come from the
request's headers, so decisions that use them are made per request. So are those of a route
with Traefik's sticky cookies (`Route.sticky`, `Sticky`): a sticky weighted TraefikService's
cookie names the child the client stays with (`BackendRef.stuck`), a Service's the endpoint
(`BackendRef.sticky`).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import attrs

from kroute.errors import InvalidBackend, KrouteError, NoHealthyEndpoint, NoRoute, Redirected
from kroute.gateway.router.backends import Backend, Backends
from kroute.objects import BackendRef, StickyCookie
from kroute.pipeline.steps import Chain
from kroute.pool.balance import HashOn, WeightedSplit, cookie_value
from kroute.pool.pool import Pick, Pool, sticky_value
from kroute.rules.request import RequestHead
from kroute.rules.route import Route

#: How many made decisions a Decider keeps for reuse (see `Decider._made`).
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
    #: What the request's Traefik sticky cookies said, when its backend has any.
    sticky: Sticky | None = None
    #: Send the endpoint's address as Host (Traefik's passHostHeader: false, on the route's
    #: reference or the Service's annotation).
    endpoint_host: bool = False
    #: The steps the request goes through (the route's, then the backend's), None for none:
    #: what fronts test before running `kroute.pipeline` on the request.
    chain: Chain | None = attrs.field(init=False, eq=False, repr=False)
    #: (route name, service, step labels), made when first asked (`events.decision_facts`).
    facts: tuple[str, str, tuple[str, ...]] | None = attrs.field(
        default=None, init=False, eq=False, repr=False
    )

    @chain.default
    def _chain(self) -> Chain | None:
        if self.route is None:
            return None
        chain = self.route.chain_for(self.backend)
        return chain if chain.steps else None


def status_error(decision: Decision) -> KrouteError:
    """The error that answers a decision that is not 200 (404, 500, 503, or a redirect)."""
    if decision.location is not None:
        return Redirected(decision.location, decision.status)
    if decision.status == 404:
        return NoRoute(decision.reason)
    if decision.status == 500:
        return InvalidBackend(decision.reason)
    return NoHealthyEndpoint(decision.reason)


@attrs.frozen
class Affinity:
    """Endpoint affinity: the request key a hashing balancer (RingHash) hashes, and the name of
    the cookie that brings a client back to the endpoint that answered it."""

    hash_on: HashOn | None
    sticky_cookie: str | None

    def keys(self, head: RequestHead) -> tuple[int | None, str | None]:
        """The request's hash key and sticky cookie ("" for none), None when not used."""
        hash_key = cookie = None
        if self.hash_on is not None:
            client = None if head.client_ip is None else str(head.client_ip)
            hash_key = self.hash_on.key(head.headers, client)
        if self.sticky_cookie is not None:
            cookie = cookie_value(head.headers, self.sticky_cookie) or ""
        return hash_key, cookie

    def set_cookie(
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


@attrs.frozen
class Sticky:
    """A request's Traefik sticky cookies for its backend: the values it sent for the backend's
    sticky weighted services (`BackendRef.stuck`, "" for none) and for its Service's endpoint
    (`BackendRef.sticky`). The response sets each cookie whose value is not the one that
    brings the client back (Traefik writes its cookie then, and only then)."""

    backend: BackendRef
    sent: tuple[str, ...]
    endpoint: str | None
    #: The endpoint cookie: the reference's (`BackendRef.sticky`), else the Service's.
    cookie: StickyCookie | None

    @classmethod
    def read(cls, backend: BackendRef, head: RequestHead, service: StickyCookie | None) -> Sticky:
        sent = tuple(cookie_value(head.headers, c.name) or "" for c, _ in backend.stuck)
        cookie = backend.sticky or service
        endpoint = None
        if cookie is not None:
            endpoint = cookie_value(head.headers, cookie.name) or ""
        return cls(backend, sent, endpoint, cookie)

    def headers(self, key: tuple[str, int] | None) -> list[tuple[bytes, bytes]]:
        """The Set-Cookie fields of the response from endpoint `key`."""
        out = [cookie.header(value) for (cookie, value), sent
               in zip(self.backend.stuck, self.sent, strict=True) if sent != value]  # fmt: skip
        if self.cookie is not None and key is not None:
            value = sticky_value(key)
            if value != self.endpoint:
                out.append(self.cookie.header(value))
        return out


def stick(backends: Sequence[BackendRef], head: RequestHead, draw: float) -> int | None:
    """The index of the backend a request goes to when a valid sticky cookie of a weighted
    TraefikService narrows the choice (Traefik: the child the cookie names), else None (the
    route's own weighted split chooses). The weights are those of the flattened tree, so a
    sticky service's share goes whole to the child its cookie names, outermost service
    first, and `draw` (uniform in [0, 1)) picks among what remains by weight."""
    weights = [float(b.weight) for b in backends]
    narrowed = False
    depth = 0
    while True:
        levels: dict[StickyCookie, list[int]] = {}
        for i, backend in enumerate(backends):
            if len(backend.stuck) > depth and weights[i] > 0:
                levels.setdefault(backend.stuck[depth][0], []).append(i)
        if not levels:
            break
        for cookie, under in levels.items():
            sent = cookie_value(head.headers, cookie.name)
            match = [i for i in under if backends[i].stuck[depth][1] == sent]
            if not match:
                continue  # no cookie, or one naming no child (now): chosen by weight
            total = sum(weights[i] for i in under)
            part = sum(weights[i] for i in match)
            for i in under:
                weights[i] = weights[i] * total / part if i in match else 0.0
            narrowed = True
        depth += 1
    if not narrowed:
        return None
    point = draw * sum(weights)
    for i, weight in enumerate(weights):
        if point < weight:
            return i
        point -= weight
    return max(i for i, w in enumerate(weights) if w > 0)  # (rounding at the very end)


class Decider:
    """Decisions for matched routes over the Router's pools (see the module docstring)."""

    def __init__(
        self,
        backends: Backends,
        affinity: Affinity,
        *,
        clock: Callable[[], float],
        rng: random.Random,
    ) -> None:
        self._backends = backends
        self.affinity = affinity
        #: Whether decisions depend on the request's headers (then none is kept).
        self.per_request = affinity.hash_on is not None or affinity.sticky_cookie is not None
        #: Whether a Service's annotations ask for a sticky cookie (the Router keeps it
        #: current): then a route's decision reads the request's head.
        self.service_sticky = False
        self._clock = clock
        self._rng = rng
        self._splits: dict[int, WeightedSplit] = {}
        #: Decisions to send to an endpoint, by (route, backend, pick) identity: the same value
        #: every time, made once rather than per request. An entry keeps its three alive, so
        #: their ids stay theirs; cleared at each rebuild and when it grows past DECISIONS_KEPT.
        self._decided: dict[tuple[int, int, int], Decision] = {}
        #: Routes (by identity) whose one backend has a pool, with that backend: what
        #: `decide_target` needs to pick without the general path. Entries keep their route
        #: alive (its id stays its); cleared at each rebuild.
        self._direct: dict[int, _Direct] = {}

    def forget(self) -> None:
        """Drop what was kept for the routes of the table being replaced."""
        self._splits = {}
        self._decided = {}
        self._direct = {}

    def decide_target(
        self, route: Route | None, head: RequestHead | None, build: Callable[[], RequestHead]
    ) -> Decision:
        """`decide` for a route matched by raw target, where `build` makes the request's head
        when `head` is None and the decision needs it (a redirect, sticky cookies). Not for
        `per_request`."""
        direct = self._direct.get(id(route))
        if direct is not None:  # one backend with a pool, no redirect: pick, or say why not
            pick = direct.pool.pick(now=self._clock(), rng=self._rng)
            if pick is None:
                return _unavailable(route, direct.backend, direct.found)
            decision = direct.made.get(id(pick))
            if decision is None:
                decision = direct.decision(self._made(route, direct.backend, direct.pool, pick,
                                                      direct.host))  # fmt: skip
            return decision
        if (
            route is not None
            and head is None
            and (route.redirect is not None or route.sticky or self.service_sticky)
        ):
            head = build()
        return self.decide(route, head, ())

    def decide(
        self, route: Route | None, head: RequestHead | None, exclude: Sequence[tuple[str, int]]
    ) -> Decision:
        """Where a request that matched `route` (None: no route) goes, avoiding `exclude`."""
        if route is None:
            return Decision(404, reason="no route matches")
        redirect = route.redirect
        if redirect is not None and head is not None and redirect.applies(head.scheme):
            location = redirect.location(scheme=head.scheme, host=head.host, port=head.port,
                                         path=head.path, query=head.query_string)  # fmt: skip
            return Decision(redirect.status, route, reason=f"redirect to {location}",
                            location=location)  # fmt: skip
        backend = None
        if route.sticky and head is not None and len(route.backends) > 1:
            index = stick(route.backends, head, self._rng.random())
            backend = None if index is None else route.backends[index]
        if backend is None:
            backend = self._choose(route)
        if backend is None:
            return Decision(500, route, reason="the route has no backend to send to")
        return self.endpoint(route, backend, exclude, head)

    def endpoint(
        self,
        route: Route | None,
        backend: BackendRef,
        exclude: Sequence[tuple[str, int]],
        head: RequestHead | None = None,
    ) -> Decision:
        """An endpoint of `backend`'s pool (`route`: the route that chose it, if any)."""
        if backend.error is not None:
            return Decision(500, route, backend, reason=backend.error)
        found = self._backends.get(backend)
        if found is None:
            return Decision(503, route, backend, reason="no pool for the backend")
        hash_key = cookie = None
        if self.per_request and head is not None:
            hash_key, cookie = self.affinity.keys(head)
        options = found.endpoints.options
        sticky = None
        if head is not None and (backend.stuck or backend.sticky or options.sticky):
            sticky = Sticky.read(backend, head, options.sticky)
        wanted = (sticky.endpoint if sticky is not None else None) or cookie or None
        pick = found.pool.pick(now=self._clock(), rng=self._rng, exclude=exclude,
                               hash_key=hash_key, sticky=wanted)  # fmt: skip
        if pick is None:
            if backend.fallback is not None:  # (a failover service: its fallback's turn)
                return self.endpoint(route, backend.fallback, exclude, head)
            return _unavailable(route, backend, found)
        host = not backend.pass_host_header or not options.pass_host_header
        if cookie is not None or sticky is not None:
            return Decision(200, route, backend, pick, cookie=cookie, pool=found.pool,
                            sticky=sticky, endpoint_host=host)  # fmt: skip
        if (route is not None and route.redirect is None and len(route.backends) == 1
                and backend is route.backends[0] and backend.fallback is None
                and not route.sticky and options.sticky is None):  # fmt: skip
            self._direct[id(route)] = _Direct(route, backend, found)
        return self._made(route, backend, found.pool, pick, host)

    def _choose(self, route: Route) -> BackendRef | None:
        if len(route.backends) == 1:
            return route.backends[0] if route.backends[0].weight > 0 else None
        split = self._splits.get(id(route))
        if split is None:
            split = self._splits[id(route)] = WeightedSplit([b.weight for b in route.backends])
        index = split.pick(self._rng)
        return None if index is None else route.backends[index]

    def _made(self, route: Route | None, backend: BackendRef, pool: Pool, pick: Pick,
              host: bool = False) -> Decision:  # fmt: skip
        """The decision to send to `pick`, made once per (route, backend, pick) (forgotten
        when a Service's options change: `forget`)."""
        key = (id(route), id(backend), id(pick))
        decision = self._decided.get(key)
        if decision is None:
            if len(self._decided) >= DECISIONS_KEPT:
                self._decided.clear()  # (endpoints come and go between rebuilds)
            decision = self._decided[key] = Decision(200, route, backend, pick, pool=pool,
                                                     endpoint_host=host)  # fmt: skip
        return decision


class _Direct:
    """A route whose one backend has a pool (`Decider.decide_target`), with its decisions by
    pick identity: each keeps its pick alive, so the ids stay theirs."""

    __slots__ = ("backend", "found", "host", "made", "pool", "route")

    def __init__(self, route: Route, backend: BackendRef, found: Backend) -> None:
        self.route = route
        self.backend = backend
        self.found = found
        self.pool = found.pool
        self.host = not backend.pass_host_header or not found.endpoints.options.pass_host_header
        self.made: dict[int, Decision] = {}

    def decision(self, decision: Decision) -> Decision:
        """Keep `decision` for its pick (endpoints come and go between rebuilds: bounded)."""
        if len(self.made) >= DECISIONS_KEPT:
            self.made.clear()
        assert decision.pick is not None
        self.made[id(decision.pick)] = decision
        return decision


def _unavailable(route: Route | None, backend: BackendRef, found: Backend) -> Decision:
    reason = found.endpoints.error or f"{backend} has no usable endpoint"
    return Decision(503, route, backend, reason=reason)

"""The Router's pools: one per backend (namespace, Service, port) that some route names.

Why pools are kept apart from the route table: they outlive its rebuilds, so health, in-flight
counts and balancer state survive configuration changes. A rebuild only adds the pools of
backends newly named and drops those no route names any more (`keep`); a Service port asked for
by name (`pin`, for `Router.route_service`) is kept whatever the routes say.

Each Service and EndpointSlice event goes to the pools of its Service as a delta
(`ServiceEndpoints`, one slice at a time), before the source's next event is read: a new
endpoint is in rotation at once, with no rebuild. A Service's `kroute.dev/*` annotations set its
pools' health settings (`health_from_annotations`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from kroute.objects import BackendRef, FieldError, ObjectRef
from kroute.pool.balance import Balancer
from kroute.pool.endpoints import ServiceEndpoints
from kroute.pool.health import HealthConfig, health_from_annotations
from kroute.pool.pool import Pool
from kroute.pool.prober import ActiveProber
from kroute.rules.route import Route
from kroute.watch import kinds
from kroute.watch.sources import Source, stored
from kroute.watch.store import Change

BackendKey = tuple[str, str, int | str]


class Backend:
    """One Service port: its endpoints as the slices say, and the pool that balances them."""

    def __init__(self, key: BackendKey, pool: Pool, *, allow_external_name: bool) -> None:
        namespace, name, port = key
        self.endpoints = ServiceEndpoints(
            ObjectRef("Service", namespace, name), port, allow_external_name=allow_external_name
        )
        self.pool = pool


class Backends:
    """The pool of every backend the routes name, fed by the sources' Service and
    EndpointSlice events (see the module docstring)."""

    def __init__(
        self,
        sources: Sequence[Source],
        *,
        balancer: Callable[[], Balancer],
        health: HealthConfig,
        allow_external_name: bool,
        clock: Callable[[], float],
        prober: ActiveProber,
    ) -> None:
        self._sources = sources
        self._balancer = balancer
        self._health = health
        self._allow_external_name = allow_external_name
        self._clock = clock
        self._prober = prober
        self._backends: dict[BackendKey, Backend] = {}
        #: The backends of each Service (one per port a route names): what an event updates.
        self._by_service: dict[tuple[str, str], list[Backend]] = {}
        #: Backends asked for by name (`pin`): kept whatever the routes say.
        self._pinned: set[BackendKey] = set()

    def get(self, backend: BackendRef) -> Backend | None:
        return self._backends.get((backend.namespace, backend.name, backend.port))  # type: ignore[arg-type]

    def pools(self) -> Iterator[Pool]:
        return (backend.pool for backend in self._backends.values())

    def keep(self, routes: Iterable[Route]) -> None:
        """Pools for the backends `routes` send and mirror to, and the pinned ones; no others."""
        wanted = {
            (b.namespace, b.name, b.port)
            for route in routes
            for b in (*route.backends, *_fallbacks(route), *_stepped(route))
            if b.error is None and b.port is not None
        } | self._pinned
        self._add(wanted - self._backends.keys())
        for key in self._backends.keys() - wanted:
            self._prober.unwatch(self._backends.pop(key).pool)
        self._by_service = {}
        for key, backend in self._backends.items():
            self._by_service.setdefault(key[:2], []).append(backend)

    def pin(self, key: BackendKey) -> None:
        """Keep the pool of `key` from now on, whatever the routes say."""
        if key not in self._pinned:
            self._pinned.add(key)
            if key not in self._backends:
                self._add({key})
                self._by_service.setdefault(key[:2], []).append(self._backends[key])

    def changed(self, kind: kinds.Kind, changes: Sequence[Change]) -> bool:
        """Apply Service and EndpointSlice changes to the pools of their Service; True when a
        Service's options (its Traefik annotations: `ServiceOptions`) changed."""
        now = self._clock()
        options = False
        if kind == kinds.SERVICE:
            for change in changes:
                service = None if change.type == "DELETED" else change.object
                health = self._health_for(service)
                for backend in self._by_service.get(change.key, []):
                    before = backend.endpoints.options
                    backend.pool.apply(backend.endpoints.set_service(service), now=now)
                    options = options or backend.endpoints.options != before
                    if backend.pool.health != health:
                        # New kroute.dev/* annotations: endpoint health state is kept.
                        self._prober.unwatch(backend.pool)
                        backend.pool.health = health
                        self._prober.watch(backend.pool)
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
        return options

    def sticky(self) -> bool:
        """Whether a Service's annotations ask for a sticky cookie."""
        return any(b.endpoints.options.sticky is not None for b in self._backends.values())

    def _add(self, new: set[BackendKey]) -> None:
        if not new:
            return
        # One pass over the slices for every new backend, not one pass per backend.
        slices: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for slice_obj in stored(self._sources, kinds.ENDPOINT_SLICE):
            try:
                owner = ServiceEndpoints.owner_of(slice_obj)
            except FieldError:
                continue
            if owner is not None:
                slices.setdefault((owner.namespace, owner.name), []).append(slice_obj)
        for key in new:
            self._backends[key] = self._new_backend(key, slices.get(key[:2], []))
            self._prober.watch(self._backends[key].pool)

    def _service(self, namespace: str, name: str) -> dict[str, Any] | None:
        for source in self._sources:
            store = source.stores.get(kinds.SERVICE)
            found = store.get((namespace, name)) if store is not None else None
            if found is not None:
                return found
        return None

    def _new_backend(self, key: BackendKey, slices: Sequence[dict[str, Any]]) -> Backend:
        namespace, name, port = key
        service = self._service(namespace, name)
        pool = Pool(f"{namespace}/{name}:{port}", balancer=self._balancer(),
                    health=self._health_for(service))  # fmt: skip
        backend = Backend(key, pool, allow_external_name=self._allow_external_name)
        now = self._clock()
        pool.apply(backend.endpoints.set_service(service), now=now)
        for slice_obj in slices:
            pool.apply(backend.endpoints.apply_slice(slice_obj), now=now)
        return backend

    def _health_for(self, service: dict[str, Any] | None) -> HealthConfig:
        annotations = (service or {}).get("metadata", {}).get("annotations") or {}
        config, _problems = health_from_annotations(annotations, self._health)
        return config


def _fallbacks(route: Route) -> Iterable[BackendRef]:
    """The fallbacks of a route's failover backends (their pools are kept)."""
    for backend in route.backends:
        while backend.fallback is not None:
            backend = backend.fallback
            yield backend


def _stepped(route: Route) -> Iterable[BackendRef]:
    """The backends a route's steps send to (`Step.backends`: RequestMirror copies, error
    pages); their pools are kept."""
    for chain in (route.chain, *route.backend_chains):
        for step in chain.steps:
            yield from step.backends

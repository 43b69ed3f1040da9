"""RouteTable: the compiled, immutable index that answers "which route takes this request?".

Traefik tries every router in priority order for every request. Here routes are sorted once by
precedence (rank 0 is the best) and filed by what can be looked up rather than tried:

- host: an exact-host map, maps of wildcard suffixes (one-label and any-depth), and an any-host
  bucket for routes with no host condition, or only one that cannot be looked up (HostRegexp);
- within each host bucket, path: an exact-path map, a map of element-wise prefix stems looked up
  with each stem of the request path (`/a/b/c` has `""`, `/a`, `/a/b`, `/a/b/c`), and a map of
  character-wise prefixes (Traefik PathPrefix) looked up at each prefix length present.

Every condition that was not used as the index key stays on the entry as a residual check. A
lookup visits the few candidate lists for the request's host and path, each sorted by rank, and
keeps the best rank whose residual checks pass. Because the index keys are exact equivalents of
the conditions they replace, the answer is the one an ordered scan gives (`scan`, which the
tests and the benchmark compare against).
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from kroute.rules.conditions import (
    Condition,
    Conjunction,
    HostIs,
    HostWildcard,
    PathIs,
    PathPrefix,
    PathStartsWith,
    target_only,
)
from kroute.rules.request import RequestHead
from kroute.rules.route import Route

_Entry = tuple[int, Conjunction, Route]


class _Bucket:
    """Routes for one host key, indexed by path.

    `exact` maps a path to routes; `prefix` maps an element-wise stem ("" for `/`, "/a/b") to
    routes, looked up with every stem of the request path (`RequestHead.stems`); `starts` maps a
    character-wise prefix to routes, looked up at each prefix length present. Dicts rather than
    a trie of node objects: a lookup touches a handful of objects, whatever the table's size.
    `target_only` says whether every route here is decided by method, Host and target alone.
    """

    __slots__ = ("exact", "prefix", "start_lengths", "starts", "target_only")

    def __init__(self) -> None:
        self.exact: dict[str, list[_Entry]] = {}
        self.prefix: dict[str, list[_Entry]] = {}
        self.starts: dict[str, list[_Entry]] = {}
        self.start_lengths: tuple[int, ...] = ()
        self.target_only = True

    def add(self, path_key: Condition | None, entry: _Entry) -> None:
        if self.target_only and not all(target_only(c) for c in entry[2].conditions):
            self.target_only = False
        if isinstance(path_key, PathIs):
            self.exact.setdefault(path_key.path, []).append(entry)
        elif isinstance(path_key, PathPrefix):
            self.prefix.setdefault(path_key.stem, []).append(entry)
        elif isinstance(path_key, PathStartsWith):
            self.starts.setdefault(path_key.prefix, []).append(entry)
            self.start_lengths = tuple(sorted({len(p) for p in self.starts}))
        else:
            self.prefix.setdefault("", []).append(entry)

    def search(
        self, request: RequestHead, best: int, found: Route | None
    ) -> tuple[int, Route | None]:
        path = request.path
        if self.exact:
            entries = self.exact.get(path)
            if entries:
                best, found = _first(entries, request, best, found)
        prefix = self.prefix
        if prefix:
            for stem in request.stems:
                entries = prefix.get(stem)
                if entries:
                    best, found = _first(entries, request, best, found)
        if self.starts:
            for length in self.start_lengths:
                if length > len(path):
                    break
                entries = self.starts.get(path[:length])
                if entries:
                    best, found = _first(entries, request, best, found)
        return best, found


def _first(
    entries: list[_Entry], request: RequestHead, best: int, found: Route | None
) -> tuple[int, Route | None]:
    """The best-ranked entry of a rank-sorted list that beats `best` and passes its residuals."""
    for rank, residual, route in entries:
        if rank >= best:
            break
        for condition in residual:
            if not condition.matches(request):
                break
        else:
            return rank, route
    return best, found


@attrs.frozen
class TableStatistics:
    """How a table's routes were filed: by host, by wildcard, or scanned for every host."""

    routes: int
    exact_hosts: int
    wildcard_suffixes: int
    any_host_routes: int
    routes_with_residual_checks: int


class RouteTable:
    """An immutable, indexed set of routes in precedence order.

    `match` is the fast path; `scan` is the plain ordered scan it must agree with.
    """

    __slots__ = (
        "_any_depth",
        "_any_host",
        "_any_host_used",
        "_exact",
        "_one_label",
        "_stats",
        "routes",
    )

    def __init__(self, routes: Iterable[Route] = ()) -> None:
        self.routes: tuple[Route, ...] = tuple(sorted(routes, key=lambda r: r.precedence))
        self._exact: dict[str, _Bucket] = {}
        self._one_label: dict[str, _Bucket] = {}
        self._any_depth: dict[str, _Bucket] = {}
        self._any_host = _Bucket()
        any_host = residual_routes = 0
        for rank, route in enumerate(self.routes):
            host_key: Condition | None = None
            path_key: Condition | None = None
            residual: list[Condition] = []
            for cond in route.conditions:
                if host_key is None and isinstance(cond, HostIs | HostWildcard):
                    host_key = cond
                elif path_key is None and isinstance(cond, PathIs | PathPrefix | PathStartsWith):
                    path_key = cond
                else:
                    residual.append(cond)
            if isinstance(host_key, HostIs):
                bucket = self._exact.setdefault(host_key.host, _Bucket())
            elif isinstance(host_key, HostWildcard):
                wild = self._any_depth if host_key.any_depth else self._one_label
                bucket = wild.setdefault(host_key.suffix, _Bucket())
            else:
                bucket = self._any_host
                any_host += 1
            residual_routes += bool(residual)
            bucket.add(path_key, (rank, tuple(residual), route))
        self._any_host_used = any_host > 0
        self._stats = TableStatistics(
            routes=len(self.routes),
            exact_hosts=len(self._exact),
            wildcard_suffixes=len(self._one_label) + len(self._any_depth),
            any_host_routes=any_host,
            routes_with_residual_checks=residual_routes,
        )

    def __len__(self) -> int:
        return len(self.routes)

    def match(self, request: RequestHead) -> Route | None:
        """The route that takes `request`, or None (a 404)."""
        return self.lookup(request)[0]

    def lookup(self, request: RequestHead) -> tuple[Route | None, bool]:
        """`match`, and whether its answer is decided by the request's method, Host header and
        target alone (no route that could have taken it reads another header or the client
        address): then any request with the same three gets the same answer from this table."""
        best = len(self.routes)
        found: Route | None = None
        host = request.host
        pure = True
        bucket = self._exact.get(host)
        if bucket is not None:
            best, found = bucket.search(request, best, found)
            pure = bucket.target_only
        dot = host.find(".")
        if dot > 0 and self._one_label:
            bucket = self._one_label.get(host[dot + 1 :])
            if bucket is not None:
                best, found = bucket.search(request, best, found)
                pure = pure and bucket.target_only
        if self._any_depth:
            while dot != -1:
                if dot > 0:
                    bucket = self._any_depth.get(host[dot + 1 :])
                    if bucket is not None:
                        best, found = bucket.search(request, best, found)
                        pure = pure and bucket.target_only
                dot = host.find(".", dot + 1)
        if self._any_host_used:
            found = self._any_host.search(request, best, found)[1]
            pure = pure and self._any_host.target_only
        return found, pure

    def scan(self, request: RequestHead) -> Route | None:
        """The first route in precedence order whose conditions all hold: the reference answer."""
        for route in self.routes:
            if all(c.matches(request) for c in route.conditions):
                return route
        return None

    def statistics(self) -> TableStatistics:
        return self._stats

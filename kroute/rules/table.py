"""RouteTable: the compiled, immutable index that answers "which route takes this request?".

Traefik tries every router in priority order for every request. Here routes are sorted once by
precedence (rank 0 is the best) and filed by what can be looked up rather than tried:

- host: an exact-host map, maps of wildcard suffixes (one-label and any-depth), and an any-host
  bucket for routes with no host condition, or only one that cannot be looked up (HostRegexp);
- within each host bucket, path: one map from exact paths and element-wise prefix stems
  (`/a/b/c` has `""`, `/a`, `/a/b`, `/a/b/c`) to candidate lists merged ahead of time (a stem's
  list holds the prefix routes of every shorter stem too), so that a lookup reads the list of
  the request path or of its longest stem present, and nothing else; and a map of
  character-wise prefixes (Traefik PathPrefix) looked up at each prefix length present.

Every condition that was not used as the index key stays on the entry as a residual check. A
lookup reads the candidate list for the request's host and path in each host bucket that
applies (usually one), sorted by rank, and keeps the best rank whose residual checks pass.
Because the index keys are exact equivalents of the conditions they replace, the answer is the
one an ordered scan gives (`scan`, which the tests and the benchmark compare against).
"""

from __future__ import annotations

import sys
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
from kroute.rules.request import RequestHead, path_stems
from kroute.rules.route import Route

#: A route as the index files it: its rank (0 is the best), the conditions left to check
#: once host and path are known, the route, and whether those checks read only the method and
#: the target (so that the answer they give is the same for every request with that target).
_Entry = tuple[int, Conjunction, Route, bool]
#: The candidates for a path: a route that needs no further check (the best-ranked candidate
#: has none left, so it is the answer), or the rank-sorted entries.
_Candidates = Route | tuple[_Entry, ...]


class _Both:
    """A path key that is an Exact route's path and may also be a stem of longer paths: the
    candidates for a request with exactly that path, and those for the paths below it."""

    __slots__ = ("exact", "prefix")

    def __init__(self, exact: _Candidates | None, prefix: _Candidates | None) -> None:
        self.exact = exact
        self.prefix = prefix


class _Bucket(dict[str, "_Candidates | _Both"]):
    """Routes for one host key, indexed by path, each candidate list merged ahead of time.

    The bucket maps a key to the routes that can take a request path, merged in rank order: an
    Exact route's path to that route and the element-wise prefix routes of every stem of the
    path; an element-wise stem ("" for `/`, "/a/b") to its prefix routes and those of every
    shorter stem. A lookup therefore reads one list: the request path's, else the longest stem's
    of it present (`RequestHead.stems`). A key that is both (an Exact path that is also a stem
    of longer paths) holds a `_Both`. `starts` maps a character-wise prefix to candidates,
    looked up at each prefix length present.

    Why this shape: past a few thousand hosts the index no longer fits in the CPU cache, and a
    lookup costs about one cache miss per distinct object it touches (docs/benchmarks.md). So
    the bucket is itself the path map (a dict with two slots, not an object holding maps), each
    list is merged ahead of time (one read, not one per stem), and a list whose best entry needs
    no further check is stored as that entry's route: the answer itself.
    """

    __slots__ = ("start_lengths", "starts")

    def __init__(self, routes: list[tuple[Condition | None, _Entry]]) -> None:
        super().__init__()
        exact: dict[str, list[_Entry]] = {}
        prefix: dict[str, list[_Entry]] = {}
        starts: dict[str, list[_Entry]] = {}
        for path_key, entry in routes:
            if isinstance(path_key, PathIs):
                exact.setdefault(path_key.path, []).append(entry)
            elif isinstance(path_key, PathPrefix):
                prefix.setdefault(path_key.stem, []).append(entry)
            elif isinstance(path_key, PathStartsWith):
                starts.setdefault(path_key.prefix, []).append(entry)
            else:
                prefix.setdefault("", []).append(entry)
        for stem in prefix:  # a stem's own stems end with itself ("/a/b": "", "/a", "/a/b")
            self[stem] = _candidates(_merged(prefix, path_stems(stem or "/")))
        for path, entries in exact.items():
            below = _merged(prefix, path_stems(path))  # prefix routes that take `path` too
            whole = _candidates(sorted([*entries, *below], key=lambda entry: entry[0]))
            if len(path) > 1 and not path.endswith("/"):  # a request stem may equal it
                self[path] = _Both(whole, _candidates(below) if below else None)
            else:
                self[path] = whole
        self.starts = {key: _candidates(entries) for key, entries in starts.items()}
        self.start_lengths: tuple[int, ...] = tuple(sorted({len(p) for p in starts}))

    def search(
        self, request: RequestHead, best: Route | None, pure: bool, ranks: dict[int, int]
    ) -> tuple[Route | None, bool]:
        """The best route for `request` here or `best` (the best of earlier buckets), and
        whether every check made on the way read only the method and the target."""
        path = request.path
        hit = self.get(path)
        if hit is None:
            stems = request.stems
            last = len(stems) - 1
            if stems[last] is path:  # (the path itself was just looked up)
                last -= 1
            for index in range(last, -1, -1):  # the longest stem present
                hit = self.get(stems[index])
                if hit is not None:
                    if isinstance(hit, _Both):
                        hit = hit.prefix
                    break
        elif isinstance(hit, _Both):
            hit = hit.exact
        if hit is not None:
            best, pure = _first(hit, request, best, pure, ranks)
        if self.start_lengths:
            for length in self.start_lengths:
                if length > len(path):
                    break
                found = self.starts.get(path[:length])
                if found is not None:
                    best, pure = _first(found, request, best, pure, ranks)
        return best, pure


def _merged(lists: dict[str, list[_Entry]], keys: tuple[str, ...]) -> list[_Entry]:
    """The entries filed under `keys` (distinct stems), sorted by rank."""
    return sorted((e for key in keys for e in lists.get(key, ())), key=lambda e: e[0])


def _candidates(entries: list[_Entry]) -> _Candidates:
    """How a rank-sorted list (not empty) is stored: see `_Candidates`."""
    if not entries[0][1]:
        return entries[0][2]
    return tuple(entries)


def _first(
    candidates: _Candidates, request: RequestHead, best: Route | None, pure: bool,
    ranks: dict[int, int],
) -> tuple[Route | None, bool]:  # fmt: skip
    """The best candidate that beats `best` and passes its checks (ranks are read only when
    there is a `best` to beat)."""
    if isinstance(candidates, Route):  # a route that needs no check
        if best is None or ranks[id(candidates)] < ranks[id(best)]:
            return candidates, pure
        return best, pure
    limit = sys.maxsize if best is None else ranks[id(best)]
    for rank, residual, route, decided_by_target in candidates:
        if rank >= limit:
            break
        pure = pure and decided_by_target
        for condition in residual:
            if not condition.matches(request):
                break
        else:
            return route, pure
    return best, pure


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
        "_ranks",
        "_stats",
        "routes",
    )

    def __init__(self, routes: Iterable[Route] = ()) -> None:
        self.routes: tuple[Route, ...] = tuple(sorted(routes, key=lambda r: r.precedence))
        #: Rank by route identity, for the rare lookup that compares candidates of two buckets.
        self._ranks = {id(route): rank for rank, route in enumerate(self.routes)}
        exact: dict[str, list[tuple[Condition | None, _Entry]]] = {}
        one_label: dict[str, list[tuple[Condition | None, _Entry]]] = {}
        any_depth: dict[str, list[tuple[Condition | None, _Entry]]] = {}
        any_host_routes: list[tuple[Condition | None, _Entry]] = []
        residual_routes = 0
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
                bucket = exact.setdefault(host_key.host, [])
            elif isinstance(host_key, HostWildcard):
                wild = any_depth if host_key.any_depth else one_label
                bucket = wild.setdefault(host_key.suffix, [])
            else:
                bucket = any_host_routes
            residual_routes += bool(residual)
            pure = all(target_only(cond) for cond in residual)
            bucket.append((path_key, (rank, tuple(residual), route, pure)))
        self._exact = {host: _Bucket(routes) for host, routes in exact.items()}
        self._one_label = {suffix: _Bucket(routes) for suffix, routes in one_label.items()}
        self._any_depth = {suffix: _Bucket(routes) for suffix, routes in any_depth.items()}
        self._any_host = _Bucket(any_host_routes)
        any_host = len(any_host_routes)
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
        target alone (no check made on the way read another header or the client address):
        then any request with the same three gets the same answer from this table."""
        best: Route | None = None
        ranks = self._ranks
        host = request.host
        pure = True
        bucket = self._exact.get(host)
        if bucket is not None:
            best, pure = bucket.search(request, best, pure, ranks)
        dot = host.find(".")
        if dot > 0 and self._one_label:
            bucket = self._one_label.get(host[dot + 1 :])
            if bucket is not None:
                best, pure = bucket.search(request, best, pure, ranks)
        if self._any_depth:
            while dot != -1:
                if dot > 0:
                    bucket = self._any_depth.get(host[dot + 1 :])
                    if bucket is not None:
                        best, pure = bucket.search(request, best, pure, ranks)
                dot = host.find(".", dot + 1)
        if self._any_host_used:
            best, pure = self._any_host.search(request, best, pure, ranks)
        return best, pure

    def scan(self, request: RequestHead) -> Route | None:
        """The first route in precedence order whose conditions all hold: the reference answer."""
        for route in self.routes:
            if all(c.matches(request) for c in route.conditions):
                return route
        return None

    def statistics(self) -> TableStatistics:
        return self._stats

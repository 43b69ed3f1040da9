"""RouteTable: the compiled, immutable index that answers "which route takes this request?".

Traefik tries every router in priority order for every request. Here routes are sorted once by
precedence (rank 0 is the best) and filed by what can be looked up rather than tried:

- host: four tiers keyed by exact host, by wildcard suffix (one-label, any-depth), and one
  for routes with no host condition (Traefik's `Host(`*`)` counts as none), or only one that
  cannot be looked up (HostRegexp);
- within each tier, path first: maps from exact paths and from element-wise prefix stems
  (`/a/b/c` has `""`, `/a`, `/a/b`, `/a/b/c`) to, per host key, candidate lists merged ahead of
  time (a stem's list holds the prefix routes of every shorter stem too), so that a lookup
  reads the list of the request path or of its longest stem present, and nothing else; and per
  host key, a map of character-wise prefixes (Traefik PathPrefix) looked up at each prefix
  length present.

Every condition that was not used as the index key stays on the entry as a residual check. A
lookup reads the candidate list for the request's host and path in each tier that applies
(usually one), sorted by rank, and keeps the best rank whose residual checks pass.
Because the index keys are exact equivalents of the conditions they replace, the answer is the
one an ordered scan gives (`scan`, which the tests and the benchmark compare against).

`for_host` reads the same host keys for `explain`: the routes that can concern a host, without
walking every route (docs/explain.md).
"""

from __future__ import annotations

import collections
import sys
from collections.abc import Iterable

import attrs

from kroute.rules.conditions import (
    Condition,
    Conjunction,
    HostAny,
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


class _Only:
    """The candidates of a path that one host key alone has: one object for a lookup to read
    where a dict is two (itself and its table)."""

    __slots__ = ("candidates", "key")

    def __init__(self, key: str, candidates: _Candidates) -> None:
        self.key = key
        self.candidates = candidates


#: A path's candidates by host key: a dict; an `_Only`; or, for a path that the tier's main
#: key (the one with most paths of its own) alone has, the bare candidates, so that one host
#: with thousands of paths reads no more per lookup than a per-host path map would.
_ByKey = dict[str, _Candidates] | _Only | _Candidates
#: Routes filed under one host key, by path: (path key, entry) in rank order.
_Filed = list[tuple[Condition | None, _Entry]]


class _Starts:
    """Character-wise prefixes (Traefik PathPrefix) of one host key: candidates per prefix,
    looked up at each prefix length present."""

    __slots__ = ("lengths", "prefixes")

    def __init__(self, prefixes: dict[str, list[_Entry]]) -> None:
        self.prefixes = {key: _candidates(entries) for key, entries in prefixes.items()}
        self.lengths = tuple(sorted({len(prefix) for prefix in prefixes}))

    def search(
        self, request: RequestHead, best: Route | None, pure: bool, ranks: dict[int, int]
    ) -> tuple[Route | None, bool]:
        path = request.path
        for length in self.lengths:
            if length > len(path):
                break
            found = self.prefixes.get(path[:length])
            if found is not None:
                best, pure = _first(found, request, best, pure, ranks)
        return best, pure


class _Tier:
    """The routes of one kind of host key (exact hosts, one kind of wildcard suffix, or no host),
    filed by path first and host key second, each candidate list merged ahead of time.

    `whole` maps a request path to, per host key, the routes that take exactly that path: its
    Exact routes and the element-wise prefix routes of every stem of it, in rank order. `below`
    maps an element-wise stem ("" for `/`, "/a/b") to, per host key, its prefix routes and those
    of every shorter stem. A lookup therefore reads one list: the request path's in `whole`,
    else that of the longest of its stems (`RequestHead.stems`) present in `below` for its host
    key. `starts` holds, per host key, the character-wise prefixes, looked up at each length.

    Why path first: past a few thousand hosts the index no longer fits in the CPU cache, and a
    lookup costs about one cache miss per distinct object it touches (docs/benchmarks.md). The
    path maps are few and shared by every host, so they stay cached; what a lookup reads cold is
    one host map's slot, the host key it compares, and the answer. Host first, a lookup also
    read the host's own path map (its object and its table) cold. A path that one host key
    alone has holds no map (`_ByKey`), so hosts with paths of their own, and one host with
    thousands of paths, read no more than they would host first. Each list is merged ahead of
    time (one read, not one per stem), and a list whose best entry needs no further check is
    stored as that entry's route: the answer itself.
    """

    __slots__ = ("below", "keys", "main", "ranks", "starts", "whole")

    def __init__(self, filed: dict[str, _Filed]) -> None:
        self.keys = frozenset(filed)
        #: The ranks filed under each host key, for `RouteTable.for_host` (not read by lookups).
        self.ranks = {key: [entry[0] for _, entry in routes] for key, routes in filed.items()}
        whole: dict[str, dict[str, _Candidates]] = {}
        below: dict[str, dict[str, _Candidates]] = {}
        self.starts: dict[str, _Starts] = {}
        for key, routes in filed.items():
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
                merged = _merged(prefix, path_stems(stem or "/"))
                below.setdefault(stem, {})[key] = _candidates(merged)
            for path, entries in exact.items():
                merged = _merged(prefix, path_stems(path))  # prefix routes that take it too
                merged = sorted([*entries, *merged], key=lambda entry: entry[0])
                whole.setdefault(path, {})[key] = _candidates(merged)
            if starts:
                self.starts[key] = _Starts(starts)
        owners = collections.Counter(  # host keys by how many paths each alone has
            next(iter(keys)) for paths in (whole, below) for keys in paths.values()
            if len(keys) == 1
        )  # fmt: skip
        self.main = owners.most_common(1)[0][0] if owners else None
        self.whole = {path: self._by_key(keys) for path, keys in whole.items()}
        self.below = {stem: self._by_key(keys) for stem, keys in below.items()}

    def _by_key(self, candidates: dict[str, _Candidates]) -> _ByKey:
        """How a path's candidates by host key are stored: see `_ByKey`."""
        if len(candidates) != 1:
            return candidates
        ((key, only),) = candidates.items()
        return only if key == self.main else _Only(key, only)

    def search(
        self, key: str, request: RequestHead, best: Route | None, pure: bool,
        ranks: dict[int, int],
    ) -> tuple[Route | None, bool]:  # fmt: skip
        """The best route for `request` under host key `key` or `best` (the best of earlier
        tiers), and whether every check made on the way read only the method and the target."""
        # The request path in `whole`, then its stems in `below`, longest first, until one
        # holds candidates for `key`.
        stems = request.stems
        index = len(stems)
        paths, probe = self.whole, request.path
        hit = None
        while True:
            keys = paths.get(probe)
            if keys is not None:
                if isinstance(keys, dict):
                    hit = keys.get(key)
                elif isinstance(keys, _Only):
                    hit = keys.candidates if keys.key == key else None
                elif key == self.main:
                    hit = keys
                if hit is not None:
                    break
            if not index:
                break
            index -= 1
            paths, probe = self.below, stems[index]
        if hit is not None:
            best, pure = _first(hit, request, best, pure, ranks)
        if self.starts:
            starts = self.starts.get(key)
            if starts is not None:
                best, pure = starts.search(request, best, pure, ranks)
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
        "_exact",
        "_one_label",
        "_ranks",
        "_stats",
        "routes",
    )

    def __init__(self, routes: Iterable[Route] = ()) -> None:
        self.routes: tuple[Route, ...] = tuple(sorted(routes, key=lambda r: r.precedence))
        #: Rank by route identity, for the rare lookup that compares candidates of two tiers.
        self._ranks = {id(route): rank for rank, route in enumerate(self.routes)}
        exact: dict[str, _Filed] = {}
        one_label: dict[str, _Filed] = {}
        any_depth: dict[str, _Filed] = {}
        any_host: dict[str, _Filed] = {}  # one key: ""
        residual_routes = 0
        for rank, route in enumerate(self.routes):
            host_key: Condition | None = None
            path_key: Condition | None = None
            residual: list[Condition] = []
            for cond in route.conditions:
                if isinstance(cond, HostAny):  # Traefik's `Host(`*`)`: no host condition at all
                    continue
                if host_key is None and isinstance(cond, HostIs | HostWildcard):
                    host_key = cond
                elif path_key is None and isinstance(cond, PathIs | PathPrefix | PathStartsWith):
                    path_key = cond
                else:
                    residual.append(cond)
            if isinstance(host_key, HostIs):
                filed = exact.setdefault(host_key.host, [])
            elif isinstance(host_key, HostWildcard):
                wild = any_depth if host_key.any_depth else one_label
                filed = wild.setdefault(host_key.suffix, [])
            else:
                filed = any_host.setdefault("", [])
            residual_routes += bool(residual)
            pure = all(target_only(cond) for cond in residual)
            filed.append((path_key, (rank, tuple(residual), route, pure)))
        self._exact = _Tier(exact)
        self._one_label = _Tier(one_label)
        self._any_depth = _Tier(any_depth)
        self._any_host = _Tier(any_host)
        self._stats = TableStatistics(
            routes=len(self.routes),
            exact_hosts=len(exact),
            wildcard_suffixes=len(one_label) + len(any_depth),
            any_host_routes=len(any_host.get("", ())),
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
        # Every exact host is looked up, present or not: its path maps answer that too, and a
        # membership test first would read the host's slot twice.
        best, pure = self._exact.search(host, request, best, pure, ranks)
        dot = host.find(".")
        one_label = self._one_label
        if dot > 0 and one_label.keys:
            suffix = host[dot + 1 :]
            if suffix in one_label.keys:
                best, pure = one_label.search(suffix, request, best, pure, ranks)
        any_depth = self._any_depth
        if any_depth.keys:
            while dot != -1:
                if dot > 0:
                    suffix = host[dot + 1 :]
                    if suffix in any_depth.keys:
                        best, pure = any_depth.search(suffix, request, best, pure, ranks)
                dot = host.find(".", dot + 1)
        any_host = self._any_host
        if any_host.keys:
            best, pure = any_host.search("", request, best, pure, ranks)
        return best, pure

    def for_host(self, host: str) -> tuple[Route, ...]:
        """The routes filed under the host keys that `host` (normalised, as in `RequestHead`)
        looks up, and those filed for any host, in precedence order: every route that can take
        a request for `host`, read from the index rather than by walking all routes.

        A route is kept on its index key alone: one whose residual checks include a host
        condition that fails for `host` (HostRegexp, a second Host) is still listed."""
        ranks = list(self._exact.ranks.get(host, ()))
        dot = host.find(".")  # the suffixes `lookup` reads, in the same way
        if dot > 0:
            ranks += self._one_label.ranks.get(host[dot + 1 :], ())
        while dot != -1:
            if dot > 0:
                ranks += self._any_depth.ranks.get(host[dot + 1 :], ())
            dot = host.find(".", dot + 1)
        ranks += self._any_host.ranks.get("", ())
        return tuple(self.routes[rank] for rank in sorted(ranks))

    def scan(self, request: RequestHead) -> Route | None:
        """The first route in precedence order whose conditions all hold: the reference answer."""
        for route in self.routes:
            if all(c.matches(request) for c in route.conditions):
                return route
        return None

    def statistics(self) -> TableStatistics:
        return self._stats

"""RouteMemo: routing answers remembered by (method, Host header, request target).

A gateway sees the same few targets over and over; building a normalised `RequestHead` and
looking it up costs more than the rest of routing together (docs/benchmarks.md). The table
knows when its answer depends on nothing but the method, the Host header and the target
(`RouteTable.lookup`: no route that could have taken the request reads another header or the
client address), and only such answers are remembered, keyed by the raw values, before any
normalisation. So a remembered answer is exactly the one the table gives, for every spelling.

A new table forgets everything. The memo is bounded: past `limit` answers it starts again
empty, so a client sending endless distinct targets costs one lookup each, never memory.
"""

from __future__ import annotations

from collections.abc import Callable

from kroute.rules.request import RequestHead
from kroute.rules.route import Route
from kroute.rules.table import RouteTable

_UNKNOWN = object()


class RouteMemo:
    """Remembered `RouteTable.lookup` answers for one table at a time (see the module)."""

    __slots__ = ("_answers", "_table", "limit")

    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
        self._table: RouteTable | None = None
        self._answers: dict[tuple[str, str, str], Route | None] = {}

    def __len__(self) -> int:
        return len(self._answers)

    def match(
        self,
        table: RouteTable,
        method: str,
        host: str,
        target: str,
        build: Callable[[], RequestHead],
    ) -> tuple[Route | None, RequestHead | None]:
        """The route of `table` for a request, and the head built for it (None when the answer
        was remembered: `build` is called only on a miss)."""
        if table is not self._table:
            self._answers.clear()
            self._table = table
        key = (method, host, target)
        route = self._answers.get(key, _UNKNOWN)
        if route is not _UNKNOWN:
            return route, None  # type: ignore[return-value]
        head = build()
        found, pure = table.lookup(head)
        if pure:
            if len(self._answers) >= self.limit:
                self._answers.clear()
            self._answers[key] = found
        return found, head

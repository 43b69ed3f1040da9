"""HeaderPlans: `header_lines` made once per sequence of header names, for a proxy's hot path.

Why: a client or a backend sends the same header names in the same order message after message
(a browser's requests, a framework's responses); only the values change. Deciding for each
header whether to pass it on and whether to read it, and formatting each line, was the largest
part of a proxied request's Python work (docs/benchmarks.md). A plan makes those decisions once
per sequence of names: the lines passed on become one format string with the names as received
baked in, and the values read become indexes. The answer is `header_lines`' for every input
(tested with hypothesis), the rare Connection header that names other headers included: that
message takes `header_lines` itself (RFC 9110 section 7.6.1).

Bounded: past `limit` plans the cache starts again empty, so a peer that sends endless new
sequences of names costs one plan each (a pass like `header_lines`' own), never memory.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence

from kroute.transport.proxy import (
    PLAIN_CONNECTION,
    HeaderSplit,
    connection_tokens,
    header_lines,
)

Values = Callable[[Sequence[bytes]], list[bytes]]


class _Plan:
    """For one sequence of names: the lines' format, which values fill it, which are read."""

    __slots__ = ("fill", "one", "reads", "template")

    def __init__(self, names: tuple[bytes, ...], split: HeaderSplit) -> None:
        parts: list[bytes] = []
        passed: list[int] = []
        read: dict[bytes, list[int]] = {}
        for index, name in enumerate(names):
            lower = name.lower()
            if lower in split.read:
                read.setdefault(lower, []).append(index)
            if lower not in split.drop:
                parts.append(name.replace(b"%", b"%%") + b": %b\r\n")
                passed.append(index)
        self.template = b"".join(parts)
        #: The values that fill `template`: one index (`one`), or a getter of several.
        self.one = passed[0] if len(passed) == 1 else -1
        self.fill = operator.itemgetter(*passed) if len(passed) > 1 else None
        self.reads = tuple((lower, _getter(indexes)) for lower, indexes in read.items())


def _getter(indexes: list[int]) -> Values:
    if len(indexes) == 1:
        return operator.itemgetter(slice(indexes[0], indexes[0] + 1))  # a list of one
    return lambda values: [values[i] for i in indexes]


class HeaderPlans:
    """`header_lines` for messages given as two lists, names and values (see the module)."""

    __slots__ = ("limit", "plans", "split")

    def __init__(self, split: HeaderSplit, limit: int = 512) -> None:
        self.split = split
        self.limit = limit
        self.plans: dict[tuple[bytes, ...], _Plan] = {}

    def lines(
        self, names: list[bytes], values: list[bytes]
    ) -> tuple[bytes, dict[bytes, list[bytes]]]:
        """The header lines to pass on, joined, and the values of the headers `split.read`
        names, by lower-case name: what `header_lines` gives for `zip(names, values)`."""
        key = tuple(names)
        plan = self.plans.get(key)
        if plan is None:
            if len(self.plans) >= self.limit:
                self.plans.clear()
            plan = self.plans[key] = _Plan(key, self.split)
        read: dict[bytes, list[bytes]] = {}
        for lower, get in plan.reads:
            read[lower] = get(values)
        connection = read.get(b"connection")
        if (
            connection is not None
            and not PLAIN_CONNECTION.issuperset(connection)
            and connection_tokens((b"connection", v) for v in connection) - self.split.drop
        ):  # a Connection header names end-to-end headers: the general path drops them too
            lines, read = header_lines(list(zip(names, values, strict=True)), self.split)
            return b"".join(lines), read
        if plan.fill is not None:
            return plan.template % plan.fill(values), read
        if plan.one >= 0:
            return plan.template % values[plan.one], read
        return b"", read

"""Response header edits that are the same on every response, folded into one patch.

Most response steps set or remove fixed fields whatever the response holds: a headers
Middleware's customResponseHeaders (an empty value removes) and its security headers, an
HTTPRoute ResponseHeaderModifier without `add`. Such a step says so with
`Step.response_edits`, and a chain whose response steps all do folds them, in order, into one
`ResponsePatch` per scheme (`Chain.patches`), made when the route is compiled. `run_response`
applies that patch to a list of fields (HttpServer, the ASGI gateway, explain); FastGateway
applies the same patch to the bytes of the response head (the names it drops left out by the
response's header plan, its lines appended), so no list of fields is built per response.
Either way the result is what running the steps one by one gives: each set field replaces
every field of its name (RFC 9110 section 5.3), each removal drops them all; only the order
of fields of different names may differ, which carries no meaning (RFC 9110 section 5.3).
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from kroute.pipeline.request import Header

#: One edit: (name, value) sets the field, (name, None) removes it.
Edit = tuple[bytes, bytes | None]


@attrs.frozen
class ResponsePatch:
    """What a chain's response steps do to every response: the fields named in `drop` (lower
    case; those it sets included) are removed, then `fields` are appended (`lines`: the same,
    rendered as `Name: value\\r\\n` lines)."""

    drop: frozenset[bytes]
    fields: tuple[Header, ...]
    lines: bytes

    def apply(self, headers: list[Header]) -> None:
        """The patch on a response's end-to-end fields, in place."""
        drop = self.drop
        headers[:] = [field for field in headers if field[0].lower() not in drop]
        headers.extend(self.fields)


def fold(edits: Iterable[Edit]) -> ResponsePatch:
    """Edits in the order the steps make them, as one patch: a later edit of a name replaces
    an earlier one and moves it last, as running them one by one would."""
    final: dict[bytes, Header | None] = {}
    for name, value in edits:
        lower = name.lower()
        final.pop(lower, None)
        final[lower] = None if value is None else (name, value)
    fields = tuple(field for field in final.values() if field is not None)
    return ResponsePatch(frozenset(final), fields, b"".join(b"%b: %b\r\n" % f for f in fields))

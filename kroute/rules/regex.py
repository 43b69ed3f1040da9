"""The regular expressions routes carry, on RE2: linear time, and the syntax Go accepts.

Traefik compiles PathRegexp, HostRegexp, HeaderRegexp and QueryRegexp with Go's `regexp`
(traefik `pkg/muxer/http/matcher.go`), which is RE2: matching takes time linear in the input,
and there are no backreferences and no lookaround. Python's `re` backtracks: one route with
`(a+)+$` would let any client spend seconds of the gateway's CPU on a crafted 30-byte path.
So every route regex (Traefik matchers, HTTPRoute RegularExpression matches) runs here, on
Google's RE2 (the `google-re2` binding), and a pattern RE2 cannot run is refused when the
object is compiled, never handed to a backtracking engine instead.

Syntax is Go's (https://github.com/google/re2/wiki/Syntax; Go `regexp/syntax`): RE2 C++
accepts one escape Go does not, `\\C` (any byte), which is refused here too. `$` without
`(?m)` is the end of the text, as in Go (Python's `$` also matches before a final newline).

The binding ships no type information: this module is the one place that touches it.
"""

from __future__ import annotations

import re
from typing import Any

import attrs
import re2  # google-re2

#: Errors are raised, not also logged to standard error by the C++ library.
_OPTIONS: Any = re2.Options()
_OPTIONS.log_errors = False

ENGINE = "RE2 (google-re2)"


def _go_rejects(text: str) -> str | None:
    r"""What Go's regexp refuses that RE2 C++ accepts: `\C`, outside `\Q...\E`."""
    i = 0
    while i < len(text) - 1:
        if text[i] == "\\":
            escaped = text[i + 1]
            if escaped == "C":
                return r"\C (any byte) is not Go regexp syntax"
            if escaped == "Q":
                end = text.find("\\E", i + 2)
                if end == -1:
                    break
                i = end + 2
                continue
            i += 2
        else:
            i += 1
    return None


@attrs.frozen
class Regex:
    """A compiled route regex: `search` finds it anywhere (Go's `MatchString`), `fullmatch`
    anchors it at both ends (Gateway API RegularExpression, as Envoy does). Equal when the
    pattern text is equal."""

    pattern: str
    _compiled: Any = attrs.field(eq=False, repr=False, alias="compiled")

    def search(self, value: str) -> bool:
        return self._compiled.search(value) is not None

    def fullmatch(self, value: str) -> bool:
        return self._compiled.fullmatch(value) is not None

    def find(self, value: str) -> str | None:
        """The leftmost match's text (Go's `FindString`), None when there is none."""
        found = self._compiled.search(value)
        return None if found is None else str(found.group(0))

    def replace_all(self, value: str, template: str) -> str:
        """Go's `ReplaceAllString`: every match, left to right, replaced by `template` with
        `$1`, `${1}`, `$name`, `${name}` expanded (`expand`); an empty match right after the
        previous match is not replaced (Go's rule, unlike Python's `re.sub`)."""
        out: list[str] = []
        pos = last = 0
        previous_end = -1
        while pos <= len(value):
            found = self._compiled.search(value, pos)
            if found is None:
                break
            start, end = found.span()
            if not (start == end == previous_end):
                groups = [found.span(i) for i in range(self._compiled.groups + 1)]
                out += [value[last:start], expand(template, value, groups, self.names)]
                last = end
            previous_end = end
            pos = end if end > start else end + 1
        out.append(value[last:])
        return "".join(out)

    @property
    def names(self) -> dict[str, int]:
        return dict(self._compiled.groupindex)


#: A `$` reference in a Go replacement template: `$$`, `${name}` or `$name` (Go
#: `regexp.Regexp.Expand`: a name is letters, digits and underscores, the longest run).
_REFERENCE = re.compile(r"\$(?:(\$)|\{(\w+)\}|(\w+))")


def expand(template: str, value: str, groups: list[tuple[int, int]], names: dict[str, int]
           ) -> str:  # fmt: skip
    """`template` with its references replaced by the groups' text (Go's `Expand`): a number
    names a group by index, a name by name; a group that did not take part, or does not
    exist, is empty; `$$` is `$`; a `$` not followed by a valid reference stays as it is."""

    def one(found: re.Match[str]) -> str:
        if found.group(1):
            return "$"
        name = found.group(2) or found.group(3)
        index = int(name) if name.isascii() and name.isdigit() else names.get(name, -1)
        if not 0 <= index < len(groups) or groups[index][0] < 0:
            return ""
        start, end = groups[index]
        return value[start:end]

    return _REFERENCE.sub(one, template)


def compile_regex(text: str) -> Regex:
    """A route's regular expression, compiled once at table build; ValueError says why not
    (backreferences, lookaround and other syntax RE2 does not have are errors, by design)."""
    reason = _go_rejects(text)
    if reason is None:
        try:
            return Regex(text, re2.compile(text, _OPTIONS))
        except re2.error as exc:
            detail = exc.args[0] if exc.args else exc
            reason = detail.decode("utf-8", "replace") if isinstance(detail, bytes) else str(detail)
    raise ValueError(
        f"invalid regular expression {text!r}: {reason} (routes use RE2, Go's regexp syntax: "
        "no backreferences, no lookaround)"
    )

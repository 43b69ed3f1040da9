"""Path rewriting shared by redirects and URL rewrites (Gateway API HTTPPathModifier).

Rewrites work on the path as routing saw it (`kroute.rules.request.normalize_path`: unreserved
percent-encodings decoded, dot segments and repeated slashes removed), never on the raw target:
`/api/x/../../admin` rewritten as sent would let the backend's own normalisation climb out of
the replacement, where the routed path has no `..` left to climb with. `wire_path` encodes the
result for the request line again.

ReplacePrefixMatch replaces the path prefix a `PathPrefix` match matched. Prefix matches are
element-wise (a prefix `/foo` matches `/foo` and `/foo/bar`, not `/foobar`), so the matched
part is a number of whole segments: the replacement takes the place of that many segments of
the path as it is sent, whatever their percent-encoding (`/f%6Fo/x` matched by `/foo` keeps
`/x`), and nothing outside them is touched. Slashes follow the spec's table (v1.6
HTTPPathModifier): prefix `/foo` or `/foo/`, path `/foo/bar` or `/foo`, replacement `/xyz` or
`/xyz/`: `/xyz/bar`, `/xyz`; path `/foo/` keeps its trailing slash (`/xyz/`); replacement `/`
gives `/bar` and `/`.
"""

from __future__ import annotations

import functools
from urllib.parse import quote

#: What a path segment carries as it is (RFC 3986 section 3.3, pchar, plus "/"); "%" too,
#: because the routing path keeps reserved characters and stray percents encoded.
_PATH_SAFE = "/%:@!$&'()*+,;="


@functools.lru_cache(maxsize=4096)  # (pure; the same few paths come again and again)
def wire_path(path: str) -> str:
    """A routed path as a request line or Location carries it: characters a URI path cannot
    carry (a space, `{`, non-ASCII) encoded again (RFC 3986 section 3.3)."""
    return quote(path, safe=_PATH_SAFE)


@functools.lru_cache(maxsize=4096)
def replace_prefix(path: str, matched: str, replacement: str) -> str:
    """`path` with the segments `matched` covers replaced by `replacement`."""
    covered = len([s for s in matched.split("/") if s])
    segments = path.split("/")[1:]  # "/a/b/" -> ["a", "b", ""]
    # Empty segments (repeated slashes) count as nothing, as element-wise matching sees them.
    taken = 0
    index = 0
    while taken < covered and index < len(segments):
        if segments[index]:
            taken += 1
        index += 1
    rest = segments[index:]
    base = replacement.rstrip("/")
    if not rest:
        return base or "/"
    return f"{base}/{'/'.join(rest)}"

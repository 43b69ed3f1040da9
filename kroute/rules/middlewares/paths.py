"""Traefik's path middlewares as steps: stripPrefix, stripPrefixRegex, addPrefix, replacePath
and replacePathRegex (Traefik v3 docs, "HTTP Middlewares": StripPrefix, StripPrefixRegex,
AddPrefix, ReplacePath, ReplacePathRegex; traefik `pkg/middlewares/<name>`).

They work on the path as routing saw it (`UpstreamRequest.routed`: dot segments and repeated
slashes already removed) and encode the result for the request line again, as every kroute
rewrite does (`kroute.pipeline.paths`). Traefik matches the decoded path instead; the routed
path keeps reserved characters encoded, so `/a%2Fb` is not stripped by a prefix `/a/b` here.

What Traefik v3 refuses, kroute refuses the same way: a stripped or regex-replaced path that is
not clean (a `.` or `..` segment, an empty segment) is answered 400 and never forwarded (v3
`stripprefix` and `replacepathregex`: "sanitized path is not equivalent"), so that
`/api../x` stripped of `/api` cannot reach the backend as `/../x`.

The original values go in X-Forwarded-Prefix (strips) and X-Replaced-Path (replacements).
Traefik appends to them, after whatever the client sent; here the first such step of a chain
replaces a client's value (a client cannot put a value of its own before the gateway's) and
later ones append, in order (`request.notes`).
"""

from __future__ import annotations

import re
from typing import Any

import attrs

from kroute.objects import FieldError, as_list, as_map, as_str, req_str
from kroute.pipeline.paths import wire_path
from kroute.pipeline.steps import Answer, Step, UpstreamRequest
from kroute.rules.regex import Regex, compile_regex

FORWARDED_PREFIX = b"X-Forwarded-Prefix"
REPLACED_PATH = b"X-Replaced-Path"
#: A `%` that does not start a percent-encoding (Go's url.PathUnescape fails on it).
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def unclean(path: str) -> bool:
    """Whether a path has a `.` or `..` segment or an empty one (Go's `path.Join` would change
    it: what Traefik v3 answers 400 for after a rewrite)."""
    segments = path.split("/")[1:]
    return any(s in (".", "..") or (not s and i < len(segments) - 1)
               for i, s in enumerate(segments))  # fmt: skip


def record(request: UpstreamRequest, name: bytes, value: str) -> None:
    """Set `name` to `value` the first time a step of the chain records it (the client's own
    value replaced), append it after that."""
    key = name.decode("ascii")
    if request.notes.get(key):
        request.headers.append((name, value.encode("utf-8")))
    else:
        request.set(name, value.encode("utf-8"))
        request.notes[key] = True


def _leading_slash(path: str) -> str:
    return path if not path or path.startswith("/") else "/" + path


@attrs.frozen
class _PathStep(Step):
    declarative = True  # (the 400 too depends on the path alone)

    def _move(self, request: UpstreamRequest, path: str, *, check: bool) -> Answer | None:
        if check and unclean(path):
            return Answer(400, f"the rewritten path {path!r} has a dot or empty segment",
                          body=b"400 Bad Request\n")  # fmt: skip
        request.routed = path or "/"
        request.path = wire_path(request.routed)
        return None


@attrs.frozen
class _Strip(_PathStep):
    @property
    def touches(self) -> frozenset[bytes]:
        return frozenset({FORWARDED_PREFIX.lower()})

    def _strip(self, request: UpstreamRequest, prefix: str, recorded: str) -> Answer | None:
        record(request, FORWARDED_PREFIX, recorded)
        return self._move(request, _leading_slash(request.routed[len(prefix) :]), check=True)


@attrs.frozen
class StripPrefix(_Strip):
    """The first of `prefixes` the path starts with (character-wise: `/stat` strips
    `/status` to `/us`, as Traefik) is removed; X-Forwarded-Prefix says which."""

    prefixes: tuple[str, ...] = attrs.field(kw_only=True)

    def request(self, request: UpstreamRequest) -> Answer | None:
        for prefix in self.prefixes:
            if request.routed.startswith(prefix):
                return self._strip(request, prefix, prefix.strip())
        return None


@attrs.frozen
class StripPrefixRegex(_Strip):
    """The first regex whose leftmost match is a non-empty prefix of the path: that prefix is
    removed and goes in X-Forwarded-Prefix."""

    regexes: tuple[Regex, ...] = attrs.field(kw_only=True)

    def request(self, request: UpstreamRequest) -> Answer | None:
        for regex in self.regexes:
            prefix = regex.find(request.routed)
            if prefix and request.routed.startswith(prefix):
                return self._strip(request, prefix, prefix)
        return None


@attrs.frozen
class AddPrefix(_PathStep):
    """`prefix` goes before the path (no check after it, as Traefik: the operator wrote it)."""

    prefix: str = attrs.field(kw_only=True)

    @property
    def touches(self) -> frozenset[bytes]:
        return frozenset()

    def request(self, request: UpstreamRequest) -> Answer | None:
        return self._move(request, _leading_slash(self.prefix + request.routed), check=False)


@attrs.frozen
class ReplacePath(_PathStep):
    """The path becomes `path`; the one it replaces goes in X-Replaced-Path."""

    path: str = attrs.field(kw_only=True)

    @property
    def touches(self) -> frozenset[bytes]:
        return frozenset({REPLACED_PATH.lower()})

    def request(self, request: UpstreamRequest) -> Answer | None:
        record(request, REPLACED_PATH, request.path)
        return self._move(request, self.path, check=False)


@attrs.frozen
class ReplacePathRegex(_PathStep):
    """When `regex` matches the path, every match is replaced by `replacement` (Go's
    `ReplaceAllString`, `$1` and `${name}` expanded); the old path goes in X-Replaced-Path.
    A result with a stray `%` is answered 500, one that is not clean 400 (as Traefik v3)."""

    regex: Regex = attrs.field(kw_only=True)
    replacement: str = attrs.field(kw_only=True)

    @property
    def touches(self) -> frozenset[bytes]:
        return frozenset({REPLACED_PATH.lower()})

    def request(self, request: UpstreamRequest) -> Answer | None:
        if not self.regex.search(request.routed):
            return None
        path = self.regex.replace_all(request.routed, self.replacement)
        if _BAD_ESCAPE.search(path):
            return Answer(500, f"the replaced path {path!r} has an invalid percent-encoding",
                          body=b"500 Internal Server Error\n")  # fmt: skip
        record(request, REPLACED_PATH, request.path)
        return self._move(request, path, check=True)


# -- Middleware spec -> step ----------------------------------------------------------------------


def regex_of(text: str, field: str, *, strip: bool = True) -> Regex:
    """A middleware's regex on RE2 (`kroute.rules.regex`); Traefik trims those of the path
    middlewares (`strip`), not redirectRegex's."""
    try:
        return compile_regex(text.strip() if strip else text)
    except ValueError as exc:
        raise FieldError(field, str(exc)) from None


def options_of(spec: Any, field: str, known: tuple[str, ...]) -> dict[str, Any]:
    """A middleware's options; one it does not have is an error (the API server would prune
    it from a CRD object silently: kroute says so instead)."""
    options = dict(as_map(spec, field))
    for key in options:
        if key not in known:
            raise FieldError(f"{field}.{key}", f"unknown option (known: {', '.join(known)})")
    return options


def strip_prefix(spec: Any, field: str) -> Step:
    """`prefixes`, and the deprecated `forceSlash`, accepted: it changes nothing here, where a
    request line always has a path (an empty one is sent as `/` either way)."""
    options = options_of(spec, field, ("prefixes", "forceSlash"))
    if not isinstance(options.get("forceSlash", False), bool):
        raise FieldError(f"{field}.forceSlash", "expected a boolean")
    listed = as_list(options.get("prefixes"), f"{field}.prefixes")
    prefixes = tuple(req_str(p, f"{field}.prefixes[{i}]") for i, p in enumerate(listed))
    return StripPrefix(field, prefixes=prefixes)


def strip_prefix_regex(spec: Any, field: str) -> Step:
    options = options_of(spec, field, ("regex",))
    listed = as_list(options.get("regex"), f"{field}.regex")
    regexes = tuple(regex_of(req_str(r, f"{field}.regex[{i}]"), f"{field}.regex[{i}]")
                    for i, r in enumerate(listed))  # fmt: skip
    return StripPrefixRegex(field, regexes=regexes)


def add_prefix(spec: Any, field: str) -> Step:
    options = options_of(spec, field, ("prefix",))
    prefix = as_str(options.get("prefix"), f"{field}.prefix")
    if not prefix:
        raise FieldError(f"{field}.prefix", "required: the prefix cannot be empty (Traefik)")
    return AddPrefix(field, prefix=prefix)


def replace_path(spec: Any, field: str) -> Step:
    options = options_of(spec, field, ("path",))
    path = as_str(options.get("path"), f"{field}.path") or ""
    if _BAD_ESCAPE.search(path):
        raise FieldError(f"{field}.path", f"{path!r} has an invalid percent-encoding")
    return ReplacePath(field, path=path)


def replace_path_regex(spec: Any, field: str) -> Step:
    options = options_of(spec, field, ("regex", "replacement"))
    regex = regex_of(req_str(options.get("regex"), f"{field}.regex"), f"{field}.regex")
    replacement = (as_str(options.get("replacement"), f"{field}.replacement") or "").strip()
    return ReplacePathRegex(field, regex=regex, replacement=replacement)

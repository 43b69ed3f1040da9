"""Traefik's compress middleware as a body step (Traefik v3 docs, "HTTP Middlewares" >
Compress; traefik `pkg/middlewares/compress`), on the pipeline's body seam
(`kroute.pipeline.body`).

A response is compressed when all hold: the request is not HEAD and has no Range, the response
is not 206 and has no Content-Encoding, its media type (and the request's) is not excluded
(`excludedContentTypes`, plus `application/grpc` always) or is included
(`includedContentTypes`), the client accepts an encoding kroute has (`negotiate`), and the body
is at least `minResponseBodyBytes` (1024): decided from Content-Length when the response has
one, else by holding at most that many bytes before the head goes out (a body that ends
shorter goes out as it came). The body is gzip-compressed as it streams (zlib, flushed at
each piece the backend sends, so nothing waits in the gateway), in constant memory.

Only gzip: brotli and zstd need packages kroute does not depend on (the standard library has
neither before Python 3.14's `compression.zstd`), so `encodings` naming them fails closed and
says so, rather than serving gzip to a configuration that asked for something else.
"""

from __future__ import annotations

import re
import zlib
from typing import Any, ClassVar

import attrs

from kroute.objects import FieldError, as_int, as_list, req_str
from kroute.pipeline.body import BodyFilter, content_length
from kroute.pipeline.filters import Refuse
from kroute.pipeline.steps import Header, Step, UpstreamRequest
from kroute.rules.middlewares.paths import options_of

#: Traefik's default `encodings`, in its order of preference.
TRAEFIK_ENCODINGS = ("zstd", "br", "gzip")
#: What kroute compresses with.
SUPPORTED = ("gzip",)
#: Never compressed (Traefik adds it to every middleware's exclusions: gRPC frames itself).
ALWAYS_EXCLUDED = "application/grpc"
_MEDIA = re.compile(r"[a-z0-9!#$%&'*+.^_`|~-]+/[a-z0-9!#$%&'*+.^_`|~-]+")
_QVALUE = re.compile(r"(?:0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)")


def media_type(value: str) -> str | None:
    """The media type of a Content-Type value, lower case, parameters and spaces dropped; None
    when it is not one (RFC 9110 section 8.3.1)."""
    kind = value.split(";", 1)[0].strip().lower()
    return kind if _MEDIA.fullmatch(kind) else None


def accepted(values: list[bytes]) -> dict[str, float]:
    """Accept-Encoding field values -> the weight of each coding named (RFC 9110 section
    12.5.3: `q` absent is 1; a coding named twice keeps its first weight). Items that do not
    parse (a bad qvalue, an empty name) are ignored, never guessed at."""
    weights: dict[str, float] = {}
    for value in values:
        for item in value.decode("latin-1").split(","):
            name, *params = (part.strip() for part in item.split(";"))
            weight = 1.0
            for param in params:
                key, _, raw = param.partition("=")
                if key.strip().lower() == "q":
                    raw = raw.strip()
                    weight = float(raw) if _QVALUE.fullmatch(raw) else -1.0
            if name and weight >= 0:
                weights.setdefault(name.lower(), weight)
    return weights


def negotiate(values: list[bytes] | None, encodings: tuple[str, ...],
              default: str | None) -> str | None:  # fmt: skip
    """The encoding to answer with, or None for none (identity).

    No Accept-Encoding: `default` (Traefik's `defaultEncoding`; RFC 9110 says any coding is
    then acceptable, Traefik compresses only when told to). Otherwise the coding of highest
    weight among `encodings` (weight 0 is "not acceptable"), one named outright before one only
    `*` covers, then `default`, then the order of `encodings`. An empty field means identity.
    """
    if values is None:
        return default
    weights = accepted(values)
    wildcard = weights.get("*", 0.0)
    candidates = []
    for rank, coding in enumerate(encodings):
        named = coding in weights
        weight = weights[coding] if named else wildcard
        if weight > 0:
            candidates.append(((weight, named, coding == default, -rank), coding))
    return max(candidates)[1] if candidates else None


class Gzip(BodyFilter):
    """One response's gzip stream. Undecided (`ready` false) it holds at most `minimum` bytes:
    once that many arrived it compresses them and everything after; a body that ends first
    goes out unchanged, and so does its head."""

    def __init__(self, headers: list[Header], minimum: int, *, decided: bool) -> None:
        self.headers = headers
        self.minimum = minimum
        self.held: list[bytes] = []
        self.size = 0
        self.zip: zlib._Compress | None = None
        self.ready = False
        if decided:
            self.start()

    def start(self) -> None:
        """Compress from now on: the head says so (RFC 9110 section 8.4)."""
        headers = self.headers
        headers[:] = [(n, v) for n, v in headers
                      if n.lower() not in (b"content-encoding", b"accept-ranges")]  # fmt: skip
        headers.append((b"Content-Encoding", b"gzip"))
        for i, (name, value) in enumerate(headers):
            if name.lower() == b"etag" and not value.startswith(b"W/"):
                headers[i] = (name, b"W/" + value)  # a strong validator no longer holds
        self.zip = zlib.compressobj(6, zlib.DEFLATED, 31)
        self.ready = True

    def feed(self, chunk: bytes) -> bytes:
        if self.zip is None:
            if self.ready:  # (decided not to compress)
                return chunk
            self.held.append(chunk)
            self.size += len(chunk)
            if self.size < self.minimum:
                return b""
            chunk, self.held = b"".join(self.held), []
            self.start()
        assert self.zip is not None
        return self.zip.compress(chunk) + self.zip.flush(zlib.Z_SYNC_FLUSH)

    def end(self) -> bytes:
        if self.zip is None:
            self.ready = True
            held, self.held = b"".join(self.held), []
            return held
        return self.zip.flush(zlib.Z_FINISH)


@attrs.frozen
class Compress(Step):
    """The compress middleware (module docstring)."""

    on_request: ClassVar[bool] = False
    on_body: ClassVar[bool] = True
    encodings: tuple[str, ...] = attrs.field(kw_only=True)
    default: str | None = attrs.field(kw_only=True)
    minimum: int = attrs.field(kw_only=True)
    excluded: frozenset[str] = attrs.field(kw_only=True)
    included: frozenset[str] = attrs.field(kw_only=True)

    @property
    def touches(self) -> frozenset[bytes]:
        return frozenset({b"accept-encoding", b"range", b"content-type"})

    def applies(self, headers: list[Header], request: UpstreamRequest) -> bool:
        """Whether the response may be compressed at all, whatever the client accepts."""
        if request.get(b"range") is not None:
            return False  # (a part of the representation: compressing it breaks the ranges)
        asked = media_type((request.get(b"content-type") or b"").decode("latin-1"))
        if asked in self.excluded:
            return False  # (as Traefik: text/event-stream requests, gRPC)
        kind: str | None = ""
        for name, value in headers:
            lower = name.lower()
            if lower == b"content-encoding" and value.strip():
                return False
            if lower == b"content-type":
                kind = media_type(value.decode("latin-1"))
        if kind is None or kind.startswith(ALWAYS_EXCLUDED + "+"):
            return False  # (unparsable: as Traefik's handlers; gRPC's +proto, +json forms too)
        if self.included:
            return kind in self.included
        return kind not in self.excluded

    def body(self, status: int, headers: list[Header], request: UpstreamRequest) -> Gzip | None:
        if status == 206 or not self.applies(headers, request):
            return None
        vary = [v for n, v in headers if n.lower() == b"vary"]
        if not any(b"accept-encoding" in v.lower() or b"*" in v for v in vary):
            headers.append((b"Vary", b"Accept-Encoding"))
        values = [v for n, v in request.headers if n.lower() == b"accept-encoding"]
        if negotiate(values or None, self.encodings, self.default) is None:
            return None
        length = content_length(headers)
        if length is not None and length < self.minimum:
            return None
        return Gzip(headers, self.minimum, decided=length is not None)


def _types(options: dict[str, Any], key: str, field: str) -> frozenset[str]:
    listed = as_list(options.get(key) or [], f"{field}.{key}")
    kinds = set()
    for i, value in enumerate(listed):
        kind = media_type(req_str(value, f"{field}.{key}[{i}]"))
        if kind is None:
            raise FieldError(f"{field}.{key}[{i}]", f"not a media type: {value!r}")
        kinds.add(kind)
    return frozenset(kinds)


def compress(spec: Any, field: str) -> Step:
    options = options_of(spec if spec is not None else {}, field, (
        "excludedContentTypes", "includedContentTypes", "minResponseBodyBytes", "encodings",
        "defaultEncoding"))  # fmt: skip
    excluded = _types(options, "excludedContentTypes", field)
    included = _types(options, "includedContentTypes", field)
    if excluded and included:
        raise FieldError(field, "excludedContentTypes and includedContentTypes are mutually "
                         "exclusive")  # fmt: skip
    minimum = as_int(options.get("minResponseBodyBytes"), f"{field}.minResponseBodyBytes",
                     default=0, low=0, high=1 << 30) or 1024  # fmt: skip
    listed = options.get("encodings")
    encodings: tuple[str, ...] = SUPPORTED
    if listed is not None:
        names = as_list(listed, f"{field}.encodings")
        encodings = tuple(req_str(n, f"{field}.encodings[{i}]") for i, n in enumerate(names))
        if not encodings:
            raise FieldError(f"{field}.encodings", "at least one encoding")
        for i, name in enumerate(encodings):
            if name not in TRAEFIK_ENCODINGS:
                raise FieldError(f"{field}.encodings[{i}]", f"unsupported encoding {name!r} "
                                 f"(Traefik has {', '.join(TRAEFIK_ENCODINGS)})")  # fmt: skip
        missing = [name for name in encodings if name not in SUPPORTED]
        if missing:
            why = f"{', '.join(missing)} compression is not supported by kroute (no library)"
            return Refuse(f"{field}.encodings", reason=f"{why}: list only gzip")
    default = options.get("defaultEncoding")
    if default is not None:
        default = req_str(default, f"{field}.defaultEncoding")
        if default not in encodings:
            raise FieldError(f"{field}.defaultEncoding", f"{default!r} is not among the "
                             "encodings")  # fmt: skip
    return Compress(field, encodings=encodings, default=default, minimum=minimum,
                    excluded=excluded | {ALWAYS_EXCLUDED}, included=included)  # fmt: skip

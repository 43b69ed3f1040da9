"""The request as a route's steps see and change it, and the answer a step gives instead.

Values only (`kroute.pipeline.steps` runs the steps on them). Headers are `(name, value)` byte
pairs as they travel, names compared case-insensitively (RFC 9110 section 5.1).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from kroute.pipeline.filters import MirrorCopy

Header = tuple[bytes, bytes]
#: Fields that belong to one connection (RFC 9110 section 7.6.1): never passed on, and never
#: set by a step (`kroute.pipeline.filters.edited_name`).
HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"proxy-authenticate",
    b"proxy-authorization", b"te", b"trailer", b"transfer-encoding", b"upgrade",
})  # fmt: skip
#: Runs a blocking function off the event loop and gives its result (`UpstreamRequest.offload`).
Offload = Callable[[Callable[[], Any]], Awaitable[Any]]


@attrs.define
class UpstreamRequest:
    """The request as the backend will receive it; request steps change it in place.

    `path` is the path as it will be sent (percent-encodings as received), `query` the query
    without `?` (None when the target had none), `headers` the end-to-end fields including
    Host. `routed` is the path as routing saw it (normalised), which rewrites start from
    (`kroute.pipeline.paths`). `scheme` and `client` say how the request arrived. `mirrors`
    are the copies RequestMirror steps made, which the front hands to `Router.mirror`. `notes` is
    what a request step leaves for its response step, under the step's field: response steps
    see the response head and this request, not the request as it arrived (CORS keeps the
    allowed Origin there). `clock` is the front's monotonic clock (seconds; the Router's), for
    steps that count time (rateLimit); None offline (`kroute.rules.preview`), where steps that
    keep state across requests are not run (`Step.offline`). `offload` is the front's way to
    run a blocking function off its event loop (a worker thread, bounded: `Router.offload`), for
    the steps that wait only for that (`Deferring`: basicAuth's bcrypt); None offline, where
    such a step calls the function itself.
    """

    method: str
    path: str
    query: str | None
    headers: list[Header]
    routed: str = ""
    scheme: str = "http"
    client: str = ""
    notes: dict[str, Any] = attrs.field(factory=dict)
    mirrors: tuple[MirrorCopy, ...] = attrs.field(default=(), kw_only=True)  # (no allocation)
    clock: Callable[[], float] | None = attrs.field(default=None, kw_only=True, eq=False)
    offload: Offload | None = attrs.field(default=None, kw_only=True, eq=False)

    @classmethod
    def from_target(
        cls, method: str, target: str, headers: list[Header], *, routed: str,
        scheme: str = "http", client: str = "", clock: Callable[[], float] | None = None,
        offload: Offload | None = None,
    ) -> UpstreamRequest:  # fmt: skip
        """The request to forward, from the target as received (origin-form)."""
        path, mark, query = target.partition("?")
        return cls(method, path, query if mark else None, headers, routed, scheme, client,
                   clock=clock, offload=offload)  # fmt: skip

    @property
    def target(self) -> str:
        return self.path if self.query is None else f"{self.path}?{self.query}"

    def get(self, name: bytes) -> bytes | None:
        """The first value of header `name` (any case), or None."""
        name = name.lower()
        return next((v for n, v in self.headers if n.lower() == name), None)

    def set(self, name: bytes, value: bytes) -> None:
        """Replace every field `name` by one (RFC 9110 section 5.3), in the first one's place."""
        lower, size = name.lower(), len(name)  # (the length first: most names differ in it)
        places = [i for i, (n, _) in enumerate(self.headers)
                  if len(n) == size and n.lower() == lower]  # fmt: skip
        if not places:
            self.headers.append((name, value))
            return
        self.headers[places[0]] = (name, value)
        for i in reversed(places[1:]):
            del self.headers[i]

    def remove(self, name: bytes) -> None:
        lower = name.lower()
        self.headers[:] = [f for f in self.headers if f[0].lower() != lower]


@attrs.frozen
class Answer:
    """A response a step gives instead of forwarding; `reason` is for explain and logs, the
    client sees `body` (never internals)."""

    status: int
    reason: str
    headers: tuple[Header, ...] = ()
    body: bytes = b""
    step: str = ""  # the step that answered, for explain

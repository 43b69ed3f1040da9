"""Traefik's buffering middleware as limits on the pipeline's body seams (Traefik v3 docs,
"HTTP Middlewares" > Buffering; traefik `pkg/middlewares/buffering`, over oxy's buffer).

Traefik reads a whole request into memory (then a temporary file) before forwarding it, and a
whole response before answering, to enforce the limits; kroute streams both ways and counts
instead, so memory stays bounded whatever the limits:

- `maxRequestBodyBytes`: a Content-Length over it is answered 413 before anything is sent; a
  chunked body is counted as it streams: past the limit the request is cut at the backend and
  answered 413 when the response has not started (a backend that answers before reading the
  whole body may have answered already: its response goes on, and the rest of the body is not
  sent);
- `maxResponseBodyBytes`: a Content-Length over it is answered 500 (Traefik's answer) with the
  backend's body discarded; a body without one is counted as it streams and cut past the limit
  (the head is out by then: the client sees a truncated response, never a complete-looking
  one);
- `memRequestBodyBytes`, `memResponseBodyBytes`: accepted and without effect (how much of a
  buffered body Traefik keeps in memory: kroute keeps none);
- `retryExpression`: fails closed (replaying a request needs its body kept; kroute's retries are
  the route's retry policy, which never sends a body twice).
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs

from kroute.objects import as_int, as_str
from kroute.pipeline.body import BodyFilter, BodyTooLarge, content_length
from kroute.pipeline.filters import Refuse
from kroute.pipeline.steps import Answer, Header, Step, UpstreamRequest
from kroute.rules.middlewares.paths import options_of

_MAX = 1 << 62


class Counted(BodyFilter):
    """A response body passed through, counted; BodyTooLarge past `limit` bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.seen = 0

    def feed(self, chunk: bytes) -> bytes:
        self.seen += len(chunk)
        if self.seen > self.limit:
            raise BodyTooLarge(f"the response body is larger than {self.limit} bytes")
        return chunk


@attrs.frozen
class Buffering(Step):
    """The buffering middleware's limits (module docstring); 0 is no limit, as in Traefik."""

    max_request: int = attrs.field(kw_only=True)
    max_response: int = attrs.field(kw_only=True)
    on_request: ClassVar[bool] = False  # (its request side is a limit: `request_limit`)
    on_body: ClassVar[bool] = True

    @property
    def touches(self) -> frozenset[bytes]:
        return frozenset()

    @property
    def request_limit(self) -> int | None:
        return self.max_request or None

    def body(
        self, status: int, headers: list[Header], request: UpstreamRequest
    ) -> Counted | Answer | None:
        if not self.max_response:
            return None
        length = content_length(headers)
        if length is not None:
            if length > self.max_response:
                return Answer(500, f"the response body ({length} bytes) is larger than "
                              f"maxResponseBodyBytes ({self.max_response})",
                              body=b"Internal Server Error")  # fmt: skip
            return None
        return Counted(self.max_response)


def buffering(spec: Any, field: str) -> Step:
    options = options_of(spec if spec is not None else {}, field, (
        "maxRequestBodyBytes", "memRequestBodyBytes", "maxResponseBodyBytes",
        "memResponseBodyBytes", "retryExpression"))  # fmt: skip
    limits = {key: as_int(options.get(key), f"{field}.{key}", default=0, low=0, high=_MAX)
              for key in options if key != "retryExpression"}  # fmt: skip
    if as_str(options.get("retryExpression"), f"{field}.retryExpression"):
        return Refuse(f"{field}.retryExpression", reason="retryExpression is not supported by "
                      "kroute: a retried request needs its body kept, and kroute never sends "
                      "a body twice (use a retry Middleware for requests without one)")  # fmt: skip
    return Buffering(field, max_request=limits.get("maxRequestBodyBytes", 0),
                     max_response=limits.get("maxResponseBodyBytes", 0))  # fmt: skip

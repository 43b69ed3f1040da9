"""The response body seam: steps that transform, limit or replace a response's body.

Response steps (`Step.response`) edit the head; a step with `on_body` also sees the body. Its
`body(status, headers, request)` is called once per response, on the head (after the response
steps, only for a response that has a body: never for HEAD, 1xx, 204, 304 or a 101), and says
what happens to this response:

- None: nothing (the step does not apply: compress on a response already encoded);
- a `BodyFilter`: made for this response, fed the body as it arrives (`feed(chunk) -> bytes`,
  `end() -> bytes`). Pure and synchronous, streaming, its memory bounded. A transformed body
  goes out chunked: the front drops Content-Length. A filter that must see some of the body
  before it can settle the head (compress without a Content-Length, waiting for
  minResponseBodyBytes) keeps `ready` false meanwhile; the front holds the head until it is
  ready or the body ends, and the filter edits the header list it was given when it decides.
  A filter that raises `BodyTooLarge` stops the response: answered 500 when the head is not
  sent yet, else cut (the client sees a truncated response, never a complete-looking one);
- an `Answer`: the response is replaced by it (buffering's maxResponseBodyBytes against a
  Content-Length: 500), the backend's body discarded;
- a `Replace`: the response is replaced by a page fetched from another backend (errors), with
  the original status (`Router.error_page` does the I/O, the same for every front).

Every front (FastGateway's relay, and `Router.forward` for HttpServer and the ASGI gateway)
calls `run_body` and nothing else, so they cannot drift; a route without body steps pays one
attribute test (`Chain.body`).

Request bodies have one seam too, a limit: `Chain.request_limit` (buffering's
maxRequestBodyBytes), which every front counts the request body against (413).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from kroute.errors import KrouteError
from kroute.objects import BackendRef
from kroute.pipeline.steps import Answer, Header

if TYPE_CHECKING:
    from kroute.pipeline.steps import Chain, UpstreamRequest


class BodyTooLarge(KrouteError):
    """A filter's limit was passed: the response stops (500, or cut once the head is out)."""

    status_hint = 500


class RequestTooLarge(KrouteError):
    """The request body is larger than the route lets through (buffering's
    maxRequestBodyBytes): 413, or the request cut when its response has started."""

    status_hint = 413

    def __init__(self, limit: int) -> None:
        super().__init__(f"the request body is larger than {limit} bytes")


class BodyFilter:
    """One response's body transformer (module docstring); this base passes bytes through."""

    #: The head may go out (False while the filter decides; see the module docstring).
    ready: bool = True

    def feed(self, chunk: bytes) -> bytes:
        return chunk

    def end(self) -> bytes:
        return b""


class Filters(BodyFilter):
    """Several filters, in the order of their steps: each one's output is the next one's
    input; ready when all are."""

    def __init__(self, filters: list[BodyFilter]) -> None:
        self.filters = filters
        self.ready = all(f.ready for f in filters)

    def feed(self, chunk: bytes) -> bytes:
        for f in self.filters:
            chunk = f.feed(chunk)
        self.ready = all(f.ready for f in self.filters)
        return chunk

    def end(self) -> bytes:
        out = b""
        for f in self.filters:
            out = f.feed(out) + f.end() if out else f.end()
        self.ready = True
        return out


@attrs.frozen
class Replace:
    """Replace the response by the answer of `backend` to GET `target` with `headers` (Host
    included), answered with `status` (the original one). `limit` bounds the page's body,
    `timeout` the whole fetch; `step` labels it for logs."""

    backend: BackendRef
    target: str
    headers: tuple[Header, ...]
    status: int
    step: str
    limit: int = 1024 * 1024
    timeout: float = 30.0


def run_body(
    chain: Chain, status: int, headers: list[Header], request: UpstreamRequest
) -> BodyFilter | Answer | Replace | None:
    """What the chain's body steps make of a response with a body (`status`, its end-to-end
    `headers`, edited in place): the first Answer or Replace wins; the filters are combined.
    With a filter, Content-Length is removed (the body is transformed: chunked out)."""
    filters: list[BodyFilter] = []
    for step in chain.body:
        made = step.body(status, headers, request)
        if made is None:
            continue
        if not isinstance(made, BodyFilter):
            return made
        filters.append(made)
    if not filters:
        return None
    headers[:] = [(n, v) for n, v in headers if n.lower() != b"content-length"]
    return filters[0] if len(filters) == 1 else Filters(filters)


def content_length(headers: list[Header]) -> int | None:
    """The response's Content-Length, when it has one valid value (what body steps decide from
    before any body arrives)."""
    values = [v for n, v in headers if n.lower() == b"content-length"]
    if len(values) != 1 or not values[0].strip().isdigit():
        return None
    return int(values[0])

"""HTTP calls a step makes on its own (forwardAuth asks its auth service), as values.

A step that calls out stays pure: it says what to send (`Call`) and decides from what came back
(`Reply`); the front's `Fetch` does the I/O (`Router.fetch`, through the gateway's transport).
`run_request_async` hands the fetch to the steps that wait, so every front calls out the same
way. A call that fails (no connection, no answer within `timeout`, an invalid or too large
answer) raises `FetchFailed`; what that means for the request is the step's decision.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import attrs

from kroute.pipeline.steps import Header


@attrs.frozen
class Call:
    """A request to `host`:`port` (TLS when `https`): `method`, the origin-form `target`,
    `headers` (Host included); at most `timeout` seconds until the whole answer, whose body may
    be at most `limit` bytes."""

    host: str
    port: int
    https: bool
    method: str
    target: str
    headers: tuple[Header, ...]
    timeout: float
    limit: int


@attrs.frozen
class Reply:
    """The answer: status, end-to-end headers, the whole body."""

    status: int
    headers: tuple[Header, ...]
    body: bytes


class FetchFailed(Exception):
    """The call got no usable answer; the message says why (for logs and explain)."""


Fetch = Callable[[Call], Awaitable[Reply]]

"""Sending a decided request through a transport, for `Router.forward` and its mirror copies.

Why here and not in each front: HttpServer, the ASGI gateway and the client side all forward
through `Router.forward`, so the tries a route's retry policy allows, its request timeout and
the reports to passive health are written once (FastGateway's exchanges make the same decisions
on asyncio timers, with the same `RetryPolicy` and `outcome_of`).

- `send`: the tries on the decision's pool (`send_with_retries`: safe retries on other
  endpoints), within the route's request timeout (HTTPRoute `timeouts.request`: 504 when it runs
  out before a response head), each try bounded by `timeouts.backendRequest`; the observer is
  told how the request was answered.
- `send_copy`: a RequestMirror copy to one endpoint of its backend's pool, no retry.
- `until_end`: a response that says when it is over (steps told of the request's end,
  `kroute.pipeline.run_end`: inFlightReq).
- `with_body`: a response as the route's body steps make it (`kroute.pipeline.body`): its body
  filtered, or replaced by an answer or an error page; `limited`: a request body counted
  against the route's limit (buffering's maxRequestBodyBytes).
"""

from __future__ import annotations

import random
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Sequence,
)

import anyio
import attrs

from kroute.errors import (
    Answered,
    KrouteError,
    NoHealthyEndpoint,
    UpstreamError,
    UpstreamTimeout,
)
from kroute.gateway.events import RequestRecord
from kroute.gateway.router.decisions import Decision, status_error
from kroute.pipeline.body import BodyFilter, Replace, RequestTooLarge
from kroute.pipeline.filters import MirrorCopy
from kroute.pipeline.steps import Answer
from kroute.pool.health import Outcome
from kroute.pool.pool import Pick, Pool
from kroute.streams import Wrapping
from kroute.transport.base import ForwardRequest, ForwardResponse, Headers, Target, Transport
from kroute.transport.retry import send_with_retries
from kroute.transport.retry_policy import RetryPolicy

#: Told how a request was answered: its decision, the status, its `time.perf_counter()` start.
Observe = Callable[[Decision, int, float], None]


def outcome_of(error: UpstreamError | int) -> Outcome:
    """What an attempt's failure, or its response status, tells passive health."""
    if isinstance(error, int):
        return Outcome.HTTP_5XX if error >= 500 else Outcome.SUCCESS
    if isinstance(error, UpstreamTimeout):
        return Outcome.TIMEOUT
    return Outcome.CONNECT_FAILURE if not error.request_sent else Outcome.RESET


async def send(
    transport: Transport,
    first: Decision,
    request: ForwardRequest,
    *,
    retry: RetryPolicy,
    clock: Callable[[], float],
    rng: random.Random,
    observe: Observe,
    record: RequestRecord | None = None,
) -> tuple[Decision, ForwardResponse]:
    """Send `request` where `first` says, retrying as `retry` allows (see the module
    docstring); the decision returned names the endpoint that answered. `record` (when
    observers want events) is told of each attempt and of the response's status."""
    started = time.perf_counter()
    policy = None if first.route is None else first.route.policy
    try:
        # The route's request timeout (HTTPRoute `timeouts.request`): every try and the
        # backoffs between them, until a response head; 504 when it runs out.
        with anyio.fail_after(None if policy is None else policy.request):
            decision, response = await _attempts(transport, first, request, retry, clock, rng,
                                                 record)  # fmt: skip
    except TimeoutError:
        observe(first, 504, started)
        raise UpstreamTimeout("request") from None
    except KrouteError as exc:
        observe(first, exc.status_hint, started)
        raise
    observe(decision, response.status, started)
    if record is not None:
        record.decision, record.origin_status = decision, response.status
    return decision, response


async def _attempts(
    transport: Transport, first: Decision, request: ForwardRequest, retry: RetryPolicy,
    clock: Callable[[], float], rng: random.Random, record: RequestRecord | None,
) -> tuple[Decision, ForwardResponse]:  # fmt: skip
    pool = first.pool
    if first.status != 200 or first.pick is None or pool is None:
        raise status_error(first)
    picks = {first.pick.endpoint.key: first.pick}

    open_keys: set[tuple[str, int]] = set()  # begun, not yet ended

    def pick(tried: Sequence[Target]) -> Target | None:
        if not tried:
            chosen: Pick | None = first.pick
        else:
            chosen = pool.pick(now=clock(), rng=rng, exclude=[(t.host, t.port) for t in tried])
        if chosen is None:
            return None
        picks[chosen.endpoint.key] = chosen
        pool.begin(chosen.endpoint.key)
        open_keys.add(chosen.endpoint.key)
        if record is not None:
            record.attempt(chosen.endpoint.address, chosen.endpoint.port)
        return Target(chosen.endpoint.address, chosen.endpoint.port)

    def report(target: Target, outcome: UpstreamError | int) -> None:
        key = (target.host, target.port)
        open_keys.discard(key)
        pool.end(key, outcome_of(outcome), now=clock())
        if record is not None:
            record.attempted(outcome)

    policy = first.route.policy if first.route is not None else None
    try:
        response, target = await send_with_retries(
            transport, request, pick, policy=retry, now=clock, report=report,
            attempt_timeout=None if policy is None else policy.backend_request,
        )  # fmt: skip
    except BaseException:
        for key in open_keys:  # cancelled (the client went away, a timeout): no verdict
            pool.abandon(key)
        raise
    return attrs.evolve(first, pick=picks[(target.host, target.port)]), response


async def send_copy(
    transport: Transport,
    copy: MirrorCopy,
    pool: Pool | None,
    *,
    clock: Callable[[], float],
    rng: random.Random,
) -> None:
    """One copy to one endpoint of `pool` (its backend's; None: none kept), no retry; the
    response is read and discarded, and the attempt reported to the pool's passive health."""
    pick = None if pool is None else pool.pick(now=clock(), rng=rng)
    if pool is None or pick is None:
        raise NoHealthyEndpoint(f"{copy.step.backend} has no usable endpoint")
    key = pick.endpoint.key
    pool.begin(key)
    try:
        target = Target(pick.endpoint.address, pick.endpoint.port)
        response = await transport.send(target, ForwardRequest(
            copy.method, copy.target, list(copy.headers)))  # fmt: skip
        async for _ in response.body:
            pass
    except UpstreamError as exc:
        pool.end(key, outcome_of(exc), now=clock())
        raise
    except BaseException:
        pool.abandon(key)
        raise
    pool.end(key, outcome_of(response.status), now=clock())


def until_end(response: ForwardResponse, end: Callable[[], None]) -> ForwardResponse:
    """`response`, calling `end` once when it is over: its body read to the end or failed, or
    closed by the front (HttpServer always closes it; the ASGI gateway reads it to the end or
    closes it); after a 101, when the upgraded stream is closed (HttpServer's pipe does)."""
    ended = False

    def once() -> None:
        nonlocal ended
        if not ended:
            ended = True
            end()

    body, close = response.body, response._close

    async def relayed() -> AsyncIterator[bytes]:
        try:
            async for chunk in body:
                yield chunk
        finally:
            once()

    async def closed() -> None:
        once()
        if close is not None:
            await close()

    upgraded = response.upgraded
    if upgraded is not None:
        upgraded = _Ending(upgraded, once)
    return attrs.evolve(response, body=relayed(), close=closed, upgraded=upgraded)


async def with_body(
    response: ForwardResponse,
    made: BodyFilter | Answer | Replace,
    page: Callable[[Replace], Awaitable[tuple[Headers, bytes]]],
) -> ForwardResponse:
    """`response` as a body step made it (`kroute.pipeline.body.run_body`, its head already
    edited): replaced by an Answer (raised as Answered) or by the error page `page` fetches
    (with the original status), the backend's body discarded unread; or its body through the
    filter, the head held until the filter is ready (at most what the filter holds)."""
    if isinstance(made, Answer):
        await response.aclose()
        raise Answered(made.status, made.reason, made.headers, made.body)
    if isinstance(made, Replace):
        await response.aclose()
        headers, body = await page(made)
        return ForwardResponse(made.status, b"", headers, _one(body))
    rest, first, ended = response.body, b"", False
    try:
        while not made.ready:
            try:
                chunk = await anext(rest)
            except StopAsyncIteration:
                first, ended = first + made.end(), True
                break
            first += made.feed(chunk)
    except BaseException:
        await response.aclose()
        raise

    async def filtered() -> AsyncIterator[bytes]:
        yield first
        if ended:
            return
        async for chunk in rest:
            yield made.feed(chunk)
        yield made.end()

    return attrs.evolve(response, body=filtered())


async def _one(body: bytes) -> AsyncIterator[bytes]:
    if body:
        yield body


def limited(body: AsyncIterable[bytes], limit: int) -> AsyncIterator[bytes]:
    """A request body that raises RequestTooLarge (413) once more than `limit` bytes came."""

    async def counted() -> AsyncIterator[bytes]:
        seen = 0
        try:
            async for chunk in body:
                seen += len(chunk)
                if seen > limit:
                    raise RequestTooLarge(limit)
                yield chunk
        finally:
            if isinstance(body, AsyncGenerator):  # (the front's reader: closed now, not by gc)
                await body.aclose()

    return counted()


class _Ending(Wrapping):
    """An upgraded stream that calls `end` when it is closed."""

    def __init__(self, stream: anyio.abc.ByteStream, end: Callable[[], None]) -> None:
        super().__init__(stream)
        self.end = end

    async def aclose(self) -> None:
        self.end()
        await self.stream.aclose()

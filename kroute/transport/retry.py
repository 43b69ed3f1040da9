"""Send with retries, as a `RetryPolicy` allows: to another endpoint each time, only when safe,
up to its attempts, within its budget, `backoff` apart.

Routing-agnostic: `pick(tried)` chooses the next endpoint, excluding those already tried (the
gateway passes its pool's pick with `exclude`). A failure before the response head is retried,
and so is a response whose status is one of the policy's `codes` (it is closed unread; nothing
of it reaches the caller); once a head is returned, the response is the caller's. `report(target,
outcome)` is called after every attempt with its error or its response status, so that passive
health learns from each one. `attempt_timeout` bounds each attempt until its response head (the
Gateway API's `backendRequest`); an attempt that runs out fails with UpstreamTimeout and is
retried like any other failure.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import anyio

from kroute.errors import NoHealthyEndpoint, UpstreamError, UpstreamTimeout
from kroute.transport.base import ForwardRequest, ForwardResponse, Target, Transport
from kroute.transport.retry_policy import RetryPolicy

Pick = Callable[[Sequence[Target]], Target | None]
#: An attempt's outcome: its error, or the status of its response head.
Report = Callable[[Target, UpstreamError | int], None]


async def send_with_retries(
    transport: Transport,
    request: ForwardRequest,
    pick: Pick,
    *,
    policy: RetryPolicy,
    now: Callable[[], float],
    report: Report | None = None,
    attempt_timeout: float | None = None,
) -> tuple[ForwardResponse, Target]:
    """The response and the endpoint that gave it; the last error when every try failed."""
    tried: list[Target] = []
    last: UpstreamError | None = None
    policy.budget.request(now())
    target = pick(tried)
    while True:
        if target is None:
            if last is not None:
                raise last  # every endpoint was tried: the last failure says why
            raise NoHealthyEndpoint("no endpoint to send the request to")
        tried.append(target)
        try:
            response = await _attempt(transport, target, request, attempt_timeout)
        except UpstreamError as error:
            if report is not None:
                report(target, error)
            last = error
            if not policy.again(request.method, replayable=request.replayable,
                                sent=error.request_sent, tried=len(tried), now=now()):  # fmt: skip
                raise
            target = await _next(pick, tried, policy)
            continue
        if report is not None:
            report(target, response.status)
        if policy.again_on_status(response.status, request.method, replayable=request.replayable,
                                  tried=len(tried), now=now()):  # fmt: skip
            following = pick(tried)
            if following is not None:  # (else this response is the answer)
                await response.aclose()
                if policy.backoff:
                    await anyio.sleep(policy.wait(len(tried)))
                target = following
                continue
        return response, target


async def _attempt(
    transport: Transport, target: Target, request: ForwardRequest, timeout: float | None
) -> ForwardResponse:
    try:
        with anyio.fail_after(timeout):
            return await transport.send(target, request)
    except TimeoutError:
        # (Cancelled somewhere in the send: bytes may have gone out.)
        raise UpstreamTimeout("attempt", endpoint=str(target), request_sent=True) from None


async def _next(pick: Pick, tried: Sequence[Target], policy: RetryPolicy) -> Target | None:
    """The endpoint for the next try, once the backoff has passed."""
    following = pick(tried)
    if following is not None and policy.backoff:
        await anyio.sleep(policy.wait(len(tried)))
    return following

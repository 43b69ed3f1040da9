"""Send with retries, as a `RetryPolicy` allows: to another endpoint each time, only when safe,
up to its attempts, within its budget.

Routing-agnostic: `pick(tried)` chooses the next endpoint, excluding those already tried (the
gateway passes its pool's pick with `exclude`). Only failures before the response head are
retried; once a head has arrived the response is the caller's. `report(target, error)` is called
after every attempt (error None on success), so that passive health learns from each one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from kroute.errors import NoHealthyEndpoint, UpstreamError
from kroute.transport.base import ForwardRequest, ForwardResponse, Target, Transport
from kroute.transport.retry_policy import RetryPolicy

Pick = Callable[[Sequence[Target]], Target | None]
Report = Callable[[Target, UpstreamError | None], None]


async def send_with_retries(
    transport: Transport,
    request: ForwardRequest,
    pick: Pick,
    *,
    policy: RetryPolicy,
    now: Callable[[], float],
    report: Report | None = None,
) -> tuple[ForwardResponse, Target]:
    """The response and the endpoint that gave it; the last error when every try failed."""
    tried: list[Target] = []
    last: UpstreamError | None = None
    policy.budget.request(now())
    while True:
        target = pick(tried)
        if target is None:
            if last is not None:
                raise last  # every endpoint was tried: the last failure says why
            raise NoHealthyEndpoint("no endpoint to send the request to")
        try:
            response = await transport.send(target, request)
        except UpstreamError as error:
            if report is not None:
                report(target, error)
            tried.append(target)
            last = error
            if not policy.again(request.method, replayable=request.replayable,
                                sent=error.request_sent, tried=len(tried), now=now()):  # fmt: skip
                raise
            continue
        if report is not None:
            report(target, None)
        return response, target

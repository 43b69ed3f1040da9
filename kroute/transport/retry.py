"""Send with retries: to another endpoint each time, only when safe, within a budget.

Routing-agnostic: `pick(tried)` chooses the next endpoint, excluding those already tried (the
gateway passes its pool's pick with `exclude`). Only failures before the response head are
retried; once a head has arrived the response is the caller's. `report(target, error)` is called
after every attempt (error None on success), so that passive health learns from each one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from kroute.errors import NoHealthyEndpoint, UpstreamError
from kroute.transport.base import ForwardRequest, ForwardResponse, Target, Transport
from kroute.transport.proxy import RetryBudget, retry_safe

Pick = Callable[[Sequence[Target]], Target | None]
Report = Callable[[Target, UpstreamError | None], None]


async def send_with_retries(
    transport: Transport,
    request: ForwardRequest,
    pick: Pick,
    *,
    budget: RetryBudget,
    now: Callable[[], float],
    attempts: int = 3,
    report: Report | None = None,
) -> tuple[ForwardResponse, Target]:
    """The response and the endpoint that gave it; the last error when every try failed."""
    tried: list[Target] = []
    last: UpstreamError | None = None
    budget.request(now())
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
            if (
                len(tried) >= attempts
                or not retry_safe(request.method, replayable=request.replayable, error=error)
                or not budget.try_retry(now())
            ):
                raise
            continue
        if report is not None:
            report(target, None)
        return response, target

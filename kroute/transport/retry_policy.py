"""RetryPolicy: the one place that decides whether a failed attempt is tried again, elsewhere.

Every front asks it: FastGateway (`Exchange.failed`) and `send_with_retries` (HttpServer, the
ASGI gateway, the client side), so they cannot drift. (They had: one GET to a Service whose 8
endpoints all refused was tried on 8 endpoints by FastGateway and on 3 by the others.)

What it decides, after a failure before the response head:

- safety: a request none of whose bytes can have reached the endpoint may always go elsewhere;
  once they may have, only an idempotent method whose body can be sent again (`replay_safe`,
  RFC 9110 section 9.2.2);
- the cap: `attempts` tries in all, the first one included;
- the budget: each retry is taken from `budget` (a `RetryBudget`, shared by every request the
  policy serves), so that retries cannot multiply an overload;
- a different endpoint each time: the caller picks among the endpoints not tried yet; when
  none is left, the last failure answers.

Not a retry: a reused keep-alive connection that its endpoint had closed while idle fails
before any response byte; the request goes once more on a fresh connection to the same
endpoint when `replay_safe` allows it, counted neither as an attempt nor against the budget
(`kroute.transport.base.after_stale` in PooledTransport's engines; FastGateway likewise).

After a response head whose status is one of `codes` (Gateway API HTTPRoute rule `retry.codes`):
the whole request reached the endpoint, so only when `replay_safe`, under the same cap and
budget, and only while nothing of that response went to the client (the caller discards it and
closes its connection). `backoff` is the least time between tries; the caller waits it,
growing by `multiplier` after each retry (`wait`: Traefik's retry middleware backs off
exponentially, kroute's HTTPRoute `retry.backoff` is constant, multiplier 1).

Pure: values in, a yes or no out (the budget's counters are its only state); time is passed in.
Per-route settings (HTTPRoute rule `retry`, whose `attempts` counts retries, so `attempts + 1`
here) make a RetryPolicy per route, made by the Router with `attrs.evolve` from its own so that
every route shares its budget (`Router.retry_for`).
"""

from __future__ import annotations

import attrs

from kroute.transport.proxy import RetryBudget, replay_safe


@attrs.frozen
class RetryPolicy:
    """How many tries a request gets and when another one is allowed (see the module)."""

    #: Tries in all, the first included (1: never retry).
    attempts: int = attrs.field(default=3, validator=attrs.validators.ge(1))
    #: Shared state rather than a setting, so not part of what makes two policies equal.
    budget: RetryBudget = attrs.field(factory=RetryBudget, eq=False)
    #: Response statuses that are tried again elsewhere (none by default).
    codes: frozenset[int] = frozenset()
    #: Seconds to wait before each retry.
    backoff: float = attrs.field(default=0.0, validator=attrs.validators.ge(0.0))
    #: Each retry waits `multiplier` times longer than the one before.
    multiplier: float = attrs.field(default=1.0, validator=attrs.validators.ge(1.0))

    def wait(self, tried: int) -> float:
        """Seconds to wait before the retry that follows `tried` attempts (1: the first)."""
        return self.backoff * self.multiplier ** max(tried - 1, 0) if self.backoff else 0.0

    def again(self, method: str, *, replayable: bool, sent: bool, tried: int, now: float) -> bool:
        """After `tried` attempts, the last of which failed before the response head: whether
        to try another endpoint. `sent`: bytes of the request may have reached the endpoint.
        A yes takes a retry from the budget."""
        return (
            tried < self.attempts
            and (not sent or replay_safe(method, replayable=replayable))
            and self.budget.try_retry(now)
        )

    def again_on_status(
        self, status: int, method: str, *, replayable: bool, tried: int, now: float
    ) -> bool:
        """After `tried` attempts, the last of which answered `status` (its head only has
        arrived, none of it went to the client): whether to discard it and try another
        endpoint. A yes takes a retry from the budget."""
        return status in self.codes and self.again(
            method, replayable=replayable, sent=True, tried=tried, now=now
        )

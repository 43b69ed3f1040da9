"""Traefik's retry middleware (Traefik v3 docs, "HTTP Middlewares" > Retry; traefik
`pkg/middlewares/retry`) as the route's retry policy.

Traefik reissues a request when the backend "does not reply" (no response head), at most
`attempts` times in all, the first try included (`attempts < r.attempts` in its loop), and
stops at the first response whatever its status. With `initialInterval` it waits between tries,
exponentially: the first wait is `initialInterval` and each next one is multiplied by
2^(1/(attempts-1)), so that the waits stay below twice the first (Traefik's docs: "the maximum
interval is calculated as twice the initialInterval").

kroute does not retry in a step: every front retries in one place, the route's `RetryPolicy`
(`kroute.transport.retry_policy`, `Router.retry_for`). So the middleware compiles to a `Retry`
step that only carries its settings, and `apply` (run by `kroute.rules.compile` once the
Middlewares are resolved) folds it into the route's `RoutePolicy` and takes it out of the chain.
What the policy adds to Traefik's behaviour, on purpose:
- only where it is safe: a request whose bytes may have reached the endpoint is retried only
  when idempotent and replayable (RFC 9110 section 9.2.2; Traefik's recent `retryNonIdempotent`
  option defaults to the same); a request with a body is never sent twice;
- a different endpoint each time: when every endpoint has been tried, the last failure answers
  (Traefik may try the same server again);
- the Router's retry budget bounds retries under overload;
- no random jitter on the waits (Traefik's backoff library adds up to +-50 %).
Where the middleware sits among a route's others does not matter here (in Traefik it retries
the middlewares after it too): only the backend request is retried.

Precedence: a route has one retry policy. An HTTPRoute rule's own `retry` (Gateway API) wins
over a retry Middleware named by the same rule (the route's own field is the more specific),
and the compile notes say that the Middleware is not applied. Two retry Middlewares on one
route, or one in a backendRef's filters (a retry policy is the route's, not a backend's), fail
closed: the route answers 500 and says why.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from kroute.objects import FieldError
from kroute.pipeline.filters import Refuse
from kroute.pipeline.steps import Answer, Chain, Step, UpstreamRequest
from kroute.rules.middlewares.durations import duration
from kroute.rules.middlewares.paths import options_of
from kroute.rules.policy import RoutePolicy
from kroute.rules.route import Route

#: Newer Traefik fields (v3.5+): fail closed until kroute has them (ignoring them would retry
#: what the user said not to, or not retry what they asked for).
_NOT_YET = ("timeout", "status", "retryNonIdempotent", "disableRetryOnNetworkError",
            "maxRequestBodyBytes")  # fmt: skip
_MOST_ATTEMPTS = 100


@attrs.frozen
class Retry(Step):
    """A retry Middleware's settings, for `apply`: `attempts` tries in all, the first retry
    after `initial` seconds, each next one `multiplier` times longer."""

    declarative = True
    attempts: int = attrs.field(kw_only=True)
    initial: float = attrs.field(kw_only=True)

    @property
    def multiplier(self) -> float:
        return 2 ** (1 / (self.attempts - 1)) if self.attempts > 1 and self.initial else 1.0

    @property
    def touches(self) -> frozenset[bytes]:
        return frozenset()

    def request(self, request: UpstreamRequest) -> Answer | None:
        return None  # (never run: `apply` takes it out of the chain)


def retry(spec: Any, field: str) -> Step:
    options = options_of(spec, field, ("attempts", "initialInterval", *_NOT_YET))
    for name in _NOT_YET:
        if options.get(name) is not None:
            return Refuse(f"{field}.{name}", reason=f"retry.{name} is not supported by kroute "
                          "yet")  # fmt: skip
    attempts = options.get("attempts")
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts <= 0:
        # (Traefik: "incorrect (or empty) value for attempt")
        raise FieldError(f"{field}.attempts", "a number of tries above 0 is required")
    if attempts > _MOST_ATTEMPTS:
        raise FieldError(f"{field}.attempts", f"{attempts} is more than {_MOST_ATTEMPTS}")
    initial = 0.0
    if options.get("initialInterval") is not None:
        initial = duration(options["initialInterval"], f"{field}.initialInterval")
    return Retry(field, attempts=attempts, initial=initial)


def apply(routes: Sequence[Route]) -> tuple[list[Route], list[str]]:
    """The routes with their Retry steps folded into their policies (see the module), and the
    notes for Middlewares a rule's own `retry` overrides."""
    out: list[Route] = []
    notes: list[str] = []
    for route in routes:
        if not any(isinstance(s, Retry) for c in (route.chain, *route.backend_chains)
                   for s in c.steps):  # fmt: skip
            out.append(route)
            continue
        found = [s for s in route.chain.steps if isinstance(s, Retry)]
        steps: list[Step] = [s for s in route.chain.steps if not isinstance(s, Retry)]
        policy = route.policy
        if len(found) > 1:
            steps.append(Refuse(found[1].field, reason="a route has one retry policy: more "
                                "than one retry Middleware names it"))  # fmt: skip
        elif found and policy is not None and _retries(policy):
            notes.append(f"{route.name}: its rule's retry applies, not {found[0].label}")
        elif found:
            step = found[0]
            policy = attrs.evolve(policy or RoutePolicy(), retries=step.attempts - 1,
                                  backoff=step.initial, multiplier=step.multiplier)  # fmt: skip
        backends = tuple(_backend(c) for c in route.backend_chains)
        out.append(attrs.evolve(route, chain=Chain(tuple(steps)), backend_chains=backends,
                                policy=policy))  # fmt: skip
    return out, notes


def _retries(policy: RoutePolicy) -> bool:
    """The rule sets some of `retry` itself."""
    return policy.retries is not None or bool(policy.codes) or bool(policy.backoff)


def _backend(chain: Chain) -> Chain:
    if not any(isinstance(s, Retry) for s in chain.steps):
        return chain
    return Chain(tuple(Refuse(s.field, reason="a retry Middleware applies to a route, not to "
                              "one of its backends") if isinstance(s, Retry) else s
                       for s in chain.steps))  # fmt: skip

"""RoutePolicy: a route's timeouts and retry settings, and the HTTPRoute rule fields that make it.

Gateway API v1.6, HTTPRouteRule `timeouts` (HTTPRouteTimeouts) and `retry` (HTTPRouteRetry):

- `timeouts.request`: the whole request; when no response can be given within it the gateway
  "MUST return a timeout error" (504). "0s" disables it.
- `timeouts.backendRequest`: one attempt at a backend; no longer than `request` (the CRD's
  validation, unless `request` is "0s"). "0s" disables it.
- `retry.attempts`: how many times a backend request is retried (so `attempts + 1` tries);
  `retry.codes`: the response statuses to retry (400 to 599; 500, 502, 503 and 504 MUST be
  supported); `retry.backoff`: the least time between tries.

Durations are Gateway API Durations (GEP-2257): `^([0-9]{1,5}(h|m|s|ms)){1,4}$`, added up as
Go's `time.ParseDuration` does. A malformed value is a FieldError naming the field (the object
is rejected, as the API server's validation would have done); a field kroute does not know under
`timeouts` or `retry` fails the rule closed (a `Refuse` step), since ignoring it would change
what the route does.

The value is plain (rules import no transport): the Router turns it into the route's
`RetryPolicy` and deadlines, the same for every front.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import attrs

from kroute.objects import FieldError, as_int, as_list, as_map
from kroute.pipeline.filters import Refuse
from kroute.pipeline.steps import Chain

_DURATION = re.compile(r"([0-9]{1,5}(h|m|s|ms)){1,4}")
_PART = re.compile(r"([0-9]{1,5})(h|ms|m|s)")
_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_TIMEOUT_FIELDS = ("request", "backendRequest")
_RETRY_FIELDS = ("attempts", "codes", "backoff")
#: HTTPRouteRetryStatusCode: validation Minimum 400, Maximum 599.
_LOWEST, _HIGHEST = 400, 599


@attrs.frozen
class RoutePolicy:
    """Timeouts and retries of one route (seconds; None: not set, or "0s": no deadline)."""

    #: From when the request is forwarded until the response head, every try included.
    request: float | None = None
    #: One try at one endpoint, until its response head.
    backend_request: float | None = None
    #: Retries after the first try (None: the Router's own number).
    retries: int | None = None
    #: Response statuses after which the request is tried again elsewhere, when safe.
    codes: frozenset[int] = frozenset()
    #: The least time between tries.
    backoff: float = 0.0
    #: Each wait `multiplier` times the one before (a Traefik retry Middleware's exponential
    #: backoff, `kroute.rules.middlewares.retry`); 1 for HTTPRoute's constant `backoff`.
    multiplier: float = 1.0

    def to_json(self) -> dict[str, Any]:
        return {
            "request": self.request,
            "backend_request": self.backend_request,
            "retries": self.retries,
            "codes": sorted(self.codes),
            "backoff": self.backoff,
            "multiplier": self.multiplier,
        }


def parse_duration(value: Any, field: str) -> float:
    """A Gateway API Duration (GEP-2257) in seconds; FieldError when malformed."""
    if not isinstance(value, str) or _DURATION.fullmatch(value) is None:
        raise FieldError(
            field, f"{value!r} is not a Gateway API Duration (such as 10s, 500ms or 1m30s)"
        )
    return sum(int(number) * _SECONDS[unit] for number, unit in _PART.findall(value))


def rule_policy(rule: Mapping[str, Any], field: str) -> tuple[RoutePolicy | None, Chain]:
    """An HTTPRoute rule's `timeouts` and `retry` (None when it sets neither), and a Refuse
    step for each field under them that kroute does not know."""
    if rule.get("timeouts") is None and rule.get("retry") is None:
        return None, Chain()
    timeouts = as_map(rule.get("timeouts"), f"{field}.timeouts")
    retry = as_map(rule.get("retry"), f"{field}.retry")
    request = _timeout(timeouts, "request", field)
    backend_request = _timeout(timeouts, "backendRequest", field)
    if request is not None and backend_request is not None and backend_request > request:
        raise FieldError(
            f"{field}.timeouts.backendRequest",
            f"{timeouts['backendRequest']} is longer than timeouts.request "
            f"({timeouts['request']}), which covers it",
        )
    retries = None
    if retry.get("attempts") is not None:
        retries = as_int(retry["attempts"], f"{field}.retry.attempts", default=0, low=0,
                         high=1_000)  # fmt: skip
    codes = frozenset(
        as_int(code, f"{field}.retry.codes[{i}]", default=0, low=_LOWEST, high=_HIGHEST)
        for i, code in enumerate(as_list(retry.get("codes"), f"{field}.retry.codes"))
    )
    backoff = 0.0
    if retry.get("backoff") is not None:
        backoff = parse_duration(retry["backoff"], f"{field}.retry.backoff")
    policy = RoutePolicy(request, backend_request, retries, codes, backoff)
    known = {"timeouts": (timeouts, _TIMEOUT_FIELDS), "retry": (retry, _RETRY_FIELDS)}
    refused = [
        Refuse(f"{field}.{parent}.{name}", reason=f"{parent}.{name} is not supported by kroute")
        for parent, (given, names) in known.items()
        for name in given
        if name not in names
    ]
    return policy, Chain(tuple(refused))


def _timeout(timeouts: Mapping[str, Any], name: str, field: str) -> float | None:
    """A timeout in seconds; None when absent or zero (the spec: "0s" disables it)."""
    if timeouts.get(name) is None:
        return None
    return parse_duration(timeouts[name], f"{field}.timeouts.{name}") or None

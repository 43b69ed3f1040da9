"""When to order a certificate, when to renew it, and how to back off after failures (pure:
the time and the random draw are passed in).

- **Renewal** (Let's Encrypt's integration guide; certbot's and Traefik's default): when a
  third of the certificate's lifetime is left (30 days of 90, 2 of 6). Where the server offers
  ACME Renewal Information (RFC 9773), its suggested window wins: a time drawn uniformly in it
  (section 4.2: "select a uniform random time within the suggested window"), so that many
  certificates do not renew at one instant; a window whose end has passed means now.
- **Failures back off** exponentially, from `retry_initial` up to `retry_cap` (with jitter),
  so that a name that does not validate never costs more than a few orders an hour (Let's
  Encrypt allows 5 failed validations per account, name and hour), and never loops; a server's
  Retry-After (a rate limit) is obeyed when longer.
- **Errors that no retry fixes** (RFC 8555 section 6.7: `rejectedIdentifier`, as for a blocked
  domain; `unsupportedIdentifier`; `caa`; a bad contact) stop the attempts for that set of
  names: it is reported, and tried again only when the objects ask for another set or the
  gateway restarts.
"""

from __future__ import annotations

import datetime
import enum

import attrs

#: RFC 8555 section 6.7 problem types (after `urn:ietf:params:acme:error:`) that retrying the
#: same order cannot fix.
PERMANENT = frozenset({"rejectedIdentifier", "unsupportedIdentifier", "caa", "invalidContact",
                       "unsupportedContact", "externalAccountRequired"})  # fmt: skip


@attrs.frozen
class RenewalPolicy:
    """Renew with `fraction_left` of the lifetime left (without ARI); back off from
    `retry_initial` seconds, times `retry_factor` per failure, up to `retry_cap`."""

    fraction_left: float = 1 / 3
    retry_initial: float = 300.0
    retry_factor: float = 2.0
    retry_cap: float = 86_400.0
    #: Up to this share of a delay is added at random (many gateways do not retry together).
    jitter: float = 0.1

    def __attrs_post_init__(self) -> None:
        if not 0 < self.fraction_left < 1:
            raise ValueError(f"fraction_left must be between 0 and 1 (got {self.fraction_left})")
        if not 0 < self.retry_initial <= self.retry_cap or self.retry_factor < 1:
            raise ValueError("retries need 0 < retry_initial <= retry_cap and retry_factor >= 1")

    def retry_delay(self, failures: int, draw: float) -> float:
        """Seconds before the next attempt after `failures` (>= 1) in a row; `draw` in [0, 1)."""
        base = min(self.retry_cap, self.retry_initial * self.retry_factor ** (failures - 1))
        return min(self.retry_cap, base * (1.0 + self.jitter * draw))


def renewal_time(
    not_before: datetime.datetime,
    not_after: datetime.datetime,
    policy: RenewalPolicy,
    *,
    window: tuple[datetime.datetime, datetime.datetime] | None = None,
    draw: float = 0.5,
) -> datetime.datetime:
    """When to renew a certificate valid from `not_before` to `not_after`: in the server's
    renewal `window` (RFC 9773 suggestedWindow, at `draw` of the way through), else with
    `policy.fraction_left` of its lifetime left."""
    if window is not None and window[0] <= window[1]:
        start, end = window
        return start + (end - start) * draw
    return not_after - (not_after - not_before) * policy.fraction_left


@attrs.frozen
class Attempts:
    """The failures in a row of one certificate's orders, and when to try next."""

    failures: int = 0
    last_error: str | None = None
    retry_at: datetime.datetime | None = None
    #: An error no retry fixes: no attempt until the names asked for change.
    permanent: bool = False

    def failed(
        self,
        now: datetime.datetime,
        problem: str | None,
        detail: str,
        policy: RenewalPolicy,
        draw: float,
        retry_after: float | None = None,
    ) -> Attempts:
        """After a failed order (`problem`: its RFC 8555 error type, None for another cause)."""
        failures = self.failures + 1
        if problem in PERMANENT:
            return Attempts(failures, detail, None, permanent=True)
        delay = policy.retry_delay(failures, draw)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return Attempts(failures, detail, now + datetime.timedelta(seconds=delay))

    def to_json(self) -> dict[str, object]:
        return {"failures": self.failures, "last_error": self.last_error,
                "retry_at": None if self.retry_at is None else self.retry_at.isoformat(),
                "permanent": self.permanent}  # fmt: skip


class Action(enum.Enum):
    ISSUE = "issue"  # nothing stored covers the names
    RENEW = "renew"  # stored, renewal due
    WAIT = "wait"  # nothing to do before `at`
    GIVE_UP = "give up"  # a permanent failure: reported, not retried


@attrs.frozen
class Next:
    action: Action
    at: datetime.datetime | None = None  # WAIT: until when


def next_step(
    now: datetime.datetime,
    renew_at: datetime.datetime | None,
    attempts: Attempts,
) -> Next:
    """What to do for one certificate now: `renew_at` is the stored certificate's renewal
    time (None: none stored, or not for these names)."""
    if attempts.permanent:
        return Next(Action.GIVE_UP)
    if attempts.retry_at is not None and now < attempts.retry_at:
        return Next(Action.WAIT, attempts.retry_at)
    if renew_at is None:
        return Next(Action.ISSUE)
    if now >= renew_at:
        return Next(Action.RENEW)
    return Next(Action.WAIT, renew_at)

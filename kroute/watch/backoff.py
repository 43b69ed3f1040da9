"""Retry delays for watch reconnects: exponential with jitter, reset after a healthy spell.

client-go's reflector (`wait.NewExponentialBackoffManager(800ms, 30s, 2m, 2.0, 1.0)`): the first
delay is 0.8 s, each failure doubles it up to 30 s, a random jitter of up to 100% is added so
that many clients do not reconnect together, and two minutes without failure start over.
Pure: time and randomness are passed in.
"""

from __future__ import annotations

import random

import attrs


@attrs.define
class Backoff:
    initial: float = 0.8
    factor: float = 2.0
    cap: float = 30.0
    reset_after: float = 120.0
    jitter: float = 1.0
    _failures: int = 0
    _last_failure: float | None = None

    def failure(self, now: float, rng: random.Random) -> float:
        """Record a failure at `now`; the delay before the next attempt."""
        if self._last_failure is not None and now - self._last_failure > self.reset_after:
            self._failures = 0
        self._last_failure = now
        base = min(self.cap, self.initial * self.factor**self._failures)
        self._failures += 1
        return base * (1.0 + self.jitter * rng.random())

    @property
    def failures(self) -> int:
        return self._failures

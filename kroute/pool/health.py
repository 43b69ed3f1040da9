"""Endpoint health: passive outlier ejection and active probe thresholds, as pure state machines.

Passive (Envoy's outlier detection): consecutive 5xx responses, or consecutive gateway failures
(connection refused or reset, timeouts), eject an endpoint for `base_ejection_time` times the
number of times it has been ejected, capped at `max_ejection_time`; it comes back by itself when
that time is up. The multiplier decays by one for every `base_ejection_time` spent back in
rotation. At most `max_ejection_percent` of a pool is ejected at once (at least one endpoint may
always be).

Active (kubelet-style probes): an HTTP request every `interval`; `fall` consecutive failures take
an endpoint out of rotation, `rise` consecutive successes bring it back. The defaults are
kubelet's (period 10 s, timeout 1 s, success threshold 1, failure threshold 3, 200-399 is
success).

Time is a float of seconds passed in by the caller (`now`); nothing here reads a clock.
"""

from __future__ import annotations

import collections
import enum
from collections.abc import Mapping
from typing import Any

import attrs


class Outcome(enum.Enum):
    """How a forwarded request ended, as passive health sees it."""

    SUCCESS = "success"
    HTTP_5XX = "5xx"
    CONNECT_FAILURE = "connect failure"
    TIMEOUT = "timeout"
    RESET = "reset"

    @property
    def gateway_failure(self) -> bool:
        return self in (Outcome.CONNECT_FAILURE, Outcome.TIMEOUT, Outcome.RESET)


@attrs.frozen
class PassiveHealth:
    """Outlier ejection settings (Envoy `outlier_detection` names and defaults, except the cap)."""

    enabled: bool = True
    consecutive_5xx: int = 5
    consecutive_gateway_failures: int = 3
    base_ejection_time: float = 30.0
    max_ejection_time: float = 300.0
    #: Envoy defaults to 10%; for Kubernetes pools of two or three pods that would never eject
    #: anything but the "at least one" rule, so kroute defaults to half the pool.
    max_ejection_percent: int = 50

    def cap(self, endpoints: int) -> int:
        """How many endpoints of a pool of `endpoints` may be ejected at once."""
        return max(1, endpoints * self.max_ejection_percent // 100)


@attrs.frozen
class ActiveHealth:
    """HTTP probe settings; the defaults are kubelet's probe defaults."""

    path: str = "/"
    method: str = "GET"
    #: Inclusive status ranges that count as healthy.
    expected: tuple[tuple[int, int], ...] = ((200, 399),)
    interval: float = 10.0
    timeout: float = 1.0
    rise: int = 1
    fall: int = 3
    #: Host header; None sends the endpoint's address.
    host: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    #: Port to probe; None probes the endpoint's own port.
    port: int | None = None

    def healthy_status(self, status: int) -> bool:
        return any(low <= status <= high for low, high in self.expected)


@attrs.frozen
class HealthConfig:
    """Health settings of one pool. `panic`: what happens when no endpoint is in rotation.

    With `panic=True` (the default, Envoy's panic routing) the pool then ignores health and
    spreads traffic over every endpoint it has, since the probe may be what is broken; with
    `panic=False` it answers "no healthy endpoint" (a 503).
    """

    passive: PassiveHealth = PassiveHealth()
    active: ActiveHealth | None = None
    panic: bool = True


@attrs.define
class EndpointHealth:
    """The health state of one endpoint; survives pool updates and table rebuilds."""

    since: float
    reason: str = "new"
    probed_healthy: bool = True
    probe_successes: int = 0
    probe_failures: int = 0
    last_probe: str = ""
    streak_5xx: int = 0
    streak_gateway: int = 0  # (gateway failures are 5xx too: never above streak_5xx)
    ejections: int = 0
    ejected_until: float | None = None
    readmitted_at: float | None = None
    recent_failures: collections.deque[tuple[float, str]] = attrs.field(
        factory=lambda: collections.deque(maxlen=10)
    )
    #: The last times it left or rejoined the rotation: (when, state after, reason), for the
    #: dashboard (a bounded ring: a flapping endpoint keeps only its latest).
    transitions: collections.deque[tuple[float, str, str]] = attrs.field(
        factory=lambda: collections.deque(maxlen=10)
    )

    @property
    def in_rotation(self) -> bool:
        return self.probed_healthy and self.ejected_until is None

    @property
    def state(self) -> str:
        """As the admin API says it: up, ejected (passive health) or unhealthy (probes)."""
        if self.ejected_until is not None:
            return "ejected"
        return "up" if self.probed_healthy else "unhealthy"

    def _set(self, reason: str, now: float) -> None:
        self.reason = reason
        self.since = now

    def probe(self, ok: bool, detail: str, now: float, config: ActiveHealth) -> bool:
        """Record a probe result; True when that changed whether the endpoint is in rotation."""
        before = self.in_rotation
        self.last_probe = detail
        if ok:
            self.probe_successes += 1
            self.probe_failures = 0
            if not self.probed_healthy and self.probe_successes >= config.rise:
                self.probed_healthy = True
                self._set(f"probe passed {self.probe_successes} time(s): {detail}", now)
        else:
            self.probe_failures += 1
            self.probe_successes = 0
            self.recent_failures.append((now, f"probe: {detail}"))
            if self.probed_healthy and self.probe_failures >= config.fall:
                self.probed_healthy = False
                self._set(f"probe failed {self.probe_failures} time(s): {detail}", now)
        return before != self.in_rotation

    def outcome(
        self, outcome: Outcome, now: float, config: PassiveHealth, *, may_eject: bool
    ) -> bool:
        """Record how a request ended; True when the endpoint was ejected by it."""
        if outcome is Outcome.SUCCESS:
            self.streak_5xx = self.streak_gateway = 0
            return False
        self.recent_failures.append((now, outcome.value))
        self.streak_5xx += 1
        self.streak_gateway = self.streak_gateway + 1 if outcome.gateway_failure else 0
        if not config.enabled or self.ejected_until is not None:
            return False
        tripped = self.streak_5xx >= config.consecutive_5xx or (
            self.streak_gateway >= config.consecutive_gateway_failures
        )
        if not tripped or not may_eject:
            return False
        if self.readmitted_at is not None and config.base_ejection_time > 0:
            decay = int((now - self.readmitted_at) // config.base_ejection_time)
            self.ejections = max(0, self.ejections - decay)
        self.ejections += 1
        duration = min(config.base_ejection_time * self.ejections, config.max_ejection_time)
        self.ejected_until = now + duration
        streak = (
            self.streak_gateway
            if self.streak_gateway >= config.consecutive_gateway_failures
            else self.streak_5xx
        )
        self._set(f"ejected for {duration:g}s after {streak} consecutive {outcome.value}", now)
        self.streak_5xx = self.streak_gateway = 0
        return True

    def readmit(self, now: float, reason: str = "ejection time over") -> None:
        """Back in rotation (if probes agree)."""
        self.ejected_until = None
        self.readmitted_at = now
        self._set(reason, now)


ANNOTATION_PREFIX = "kroute.dev/"

_ANNOTATIONS: dict[str, tuple[str, str, type]] = {
    # annotation suffix: (section, field, type)
    "health-check-path": ("active", "path", str),
    "health-check-method": ("active", "method", str),
    "health-check-interval": ("active", "interval", float),
    "health-check-timeout": ("active", "timeout", float),
    "health-check-rise": ("active", "rise", int),
    "health-check-fall": ("active", "fall", int),
    "health-check-host": ("active", "host", str),
    "health-check-port": ("active", "port", int),
    "health-check-status": ("active", "expected", tuple),
    "outlier-consecutive-5xx": ("passive", "consecutive_5xx", int),
    "outlier-consecutive-gateway-failures": ("passive", "consecutive_gateway_failures", int),
    "outlier-base-ejection-time": ("passive", "base_ejection_time", float),
    "outlier-max-ejection-time": ("passive", "max_ejection_time", float),
    "outlier-max-ejection-percent": ("passive", "max_ejection_percent", int),
    "outlier-detection": ("passive", "enabled", bool),
    "panic-routing": ("pool", "panic", bool),
}


def _parse(raw: str, kind: type) -> Any:
    if kind is bool:
        if raw.lower() not in ("true", "false"):
            raise ValueError("expected true or false")
        return raw.lower() == "true"
    if kind is tuple:  # "200-399,418"
        ranges = []
        for part in raw.split(","):
            low, _, high = part.strip().partition("-")
            ranges.append((int(low), int(high or low)))
        return tuple(ranges)
    value = kind(raw)
    if isinstance(value, int | float) and value < 0:
        raise ValueError("must not be negative")
    return value


def health_from_annotations(
    annotations: Mapping[str, Any], base: HealthConfig = HealthConfig()
) -> tuple[HealthConfig, list[str]]:
    """Health settings from a Service's `kroute.dev/...` annotations, and what was wrong.

    A bad value is reported and leaves that setting at its default; active probes are on when
    `kroute.dev/health-check-path` is set.
    """
    changes: dict[str, dict[str, Any]] = {"active": {}, "passive": {}, "pool": {}}
    problems = []
    for name, raw in annotations.items():
        if not name.startswith(ANNOTATION_PREFIX):
            continue
        spec = _ANNOTATIONS.get(name[len(ANNOTATION_PREFIX) :])
        if spec is None:
            problems.append(f"{name}: unknown kroute annotation")
            continue
        section, field, kind = spec
        try:
            changes[section][field] = _parse(str(raw), kind)
        except ValueError as exc:
            problems.append(f"{name}: {raw!r} is not valid ({exc})")
    active = base.active
    if changes["active"]:
        if active is None and "path" not in changes["active"]:
            problems.append(f"{ANNOTATION_PREFIX}health-check-path is required for active checks")
        else:
            active = attrs.evolve(active or ActiveHealth(), **changes["active"])
    passive = attrs.evolve(base.passive, **changes["passive"])
    return attrs.evolve(base, passive=passive, active=active, **changes["pool"]), problems

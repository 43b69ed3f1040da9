"""Durations as Traefik reads them (its `types.Duration`): a number of seconds (an integer, or
a string of one), or a Go duration string (`time.ParseDuration`: `100ms`, `1.5s`, `1h30m`; the
units ns, us, µs, ms, s, m, h). Negative durations are refused: none of the fields that take
one (retry `initialInterval`, circuitBreaker's periods) means anything below zero.
"""

from __future__ import annotations

import re
from typing import Any

from kroute.objects import FieldError

_GO = re.compile(r"(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:ns|us|µs|μs|ms|s|m|h))+")
_PART = re.compile(r"([0-9]*\.?[0-9]*)(ns|us|µs|μs|ms|s|m|h)")
_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
            "h": 3600.0}  # fmt: skip
#: Longer than any period a gateway waits (and no float overflow from a thousand digits).
_LONGEST = 10 * 365 * 86400.0


def duration(value: Any, field: str) -> float:
    """Seconds; FieldError naming `field` when `value` is not a duration Traefik reads."""
    if isinstance(value, int) and not isinstance(value, bool):
        seconds = float(value) if abs(value) <= _LONGEST else _LONGEST + 1  # (no OverflowError)
    elif isinstance(value, str) and value.isascii() and value.isdigit():  # (not "¹")
        seconds = float(int(value)) if len(value) < 12 else _LONGEST + 1
    elif isinstance(value, str) and len(value) <= 64 and _GO.fullmatch(value):
        seconds = sum(float(n) * _SECONDS[u] for n, u in _PART.findall(value))
    else:
        raise FieldError(field, f"{value!r} is not a duration (seconds, or such as 100ms, 1.5s, "
                         "1m30s)")  # fmt: skip
    if not 0 <= seconds <= _LONGEST:
        raise FieldError(field, f"{value!r} is out of range (0 to ten years)")
    return seconds

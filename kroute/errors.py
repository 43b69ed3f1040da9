"""The error hierarchy: every exception kroute raises on purpose derives from KrouteError.

Each class says whose fault it is, and carries `status_hint`, the HTTP status a gateway answers
when the error reaches a client (h11's habit, see h11/_util.py).
"""

from __future__ import annotations


class KrouteError(Exception):
    """Root of kroute's own errors."""

    status_hint: int = 500


class ConfigError(KrouteError):
    """Configuration given to kroute is wrong: a manifest, an object, a rule."""


class ManifestError(ConfigError):
    """A manifest file or text cannot be read or parsed; names the file and the reason."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


class RuleSyntaxError(ConfigError):
    """A Traefik rule expression does not parse; `position` is the 0-based character offset."""

    def __init__(self, rule: str, position: int, reason: str) -> None:
        super().__init__(f"{reason} at character {position} of rule {rule!r}")
        self.rule = rule
        self.position = position
        self.reason = reason


class InvalidObject(ConfigError):
    """One Kubernetes object was rejected; every other object still routes.

    `obj` names the object ("Ingress default/web"), `field` the offending field path
    ("spec.rules[0].http.paths[1].pathType").
    """

    def __init__(self, obj: str, field: str, reason: str, *, origin: str = "") -> None:
        where = f"{origin}: " if origin else ""
        super().__init__(f"{where}{obj}: {field}: {reason}")
        self.obj = obj
        self.field = field
        self.reason = reason
        self.origin = origin


class InvalidRequest(KrouteError):
    """A request cannot be routed because it is malformed (bad host, bad client address)."""

    status_hint = 400


class NoRoute(KrouteError):
    """No route matches the request."""

    status_hint = 404

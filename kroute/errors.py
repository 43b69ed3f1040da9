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


class Redirected(KrouteError):
    """Not a failure: the route answers with a redirect to `location` (status 301/302/308)."""

    def __init__(self, location: str, status: int) -> None:
        super().__init__(f"redirect to {location}")
        self.location = location
        self.status_hint = status


class Answered(KrouteError):
    """Not a failure of the gateway: a step of the route answered the request itself (a
    refusal that fails closed, a user's check). `headers` and `body` are the response; the
    message (`reason`) is for logs and explain, never for the client."""

    def __init__(
        self, status: int, reason: str, headers: tuple[tuple[bytes, bytes], ...] = (),
        body: bytes = b"",
    ) -> None:  # fmt: skip
        super().__init__(reason)
        self.status_hint = status
        self.headers = headers
        self.body = body


class NoRoute(KrouteError):
    """No route matches the request."""

    status_hint = 404


class InvalidBackend(KrouteError):
    """A route chose a backend reference that cannot be used (Gateway API: 500 for its share)."""

    status_hint = 500


class NoHealthyEndpoint(KrouteError):
    """A route matched, but its backend has no endpoint to send the request to."""

    status_hint = 503


class UpstreamError(KrouteError):
    """Forwarding to an endpoint failed. `request_sent` says whether any byte of the request
    may have reached it (what decides whether a retry is safe); `endpoint` names it."""

    status_hint = 502

    def __init__(self, message: str, *, endpoint: str = "", request_sent: bool = True) -> None:
        super().__init__(f"{endpoint}: {message}" if endpoint else message)
        self.endpoint = endpoint
        self.request_sent = request_sent


class UpstreamConnectError(UpstreamError):
    """No connection could be made (refused, unreachable): nothing was sent."""

    def __init__(self, message: str, *, endpoint: str = "") -> None:
        super().__init__(message, endpoint=endpoint, request_sent=False)


class UpstreamTimeout(UpstreamError):
    """A timeout: `phase` is "connect", "write", "read" or "pool" (waiting for a connection),
    or a route's own: "attempt" (one try, HTTPRoute `timeouts.backendRequest`) and "request"
    (every try, until the response head: `timeouts.request`)."""

    status_hint = 504

    def __init__(self, phase: str, *, endpoint: str = "", request_sent: bool = True) -> None:
        super().__init__(f"{phase} timeout", endpoint=endpoint, request_sent=request_sent)
        self.phase = phase
        if phase == "pool":
            self.status_hint = 503


class UpstreamProtocolError(UpstreamError):
    """The endpoint answered with something that is not valid HTTP/1.1 (never passed on)."""


class UpstreamClosed(UpstreamError):
    """The endpoint closed the connection before the response was complete."""

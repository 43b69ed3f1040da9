"""The admin app: readiness, liveness, the Router's state as JSON, metrics and a dashboard.

An HttpServer handler, served on its own listener (loopback unless told otherwise: it shows the
whole configuration and is not meant for the internet, as Traefik's API is not):

- `GET /live`: 200 while the process serves (a kubelet liveness probe);
- `GET /ready`: 200 only once every source has synced and a table built from them is
  published, else 503 (a readiness probe; the body says which kinds are not synced);
- `GET /api/routes`: routes in precedence order, what they match and where they send, and the
  objects that were rejected with the field and reason;
- `GET /api/middlewares`: each Traefik Middleware: namespace, name, type(s), the routes using
  it (directly or through chains), its error when invalid, what of it fails closed;
- `GET /api/services`: every pool with its endpoints, health state and the reason for it, and
  what became of RequestMirror copies (mirrored, dropped, failed, skipped, queued);
- `GET /api/sources`: per kind: synced, objects, lists, re-lists, reconnects, last error;
- `GET /api/certificates`: with TLS, each certificate (source Secret, subject, names,
  not-after) and what was wrong with the others;
- `GET /api/traffic`: the last minutes of traffic per route and per Service (request rate,
  5xx rate, latency) in time buckets, from the handler's `Traffic` (`traffic=False`: none,
  and a 404 here);
- `GET /api/acme`: with ACME (`kroute.acme`), each certificate the routes ask for: names,
  resolver, Secret, what is stored (issuer, validity), when it renews, the last ACME error;
- `GET /metrics`: Prometheus text (501 when prometheus-client is not installed);
- `GET /`: a dashboard page in the spirit of Traefik's UI, reading the JSON above (its script
  is `GET /dashboard.js`: no external asset).
"""

from __future__ import annotations

import json
import time
from importlib import resources
from typing import TYPE_CHECKING, Any

import attrs

from kroute.errors import InvalidObject
from kroute.gateway.counts import RequestCounts
from kroute.gateway.metrics import Metrics
from kroute.gateway.router import Router
from kroute.gateway.server import IncomingRequest, OutgoingResponse
from kroute.gateway.traffic import Traffic

if TYPE_CHECKING:
    from kroute.acme.manager import AcmeCertificates
    from kroute.tls.contexts import TlsCertificates

JSON = [(b"Content-Type", b"application/json"), (b"Cache-Control", b"no-store")]
TEXT = [(b"Content-Type", b"text/plain; charset=utf-8"), (b"Cache-Control", b"no-store")]
#: The dashboard's files (package data), by path, with their content types.
PAGES = {"/": ("dashboard.html", b"text/html; charset=utf-8"),
         "/dashboard": ("dashboard.html", b"text/html; charset=utf-8"),
         "/dashboard.js": ("dashboard.js", b"text/javascript; charset=utf-8")}  # fmt: skip


def routes_json(router: Router) -> dict[str, Any]:
    """The table as a person (or a script) reads it: precedence order, conditions, backends."""
    routes = [
        {
            "route": route.name,
            "family": route.family.name,
            "match": " && ".join(c.describe() for c in route.conditions) or "(everything)",
            "priority": route.why,
            "origin": route.origin,
            "backends": [backend.to_json() for backend in route.backends],
            "steps": [step.label for step in route.chain.steps],
        }
        for route in router.table.routes
    ]
    return {
        "routes": routes,
        "errors": [_problem(e) for e in router.errors],
        # Routes that answer 500 instead of forwarding: what they ask kroute cannot do.
        "refused": [_problem(e) for e in router.refused],
        "notes": list(router.notes),
    }


def middlewares_json(router: Router) -> dict[str, Any]:
    return {"middlewares": [usage.to_json() for usage in router.middlewares]}


def _problem(error: InvalidObject) -> dict[str, str]:
    return {"object": error.obj, "field": error.field, "reason": error.reason,
            "origin": error.origin}  # fmt: skip


def services_json(router: Router, *, now: float) -> dict[str, Any]:
    """Every pool: endpoints with health state, reason and since how long (seconds)."""
    services = []
    statistics = router.statistics()
    for pool in statistics.pools:
        endpoints = []
        for endpoint in pool.endpoints:
            row = attrs.asdict(endpoint)
            row["since"] = round(now - endpoint.since, 3)
            row["recent_failures"] = [
                {"ago": round(now - at, 3), "what": what} for at, what in endpoint.recent_failures
            ]
            row["transitions"] = [
                {"ago": round(now - at, 3), "state": state, "reason": reason}
                for at, state, reason in endpoint.transitions
            ]
            endpoints.append(row)
        services.append({
            "service": pool.name, "in_rotation": pool.in_rotation, "panic": pool.panic,
            "picks": pool.picks, "unavailable": pool.unavailable, "endpoints": endpoints,
        })  # fmt: skip
    return {"services": services, "mirrors": attrs.asdict(statistics.mirrors)}


def certificates_json(tls: TlsCertificates | None) -> dict[str, Any]:
    if tls is None:
        return {"tls": False, "certificates": [], "errors": [], "notes": []}
    certs = tls.contexts.certificates
    return {
        "tls": True,
        "default": certs.default.to_json() if certs.default is not None else None,
        "certificates": [cert.to_json() for cert in certs.certificates],
        "errors": [str(e) for e in certs.errors] + list(tls.contexts.problems),
        "notes": list(certs.notes),
    }


def sources_json(router: Router) -> dict[str, Any]:
    return {
        "ready": router.ready,
        "kinds": [attrs.asdict(kind) for source in router.sources for kind in source.statistics()],
    }


class AdminHandler:
    """Serves the admin endpoints of `router` (see the module docstring).

    `traffic`: the dashboard's charts, a `Traffic` (by default one made here, on the Router's
    `RequestCounts`: a Router without Metrics gets them added, and counting is paid per
    request only where an admin app or Metrics runs), or False for none. Its `run()` is the
    task that samples the counts every 10 s (the example gateway runs it).
    """

    def __init__(
        self,
        router: Router,
        *,
        metrics: Metrics | None = None,
        tls: TlsCertificates | None = None,
        acme: AcmeCertificates | None = None,
        clock: Any = time.monotonic,
        traffic: Traffic | bool = True,
    ) -> None:
        self.router = router
        self.metrics = metrics
        self.tls = tls
        self.acme = acme
        self.clock = clock
        if traffic is True:
            traffic = Traffic(RequestCounts.of(router), clock=clock)
        self.traffic: Traffic | None = traffic or None

    async def __call__(self, request: IncomingRequest) -> OutgoingResponse:
        if request.method not in ("GET", "HEAD"):
            return OutgoingResponse(405, [*TEXT, (b"Allow", b"GET, HEAD")],
                                    b"405: the admin API is read-only\n")  # fmt: skip
        path = request.target.split("?", 1)[0]
        if path == "/live":
            return OutgoingResponse(200, TEXT, b"ok\n")
        if path == "/ready":
            return self._json(sources_json(self.router), 200 if self.router.ready else 503)
        if path == "/api/routes":
            return self._json(routes_json(self.router))
        if path == "/api/middlewares":
            return self._json(middlewares_json(self.router))
        if path == "/api/services":
            return self._json(services_json(self.router, now=self.clock()))
        if path == "/api/sources":
            return self._json(sources_json(self.router))
        if path == "/api/certificates":
            return self._json(certificates_json(self.tls))
        if path == "/api/acme":
            return self._json({"acme": False} if self.acme is None
                              else {"acme": True, **self.acme.to_json()})  # fmt: skip
        if path == "/metrics":
            if self.metrics is None:
                return OutgoingResponse(501, TEXT, b"501: metrics are off (pip install "
                                        b"'kroute[metrics]' and pass Metrics)\n")  # fmt: skip
            body, content_type = self.metrics.render()
            return OutgoingResponse(200, [(b"Content-Type", content_type.encode())], body)
        if path == "/api/traffic" and self.traffic is not None:
            return self._json(self.traffic.to_json(self.traffic.clock()))
        if path in PAGES:
            name, page_type = PAGES[path]
            page = resources.files("kroute.gateway").joinpath(name).read_bytes()
            return OutgoingResponse(200, [(b"Content-Type", page_type)], page)
        return OutgoingResponse(404, TEXT, f"404: no admin endpoint {path}\n".encode())

    @staticmethod
    def _json(value: dict[str, Any], status: int = 200) -> OutgoingResponse:
        return OutgoingResponse(status, JSON, json.dumps(value, indent=1).encode() + b"\n")

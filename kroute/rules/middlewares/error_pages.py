"""Traefik's errors middleware as a body step (Traefik v3 docs, "HTTP Middlewares" > Errors;
traefik `pkg/middlewares/customerrors`), on the pipeline's body seam (`kroute.pipeline.body`).

When the backend's status is in one of the `status` ranges ("500-599", "404"), its response is
discarded (the body unread, its connection closed) and the client gets the page `service`
answers to GET `query` instead, with the original status. `query` may hold `{status}` (the
status) and `{url}` (the request's target, query-escaped as Go's url.QueryEscape); the page
request carries the request's header fields, Host included, as Traefik's does. `service` names
a Service port as an IngressRoute's services do (name, port, namespace; another namespace only
with allowCrossNamespace); its pool is kept like a route's backend, and the page is fetched by
`Router.error_page`, the same on every front: at most 1 MiB, within 30 s; no page (no endpoint,
a failed call, a page too large) answers the status's reason phrase, as Traefik does.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar
from urllib.parse import quote_plus

import attrs

from kroute.objects import BackendRef, FieldError, ObjectRef, as_list, as_str, req_str
from kroute.pipeline.body import Replace
from kroute.pipeline.filters import Refuse
from kroute.pipeline.steps import Header, Step, UpstreamRequest
from kroute.rules.middlewares.paths import options_of

_DIGITS = re.compile(r"[0-9]{3}")


def status_ranges(values: Any, field: str) -> tuple[tuple[int, int], ...]:
    """`status`: "404" or "500-599" items -> (low, high) pairs, inclusive; anything else (a
    bound outside 100-599, a reversed range, more than two parts) is a field error."""
    ranges = []
    for i, value in enumerate(as_list(values, field)):
        text = req_str(value, f"{field}[{i}]").strip()
        parts = text.split("-")
        bounds = [int(p) for p in parts if _DIGITS.fullmatch(p.strip())]
        if len(parts) > 2 or len(bounds) != len(parts) or not all(100 <= b <= 599 for b in bounds):
            raise FieldError(f"{field}[{i}]", f"expected a status or a range like 500-599, got "
                             f"{text!r}")  # fmt: skip
        low, high = bounds[0], bounds[-1]
        if low > high:
            raise FieldError(f"{field}[{i}]", f"the range {text!r} is reversed")
        ranges.append((low, high))
    if not ranges:
        raise FieldError(field, "at least one status or range")
    return tuple(ranges)


@attrs.frozen
class ErrorPages(Step):
    """The errors middleware (module docstring)."""

    on_request: ClassVar[bool] = False
    on_body: ClassVar[bool] = True
    ranges: tuple[tuple[int, int], ...] = attrs.field(kw_only=True)
    service: BackendRef = attrs.field(kw_only=True)
    query: str = attrs.field(kw_only=True)

    @property
    def backends(self) -> tuple[BackendRef, ...]:
        return (self.service,)

    def body(self, status: int, headers: list[Header], request: UpstreamRequest) -> Replace | None:
        if not any(low <= status <= high for low, high in self.ranges):
            return None
        target = "/" + self.query.lstrip("/")
        target = target.replace("{status}", str(status))
        target = target.replace("{url}", quote_plus(request.target, safe=""))
        return Replace(self.service, target, tuple(request.headers), status, self.label)


def error_pages(spec: Any, field: str, ref: ObjectRef, cross_namespace: bool) -> Step:
    options = options_of(spec, field, ("status", "service", "query", "statusRewrites"))
    if options.get("statusRewrites"):
        return Refuse(f"{field}.statusRewrites", reason="statusRewrites is not supported by "
                      "kroute yet")  # fmt: skip
    ranges = status_ranges(options.get("status"), f"{field}.status")
    if options.get("service") is None:
        raise FieldError(f"{field}.service", "required: the Service that serves the pages")
    # (imported here: the IngressRoute compiler imports the Middlewares' package)
    from kroute.rules.traefik_backends import ServiceRef, reference

    where = f"{field}.service"
    found = reference(options["service"], where, ref.namespace, cross_namespace)
    if found.refused:
        return found.refused[0]
    service = found.backend
    if isinstance(service, ServiceRef) or found.steps:
        return Refuse(where, reason="error pages come from a Service, without middlewares "
                      "(a TraefikService is not supported there)")  # fmt: skip
    if service.error is not None:
        return Refuse(f"{field}.service", reason=f"{service}: {service.error}")
    query = as_str(options.get("query"), f"{field}.query") or ""
    return ErrorPages(field, ranges=ranges, service=service, query=query)

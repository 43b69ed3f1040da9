"""Offline: what the backend would receive for a request, after the route's steps (pure).

`preview(route, head)` runs the route's request steps on the request as routing saw it and
says what came of it: the request as forwarded (method, Host, path with the query, headers),
or the redirect or the answer a step gives instead, the headers the response steps set, and
which step changed what. `explain --format json` and `kroute.testing` show it; the steps run
through the same runner the fronts use (`kroute.pipeline.run_request`).

What a preview cannot know: the forwarding headers (X-Forwarded-*, Forwarded) describe the
connection, so they are left out; a step that waits (a user's `async def` filter) is not run
offline and is listed in `not_run`, as is a step whose answer depends on earlier requests
(rateLimit, inFlightReq: `Step.offline`), which a preview must not count; the path is the
normalised one routing matched on (a front forwards the path as received, unless a rewrite
replaced it).
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from kroute.objects import BackendRef
from kroute.pipeline.steps import (
    Awaited,
    Chain,
    Deferring,
    UpstreamRequest,
    run_request,
    run_response,
)
from kroute.rules.request import RequestHead
from kroute.rules.route import Route

Header = tuple[bytes, bytes]


@attrs.frozen
class Preview:
    """What came of a request's steps: exactly one of `upstream`, `redirect`, `status` says
    what happens (none when no route matched)."""

    upstream: UpstreamRequest | None = None
    #: (status, Location) when the route redirects, or a step answers with a redirect.
    redirect: tuple[int, str] | None = None
    #: (status, reason) when a step answers by itself (401, 403, 429, 500...).
    status: tuple[int, str] | None = None
    #: Headers the response steps set on every response (name, value).
    response_headers: tuple[Header, ...] = ()
    #: "STEP: what it changed", in order.
    changes: tuple[str, ...] = ()
    #: Steps that wait (users' async filters) or count requests: not run offline.
    not_run: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {}
        if self.upstream is not None:
            headers: dict[str, str | list[str]] = {}
            for name, value in self.upstream.headers:
                key, text = name.decode("latin-1").lower(), value.decode("latin-1")
                found = headers.get(key)
                if found is None:
                    headers[key] = text
                else:
                    headers[key] = [*(found if isinstance(found, list) else [found]), text]
            host = self.upstream.get(b"host")
            out["upstream"] = {
                "method": self.upstream.method,
                "host": "" if host is None else host.decode("latin-1"),
                "path": self.upstream.target,
                "headers": headers,
            }
        if self.redirect is not None:
            out["redirect"] = {"status": self.redirect[0], "location": self.redirect[1]}
        if self.status is not None:
            out["status"], out["reason"] = self.status
        if self.response_headers:
            out["response_headers"] = {
                n.decode("latin-1"): v.decode("latin-1") for n, v in self.response_headers
            }
        if self.changes:
            out["changes"] = list(self.changes)
        if self.not_run:
            out["not_run"] = list(self.not_run)
        return out

    def lines(self) -> list[str]:
        """The text form's lines: which step changed what, and how the request ends."""
        out = [f"step {change}" for change in self.changes]
        out += [f"not run offline: {label}" for label in self.not_run]
        if self.redirect is not None:
            out.append(f"redirects: {self.redirect[0]} to {self.redirect[1]}")
        elif self.status is not None:
            out.append(f"answered by a step: {self.status[0]} ({self.status[1]})")
        elif self.upstream is not None and self.changes:
            host = (self.upstream.get(b"host") or b"").decode("latin-1")
            out.append(f"the backend receives: {self.upstream.method} {host}"
                       f"{self.upstream.target}")  # fmt: skip
        out += [f"response header {n.decode('latin-1')}: {v.decode('latin-1')}"
                for n, v in self.response_headers]  # fmt: skip
        return out


def preview(route: Route | None, head: RequestHead, backend: BackendRef | None = None) -> Preview:
    """The outcome of `head` on `route` (sent to `backend`, whose own steps follow the
    route's; by default the first backend)."""
    if route is None:
        return Preview()
    redirect = route.redirect
    if redirect is not None and redirect.applies(head.scheme):
        location = redirect.location(scheme=head.scheme, host=head.host, port=head.port,
                                     path=head.path, query=head.query_string)  # fmt: skip
        return Preview(redirect=(redirect.status, location))
    if backend is None and route.backends:
        backend = route.backends[0]
    chain = route.chain_for(backend)
    request = _request(head)
    changes: list[str] = []
    not_run: list[str] = []
    for step in chain.request:
        if (isinstance(step, Awaited) and not isinstance(step, Deferring)) or not step.offline:
            not_run.append(step.label)
            continue
        before = (request.target, list(request.headers))
        copied = len(request.mirrors)
        answer = run_request(Chain((step,)), request)
        if answer is not None:
            changes.append(f"{step.label}: answers {answer.status} ({answer.reason})")
            moved = {n.lower(): v for n, v in answer.headers}.get(b"location")
            if 300 <= answer.status < 400 and moved is not None:  # (a redirect middleware)
                return Preview(redirect=(answer.status, moved.decode("latin-1")),
                               changes=tuple(changes), not_run=tuple(not_run))  # fmt: skip
            return Preview(status=(answer.status, answer.reason), changes=tuple(changes),
                           not_run=tuple(not_run))  # fmt: skip
        changes.extend(_diff(step.label, before, request))
        changes.extend(f"{step.label}: copies {c.method} {c.target}"
                       for c in request.mirrors[copied:])  # fmt: skip
    response: list[Header] = []
    failed = run_response(chain, 200, response, request)
    if failed is not None:
        changes.append(f"{failed.step}: answers {failed.status} ({failed.reason})")
        return Preview(status=(failed.status, failed.reason), changes=tuple(changes),
                       not_run=tuple(not_run))  # fmt: skip
    return Preview(upstream=request, response_headers=tuple(response), changes=tuple(changes),
                   not_run=tuple(not_run))  # fmt: skip


def _request(head: RequestHead) -> UpstreamRequest:
    host = f"[{head.host}]" if ":" in head.host else head.host
    if head.port is not None:
        host += f":{head.port}"
    headers = [(b"host", host.encode("latin-1", "replace"))] if head.host else []
    headers += [
        (name.encode("latin-1", "replace"), value.encode("latin-1", "replace"))
        for name, values in head.headers.items()
        if name != "host"
        for value in values
    ]
    query = head.query_string or None
    return UpstreamRequest(head.method, head.path, query, headers, head.path, head.scheme,
                           "" if head.client_ip is None else str(head.client_ip))  # fmt: skip


def _diff(label: str, before: tuple[str, Sequence[Header]], request: UpstreamRequest) -> list[str]:
    target, headers = before
    out = []
    if request.target != target:
        out.append(f"{label}: path {target} -> {request.target}")
    old = {(n.lower(), v) for n, v in headers}
    new = {(n.lower(), v) for n, v in request.headers}
    for name, value in sorted(new - old):
        out.append(f"{label}: sets {name.decode('latin-1')}: {value.decode('latin-1')}")
    for name in sorted({n for n, _ in old - new} - {n for n, _ in new}):
        out.append(f"{label}: removes {name.decode('latin-1')}")
    return out

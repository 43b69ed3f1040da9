"""GatewayHandler: what the HTTP front does with a request: route it, rewrite it, forward it.

Request side: hop-by-hop headers removed (RFC 9110 section 7.6.1); X-Forwarded-* and Forwarded
set for this hop (incoming ones believed only from `trusted` proxies); Host passed through.
A request without a body is forwarded as replayable (safe retries on other endpoints); a body
streams through and is never sent twice. Response side: hop-by-hop headers removed, the
front re-frames the body. Errors become short responses: 404 no route, 500 unusable backend,
502 connection failed or invalid response, 503 no endpoint, 504 timeout.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import attrs

from kroute.errors import KrouteError
from kroute.gateway import recording
from kroute.gateway.router import Router
from kroute.gateway.server import IncomingRequest, OutgoingResponse
from kroute.rules.request import RequestHead, split_absolute
from kroute.transport.base import ForwardRequest, Headers
from kroute.transport.proxy import (
    Hop,
    TrustedProxies,
    error_response,
    first_value,
    forwarding_headers,
    strip_hop_by_hop,
)


def origin_form(target: str, headers: Headers) -> tuple[str, str, Headers] | None:
    """For an absolute-form target (`http://host/path`): the host to route by, the target in
    origin form, and the headers with a Host made from it; None for any other target.

    RFC 9112 section 3.2.2: the server uses the target's host and ignores the Host header, and
    a request forwarded on gets a Host from the target. Go's net/http (so Traefik) routes on
    that host and sends the origin form with it. Every front does this (FastGateway too).
    """
    absolute = split_absolute(target)
    if absolute is None or not absolute[0]:
        return None
    authority, origin = absolute
    kept = [(n, v) for n, v in headers if n.lower() != b"host"]
    return authority, origin, [(b"Host", authority.encode("latin-1")), *kept]


def proxied(
    method: str,
    target: str,
    headers: Headers,
    body: AsyncIterator[bytes],
    *,
    content_length: int | None,
    upgrade: bytes | None,
    hop: Hop,
    trusted: TrustedProxies,
) -> tuple[RequestHead, ForwardRequest]:
    """What a front received -> the request head to route and the request to forward.

    Shared by every front (HttpServer, ASGI). Raises InvalidRequest (400) for a request that
    cannot be routed (a malformed Host, say).
    """
    absolute = origin_form(target, headers)
    if absolute is not None:
        host, target, headers = absolute
        hop = attrs.evolve(hop, host=host)
    head = RequestHead.build(
        method,
        hop.host,
        target,
        headers=[(n.decode("latin-1"), v.decode("latin-1")) for n, v in headers],
        client_ip=hop.client or None,
        scheme=hop.scheme,
    )
    chunked = first_value(headers, b"transfer-encoding") is not None
    has_body = chunked or bool(content_length)
    end_to_end = [(n, v) for n, v in strip_hop_by_hop(headers) if n.lower() != b"content-length"]
    # (framing is the transport's: it sends Content-Length or chunked itself)
    request = ForwardRequest(
        method,
        target,
        forwarding_headers(end_to_end, hop, trusted),
        body=body if has_body else b"",
        content_length=None if chunked else content_length,
        upgrade=upgrade,
    )
    return head, request


class GatewayHandler:
    """The HttpServer handler of a gateway built on a Router."""

    def __init__(
        self,
        router: Router,
        *,
        trusted: TrustedProxies = TrustedProxies(),
        hsts: str | None = None,
        entry_point: str | None = None,
    ) -> None:
        self.router = router
        self.trusted = trusted
        #: The entry point served; None: the Router's first of the request's scheme.
        self.entry_point = None if entry_point is None else router.entry_point(entry_point).name
        #: Strict-Transport-Security value for HTTPS responses ("max-age=31536000"), or None.
        self.hsts = hsts

    async def __call__(self, request: IncomingRequest) -> OutgoingResponse:
        response = await self._answer(request)
        if self.hsts is not None and request.scheme == "https" and response.status != 101:
            response.headers = [*response.headers, (b"Strict-Transport-Security",
                                                    self.hsts.encode())]  # fmt: skip
        return response

    async def _answer(self, request: IncomingRequest) -> OutgoingResponse:
        host = (first_value(request.headers, b"host") or b"").decode("latin-1")
        hop = Hop(client=request.client, scheme=request.scheme, host=host, port=request.port)
        record = recording.record_for(
            self.router, self.entry_point, request.method, host, request.target,
            scheme=request.scheme, version=request.version, client=request.client,
            client_port=request.client_port, headers=request.headers, tls=request.tls,
        )  # fmt: skip
        try:
            head, forward = proxied(
                request.method, request.target, request.headers, request.body,
                content_length=request.content_length, upgrade=request.upgrade,
                hop=hop, trusted=self.trusted,
            )  # fmt: skip
            decision, response = await self.router.forward(
                head, forward, entry_point=self.entry_point, record=record
            )
        except KrouteError as exc:
            status, headers, body = error_response(exc)
            if record is not None:
                recording.failed(self.router, record, exc, len(body))
            return OutgoingResponse(status, headers, body)
        relayed: AsyncIterator[bytes] = response.body
        close: recording.Closer = response.aclose
        if record is not None:
            relayed, close = recording.relayed(self.router, record, response.status, relayed,
                                               close)  # fmt: skip
        if response.status == 101 and response.upgraded is not None:
            upgraded = [*strip_hop_by_hop(response.headers), (b"Connection", b"Upgrade")]
            protocol = first_value(response.headers, b"upgrade")
            if protocol is not None:
                upgraded.append((b"Upgrade", protocol))
            if record is not None:  # (logged as the pipe begins: it may last for hours)
                record.complete = True
                recording.ended(self.router, record, 101)
            return OutgoingResponse(101, upgraded, upgraded=response.upgraded)
        headers = strip_hop_by_hop(response.headers)
        headers += self.router.sticky_headers(decision)
        return OutgoingResponse(response.status, headers, relayed, close=close)

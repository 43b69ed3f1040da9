"""FastGateway itself: its settings, the state its connections share, serving and shutdown.

It is the `ports.Gateway` its client connections (`client.Client`) and their exchanges read.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import time
from typing import Any

from kroute.errors import KrouteError
from kroute.gateway.fast.accept import ChallengeAcceptor
from kroute.gateway.fast.client import REQUEST_HEADERS, Client
from kroute.gateway.fast.ports import Connection, EndpointSide, Key
from kroute.gateway.fast.relay import RESPONSE_HEADERS
from kroute.gateway.outbox import Outbox
from kroute.gateway.router import Router
from kroute.pipeline.steps import Chain
from kroute.tls.alpn.challenges import AlpnChallenges
from kroute.transport.base import Timeouts
from kroute.transport.header_plans import HeaderPlans
from kroute.transport.http1 import ServerLimits
from kroute.transport.idle import IdleConnections
from kroute.transport.proxy import TrustedProxies

_BACKLOG = 1024


class FastGateway:
    """Serves a Router's routes over HTTP/1.1 on asyncio Protocols (see `kroute.gateway.fast`).

    `serve(host, port)` runs until cancelled or shut down; `port` 0 picks a free port, which
    `task_status.started` reports (use with anyio's `TaskGroup.start`).
    """

    def __init__(
        self,
        router: Router,
        *,
        limits: ServerLimits = ServerLimits(),
        timeouts: Timeouts = Timeouts(),
        trusted: TrustedProxies = TrustedProxies(),
        scheme: str = "http",
        hsts: str | None = None,
        max_idle: int = 100,
        keepalive_expiry: float = 60.0,
        entry_point: str | None = None,
    ) -> None:
        self.router = router
        #: The entry point served (`Router.entry_point`): only its routes take requests here.
        self.entry_point = router.entry_point(entry_point, tls=scheme == "https").name
        self.limits = limits
        self.timeouts = timeouts
        self.trusted = trusted
        self.scheme = scheme
        #: Strict-Transport-Security for responses when serving HTTPS ("max-age=31536000").
        self.hsts_line = (
            b"Strict-Transport-Security: %b\r\n" % hsts.encode() if hsts and scheme == "https"
            else b""
        )  # fmt: skip
        #: Idle connections to endpoints, reused most-recent-first.
        self.endpoints: IdleConnections[Key, EndpointSide] = IdleConnections(
            max_idle, keepalive_expiry
        )
        self.clients: set[Connection] = set()
        #: Every write and close on client and endpoint connections (see `Outbox`).
        self.outbox = Outbox()
        #: Header handling per sequence of names, one cache each way (see `HeaderPlans`).
        self.request_headers = HeaderPlans(REQUEST_HEADERS)
        #: What declarative chains made of a path: (chain, target, lines) by (id(chain), path)
        #: (`Client.planned`).
        self.plans: dict[tuple[int, str], tuple[Chain, bytes, bytes]] = {}
        self.response_headers = HeaderPlans(RESPONSE_HEADERS)
        self.draining = False
        self._server: asyncio.Server | ChallengeAcceptor | None = None
        self._stopped: asyncio.Event | None = None

    async def serve(
        self,
        host: str,
        port: int,
        *,
        tls: ssl.SSLContext | None = None,
        handshake_timeout: float = 10.0,
        challenges: AlpnChallenges | None = None,
        task_status: Any = None,
    ) -> None:
        """Serve on `host:port`; with `tls` (e.g. `TlsContexts.server`), HTTPS, answering the
        TLS-ALPN-01 `challenges` given (e.g. `TlsContexts.challenges`; `accept`)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise KrouteError("FastGateway runs on asyncio; on trio use HttpServer") from None
        factory = functools.partial(Client, self)
        server = await loop.create_server(
            factory, host, port, backlog=_BACKLOG, ssl=tls,
            ssl_handshake_timeout=handshake_timeout if tls is not None else None,
        )  # fmt: skip
        port = server.sockets[0].getsockname()[1]
        if tls is not None and challenges is not None:
            self._server = ChallengeAcceptor(
                [server], factory, tls, handshake_timeout, challenges, _BACKLOG
            )
        else:
            self._server = server
        self._stopped = asyncio.Event()
        if task_status is not None:
            task_status.started(port)
        try:
            await self._stopped.wait()
        finally:
            self._server.close()
            for client in list(self.clients):
                client.transport.abort()
            self.endpoints.close()

    @property
    def connections(self) -> int:
        return len(self.clients)

    async def shutdown(self, grace: float = 10.0) -> None:
        """Stop accepting, let requests in flight finish, then close what remains."""
        self.draining = True
        if self._server is not None:
            self._server.close()
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            for client in list(self.clients):
                if client.idle():
                    self.outbox.close(client.transport)
            if not self.clients:
                break
            await asyncio.sleep(0.01)
        if self._stopped is not None:
            self._stopped.set()

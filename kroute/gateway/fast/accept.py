"""FastGateway's TLS listening sockets while TLS-ALPN-01 challenges are pending (RFC 8737).

asyncio's `create_server(ssl=...)` accepts and starts the handshake in C (uvloop) or in the
loop's own code, with no way in before the ssl module sees the ClientHello; and the ssl module
cannot choose a certificate by ALPN (`kroute.tls.alpn`). So `ChallengeAcceptor` serves the
listening sockets two ways and switches as `AlpnChallenges` changes:

- nothing pending (nearly always): asyncio's own server, exactly as without a responder;
- a challenge pending: its own accept loop. Each connection's ClientHello is peeked at
  (`MSG_PEEK`: the bytes stay in the kernel for the ssl module to read, so no replay is
  needed; `SO_RCVLOWAT` makes a partly arrived ClientHello wake the loop only once the rest
  is there), the context picked from it (`AlpnChallenges.answer`), and the socket handed to
  `loop.connect_accepted_socket` with that context: a validation handshake, then closed; the
  gateway's own `Client` otherwise.

The switch closes asyncio's server (its own socket objects, which are duplicates) and keeps
the kernel's listening socket open through descriptors of its own, so connections arriving
meanwhile wait in the backlog: none is refused. Connections already accepted keep the way
they were accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
import threading
from collections.abc import Callable, Coroutine
from typing import Any

from kroute.gateway.accept import accept_pending
from kroute.tls.alpn.challenges import AlpnChallenges, Refused
from kroute.tls.alpn.hello import (
    MAX_INPUT,
    NO_APPLICATION_PROTOCOL,
    Incomplete,
    Parsed,
    parse_client_hello,
)

_log = logging.getLogger(__name__)
#: How long `AlpnChallenges.add` on another thread waits for the loop to switch (seconds).
_SWITCH_WAIT = 5.0
ProtocolFactory = Callable[[], asyncio.BaseProtocol]


class ChallengeAcceptor:
    """Serves `listening` (asyncio's servers of the sockets, made with `tls`) as the module
    docstring says, until `close()`."""

    def __init__(
        self,
        listening: list[asyncio.Server],
        factory: ProtocolFactory,
        tls: ssl.SSLContext,
        handshake_timeout: float,
        challenges: AlpnChallenges,
        backlog: int,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.factory = factory
        self.tls = tls
        self.handshake_timeout = handshake_timeout
        self.challenges = challenges
        self.backlog = backlog
        #: The listening sockets, by descriptors of our own (asyncio's close with its servers).
        self.sockets = [_duplicate(sock) for server in listening for sock in server.sockets]
        self.servers = listening  # asyncio's, while nothing is pending; else empty
        self.tasks: set[asyncio.Task[None]] = set()  # accept loops, connections being peeked
        self.accepting: list[asyncio.Task[None]] = []  # peeking: an accept loop per socket
        self.restoring: asyncio.Task[None] | None = None
        self.thread = threading.get_ident()
        self.closed = False
        challenges.subscribe(self._changed)
        self._switch()  # challenges may be pending already

    def _changed(self) -> None:
        """Called by AlpnChallenges on the thread that changed it; returns once the switch is
        made, so that a challenge is answered from the moment `add` returns."""
        if threading.get_ident() == self.thread:
            self._switch()
            return
        switched = threading.Event()

        def switch() -> None:
            try:
                self._switch()
            finally:
                switched.set()

        try:
            self.loop.call_soon_threadsafe(switch)
        except RuntimeError:  # the loop is closed: nothing to switch
            return
        if not switched.wait(_SWITCH_WAIT):
            _log.warning("TLS-ALPN-01: the event loop took over %ss to take a challenge in",
                         _SWITCH_WAIT)  # fmt: skip

    def _switch(self) -> None:
        """To peeking at once when a challenge is pending; back to asyncio's servers (which
        takes awaiting) in a task when none is."""
        if self.closed:
            return
        if self.challenges:
            if not self.accepting:
                for server in self.servers:
                    server.close()  # its sockets are duplicates: the backlog stays
                self.servers = []
                self.accepting = [self._spawn(self._accept(sock)) for sock in self.sockets]
        elif self.accepting and self.restoring is None:
            self.restoring = self._spawn(self._restore())

    async def _restore(self) -> None:
        """asyncio's servers again; peeking goes on until they serve, and stays if a challenge
        came meanwhile (the check and the start have no await between them)."""
        servers: list[asyncio.Server] = []
        try:
            for sock in self.sockets:
                servers.append(await self.loop.create_server(
                    self.factory, sock=_duplicate(sock), backlog=self.backlog, ssl=self.tls,
                    ssl_handshake_timeout=self.handshake_timeout, start_serving=False,
                ))  # fmt: skip
        except BaseException:
            for server in servers:
                server.close()
            raise
        finally:
            self.restoring = None
        if self.challenges or self.closed:
            for server in servers:
                server.close()
            return
        for task in self.accepting:
            task.cancel()
        self.accepting = []
        self.servers = servers
        for server in servers:
            await server.start_serving()  # (serving before its first await)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = self.loop.create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def _accept(self, sock: socket.socket) -> None:
        """Every pending connection at each wake-up (as `kroute.gateway.accept`); accepting
        happens between awaits, so cancelling this loses no connection."""
        while True:
            await _readable(self.loop, sock)
            clients, failed = accept_pending(sock)
            for client in clients:
                client.setblocking(False)
                self._spawn(self._connection(client))
            if failed:
                await asyncio.sleep(0.1)

    async def _connection(self, client: socket.socket) -> None:
        deadline = self.loop.time() + self.handshake_timeout
        try:
            async with asyncio.timeout_at(deadline):
                hello = await peek_hello(self.loop, client)
        except (OSError, TimeoutError) as exc:
            _log.debug("TLS: no ClientHello: %r", exc)
            client.close()
            return
        except BaseException:  # cancelled: the gateway stops
            client.close()
            raise
        answer = self.challenges.answer(hello)
        if isinstance(answer, Refused):  # acme-tls/1 for a name with nothing pending
            with contextlib.suppress(OSError):
                client.send(NO_APPLICATION_PROTOCOL)
            client.close()
            return
        factory, context = (self.factory, self.tls) if answer is None else (_Validated, answer)
        try:  # from here on the transport owns the socket, also when this fails
            await self.loop.connect_accepted_socket(
                factory, client, ssl=context,
                ssl_handshake_timeout=max(deadline - self.loop.time(), 0.001),
            )  # fmt: skip
        except (OSError, TimeoutError) as exc:
            _log.debug("TLS handshake failed: %r", exc)

    def close(self) -> None:
        """Stop accepting (connections already served are the gateway's to close); again:
        nothing (FastGateway's shutdown closes, then serve's end)."""
        if self.closed:
            return
        self.closed = True
        self.challenges.unsubscribe(self._changed)
        for task in list(self.tasks):
            task.cancel()
        for server in self.servers:
            server.close()
        for sock in self.sockets:
            sock.close()


class _Validated(asyncio.Protocol):
    """A TLS-ALPN-01 validation connection: the handshake was all (RFC 8737 section 3)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


async def peek_hello(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> Parsed:
    """The ClientHello waiting on `sock`, left there (MSG_PEEK); ConnectionError when the
    client closes first."""
    lowat = 1
    try:
        while True:
            await _readable(loop, sock)
            data = sock.recv(MAX_INPUT, socket.MSG_PEEK)
            if not data:
                raise ConnectionError("closed before its ClientHello")
            parsed = parse_client_hello(data)
            if not isinstance(parsed, Incomplete):
                return parsed
            # Not all there: wake when it is (the bytes stay readable, so waiting for
            # "readable" alone would spin).
            lowat = parsed.needed
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, lowat)
    finally:
        if lowat != 1:  # the ssl transport reads whatever arrives
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)


async def _readable(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    ready = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(sock.fileno(), wake)
    try:
        await ready
    finally:
        loop.remove_reader(sock.fileno())


def _duplicate(sock: socket.socket) -> socket.socket:
    """A socket object of our own on the same kernel socket."""
    duplicate = socket.socket(fileno=os.dup(sock.fileno()))
    duplicate.setblocking(False)
    return duplicate

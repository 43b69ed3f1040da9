"""BatchAcceptListener: a TCP listener that takes every pending connection each time it wakes.

Why: anyio's `accept()` yields to the event loop twice per connection (a checkpoint, then the
transport's set-up), so `Listener.serve` accepts one connection per turn of the loop. A turn
of a busy gateway's loop serves every ready connection once, so a burst of new connections
queues one turn each: in the gateway benchmark the anyio front's p99 at 100 connections was
0.6 to 1.2 s, all of it the first requests of new connections, and 41 ms once accepts were
batched (docs/benchmarks.md). Here the listening socket is read to empty at each wake-up
(as nginx and asyncio's own servers do), and each connection's stream is set up in that
connection's own task. `HttpServer` wraps what it is given with `batched()`; listeners it does
not know are served as they are.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import socket
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
import anyio.abc
from anyio.streams.stapled import MultiListener
from anyio.streams.tls import TLSListener

Handler = Callable[[anyio.abc.SocketStream], Coroutine[Any, Any, None]]
#: accept() errors that concern one connection only: the client gave up before it was taken.
_GONE = {errno.ECONNABORTED, errno.EPROTO, errno.EPERM}
_log = logging.getLogger(__name__)


class BatchAcceptListener(anyio.abc.Listener[anyio.abc.SocketStream]):
    """Serves the TCP listening sockets of `inner` (see the module docstring)."""

    def __init__(self, inner: anyio.abc.Listener[Any], sockets: list[socket.socket]) -> None:
        self._inner = inner
        self._sockets = sockets

    @property
    def extra_attributes(self) -> Any:
        return self._inner.extra_attributes

    async def serve(self, handler: Handler, task_group: anyio.abc.TaskGroup | None = None) -> None:
        async with anyio.create_task_group() as accepting:
            group = task_group or accepting
            for sock in self._sockets:
                accepting.start_soon(self._accept, sock, handler, group)

    async def aclose(self) -> None:
        await self._inner.aclose()

    @staticmethod
    async def _accept(sock: socket.socket, handler: Handler, group: anyio.abc.TaskGroup) -> None:
        while True:
            await anyio.wait_readable(sock)
            clients, failed = accept_pending(sock)
            for client in clients:
                group.start_soon(_serve, client, handler)
            if failed:
                await anyio.sleep(0.1)


def accept_pending(sock: socket.socket) -> tuple[list[socket.socket], bool]:
    """Every connection waiting on the non-blocking listening `sock` (TCP_NODELAY set), and
    whether accepting failed for want of descriptors or memory (logged: wait a little before
    trying again; the connections wait in the backlog). FastGateway's accepting shares it."""
    clients: list[socket.socket] = []
    while True:
        try:
            client, _ = sock.accept()
        except (BlockingIOError, InterruptedError):
            return clients, False  # taken them all
        except OSError as exc:
            if exc.errno in _GONE:  # that client gave up before it was taken
                continue
            _log.warning("accepting connections failed: %s", exc)
            return clients, True
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        clients.append(client)


async def _serve(client: socket.socket, handler: Handler) -> None:
    try:
        stream = await anyio.abc.SocketStream.from_socket(client)
    except BaseException:
        client.close()
        raise
    await handler(stream)


def batched(listener: anyio.abc.Listener[Any]) -> anyio.abc.Listener[Any]:
    """`listener` accepting in batches: anyio TCP listeners (one, or several in a
    MultiListener, as `anyio.create_tcp_listener` makes), also inside a `TLSListener` (the
    handshake still happens in each connection's task). Anything else comes back unchanged."""
    if isinstance(listener, TLSListener):
        inner = batched(listener.listener)
        return (
            listener
            if inner is listener.listener
            else dataclasses.replace(listener, listener=inner)
        )
    parts = listener.listeners if isinstance(listener, MultiListener) else [listener]
    sockets = []
    for part in parts:
        if not isinstance(part, anyio.abc.SocketListener):
            return listener
        sockets.append(part.extra(anyio.abc.SocketAttribute.raw_socket))
    return BatchAcceptListener(listener, sockets)

"""Outbox: FastGateway's writes and closes, held until the end of the event loop's turn and
then made together, in the order they were asked for.

Why: a write to a loopback (or any) socket wakes the process reading the other end, and the
wake-up is paid by the writer: in the kernel's `sock_def_readable`, with interrupts off. Written
as each callback produces them, responses and forwarded requests woke the client and the
endpoint once per request: 11% of the gateway's CPU (perf, 20 connections), more than nginx pays
per request. Made together at the end of the turn, after every ready connection was read, one
wake-up covers a burst of writes to the same process (docs/benchmarks.md has the measurements
and the commands).

Nothing waits longer than the rest of the turn it was asked in. Closes go through the same
queue, so a connection is never closed ahead of a write asked before it. A transport closed
meanwhile (the peer went away) is skipped.
"""

from __future__ import annotations

import asyncio


class Outbox:
    """Writes and closes, made in order at the end of the running event loop's turn."""

    __slots__ = ("queue",)

    def __init__(self) -> None:
        #: (transport, bytes to write, or None to close), in the order asked.
        self.queue: list[tuple[asyncio.Transport, bytes | None]] = []

    def write(self, transport: asyncio.Transport, data: bytes) -> None:
        if not self.queue:
            asyncio.get_running_loop().call_soon(self.flush)
        self.queue.append((transport, data))

    def close(self, transport: asyncio.Transport) -> None:
        if not self.queue:
            asyncio.get_running_loop().call_soon(self.flush)
        self.queue.append((transport, None))

    def flush(self) -> None:
        queue, self.queue = self.queue, []
        for transport, data in queue:
            if data is None:
                transport.close()
            elif not transport.is_closing():
                transport.write(data)

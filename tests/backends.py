"""Real HTTP backends on loopback for tests: pods sharing one port on distinct 127.x addresses."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
import anyio.abc
import attrs


@attrs.define
class Backend:
    """A tiny HTTP/1.1 server: `/healthz` answers 200 or 500 as `healthy` says; anything else
    answers 200 with the backend's name, and counts a hit."""

    address: str
    name: str
    healthy: bool = True
    hits: int = 0
    probes: int = 0

    async def handle(self, stream: anyio.abc.SocketStream) -> None:
        async with stream:
            data = b""
            try:
                while b"\r\n\r\n" not in data:
                    data += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return
            path = data.split(b" ", 2)[1] if data.count(b" ") >= 2 else b"/"
            if path == b"/healthz":
                self.probes += 1
                status, body = (200, b"ok") if self.healthy else (500, b"failing")
            else:
                self.hits += 1
                status, body = 200, self.name.encode()
            head = (
                f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            try:
                await stream.send(head.encode() + body)
            except anyio.BrokenResourceError:
                return


async def start_backends(group: anyio.abc.TaskGroup, backends: list[Backend]) -> int:
    """Serve every backend on one port, each on its own loopback address; returns the port."""
    for _ in range(20):
        first = await anyio.create_tcp_listener(local_host=backends[0].address, local_port=0)
        port = first.extra(anyio.abc.SocketAttribute.local_port)
        listeners = [first]
        try:
            for backend in backends[1:]:
                listeners.append(
                    await anyio.create_tcp_listener(local_host=backend.address, local_port=port)
                )
        except OSError:
            for listener in listeners:
                await listener.aclose()
            continue
        for backend, listener in zip(backends, listeners, strict=True):
            group.start_soon(serve, listener, backend.handle)
        return port
    raise RuntimeError("no free port shared by every loopback address")


async def serve(
    listener: anyio.abc.Listener[anyio.abc.SocketStream],
    handler: Callable[[anyio.abc.SocketStream], Awaitable[None]],
) -> None:
    """Serve until cancelled, then close the listening socket."""
    async with listener:
        await listener.serve(handler)


async def get(address: str, port: int, path: str = "/") -> tuple[int, str]:
    """A plain GET: (status, body)."""
    async with await anyio.connect_tcp(address, port) as stream:
        await stream.send(
            f"GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n".encode()
        )
        data = b""
        try:
            while True:
                data += await stream.receive()
        except anyio.EndOfStream:
            pass
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body.decode()

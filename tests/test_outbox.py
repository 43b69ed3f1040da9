"""Outbox (FastGateway's writes and closes): made at the end of the loop's turn, in order, on
real loopback sockets; a transport closed meanwhile is skipped."""

from __future__ import annotations

import asyncio

import pytest

from kroute.gateway.outbox import Outbox

pytestmark = pytest.mark.parametrize("anyio_backend", ["asyncio"])  # FastGateway's loop


class _Peer:
    """A loopback connection: `transport` to write on, and the peer's reader."""

    async def __aenter__(self) -> _Peer:
        accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]]
        accepted = asyncio.Queue()

        async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await accepted.put((reader, writer))

        self.server = await asyncio.start_server(on_client, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        transport, _ = await asyncio.get_running_loop().create_connection(
            asyncio.Protocol, "127.0.0.1", port
        )
        self.transport: asyncio.Transport = transport
        self.reader, self.writer = await accepted.get()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.transport.abort()
        self.writer.close()
        self.server.close()
        await self.server.wait_closed()


@pytest.mark.anyio
async def test_writes_wait_for_the_end_of_the_turn_then_go_in_order() -> None:
    async with _Peer() as peer:
        outbox = Outbox()
        outbox.write(peer.transport, b"one ")
        outbox.write(peer.transport, b"two ")
        outbox.close(peer.transport)  # asked after the writes: made after them
        assert len(outbox.queue) == 3  # nothing handed to the transport yet
        assert not peer.transport.is_closing()
        assert await peer.reader.read() == b"one two "  # then the end of the stream
        assert outbox.queue == []


@pytest.mark.anyio
async def test_a_transport_closed_meanwhile_is_skipped() -> None:
    async with _Peer() as gone, _Peer() as other:
        outbox = Outbox()
        outbox.write(gone.transport, b"lost")
        outbox.write(other.transport, b"kept")
        gone.transport.abort()  # the connection was lost before the turn ended
        outbox.close(other.transport)
        assert await other.reader.read() == b"kept"
        assert await gone.reader.read() == b""


@pytest.mark.anyio
async def test_everything_asked_in_a_turn_is_made_by_one_callback_at_its_end() -> None:
    async with _Peer() as peer:
        loop = asyncio.get_running_loop()
        outbox = Outbox()
        seen: list[int] = []
        loop.call_soon(lambda: seen.append(len(outbox.queue)))  # asked before: runs before
        for i in range(100):
            outbox.write(peer.transport, b"%d," % i)
        done: asyncio.Future[int] = loop.create_future()
        loop.call_soon(lambda: done.set_result(len(outbox.queue)))  # runs after the flush
        assert await done == 0
        assert seen == [100]  # one flush made all 100, after the callbacks queued before it
        outbox.close(peer.transport)
        assert await peer.reader.read() == b"".join(b"%d," % i for i in range(100))

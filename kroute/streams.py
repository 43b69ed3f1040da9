"""Byte streams that wrap another and change one thing about it (anyio).

`Wrapping` passes everything through; its subclasses override the one method they change:
`Prefixed` (bytes already read from the stream, received again first: a response's bytes after
a 101, a ClientHello read to choose a TLS context) and the Router's upgraded stream that reports
its end (`kroute.gateway.router.forwarding`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import anyio.abc


class Wrapping(anyio.abc.ByteStream):
    """`stream`, every call passed on (extra attributes included)."""

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self.stream = stream

    async def receive(self, max_bytes: int = 65536) -> bytes:
        return await self.stream.receive(max_bytes)

    async def send(self, item: bytes) -> None:
        await self.stream.send(item)

    async def send_eof(self) -> None:
        await self.stream.send_eof()

    async def aclose(self) -> None:
        await self.stream.aclose()

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        return self.stream.extra_attributes


class Prefixed(Wrapping):
    """`stream` with `prefix` received first."""

    def __init__(self, stream: anyio.abc.ByteStream, prefix: bytes) -> None:
        super().__init__(stream)
        self.prefix = prefix

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if self.prefix:
            data, self.prefix = self.prefix[:max_bytes], self.prefix[max_bytes:]
            return data
        return await self.stream.receive(max_bytes)

"""`OneChunk`: a request body of bytes for httpcore, given as a plain async iterable.

Why not the bytes themselves: httpcore wraps them in its `ByteStream`, whose `__aiter__` is an
async generator. A request cancelled while its body is being sent (a shutdown, a timeout)
leaves that generator suspended, and on trio its garbage collection is a ResourceWarning
("Async generator ... was garbage collected before it had been exhausted"), which a test suite
run with warnings as errors reports as an error somewhere later. An iterator object has nothing
to finalise. Both the API client (kroute.watch.api) and the httpcore transport use it.
"""

from __future__ import annotations


class OneChunk:
    """`content` as an async iterator of one chunk (none when empty); one per request sent."""

    __slots__ = ("content",)

    def __init__(self, content: bytes) -> None:
        self.content: bytes | None = content or None

    def __aiter__(self) -> OneChunk:
        return self

    async def __anext__(self) -> bytes:
        content, self.content = self.content, None
        if content is None:
            raise StopAsyncIteration
        return content

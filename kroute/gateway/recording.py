"""RequestEvents from the fronts that forward through `Router.forward` (HttpServer's
`GatewayHandler`, the ASGI gateway).

Why here: both fronts start a `RequestRecord` the same way, tell it the same failures, and count
a relayed body the same way; the event goes out when the response ended or the client went
away. Nothing here runs unless some observer wants events (`record_for` answers None).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from kroute.errors import KrouteError
from kroute.gateway.events import CLIENT_GONE, RequestRecord
from kroute.gateway.router import Router

Header = tuple[bytes, bytes]
Closer = Callable[[], Awaitable[None]]


def record_for(
    router: Router, entry_point: str | None, method: str, host: str, target: str, *,
    scheme: str, version: str, client: str, client_port: int, headers: Sequence[Header],
    tls: tuple[str, str] | None = None,
) -> RequestRecord | None:  # fmt: skip
    """A record of the request, or None when no observer wants events and the Router does not
    trace (with tracing, its trace started from the client's Trace Context fields)."""
    tracing = router.tracing
    if not router.observers.listening and tracing is None:
        return None
    point = router.entry_point(entry_point, tls=scheme == "https").name
    record = RequestRecord(method, host, target, protocol=f"HTTP/{version}", client_ip=client,
                           client_port=client_port, entry_point=point, headers=headers,
                           tls=tls)  # fmt: skip
    if tracing is not None:
        record.trace = tracing.start(method, headers, scheme)
    return record


def failed(router: Router, record: RequestRecord, error: KrouteError, sent: int) -> None:
    """The request is answered by `error` (a body of `sent` bytes)."""
    record.error = error
    record.bytes_sent = sent
    _end(router, record, error.status_hint)


def relayed(
    router: Router,
    record: RequestRecord,
    status: int,
    body: AsyncIterator[bytes],
    close: Closer,
) -> tuple[AsyncIterator[bytes], Closer]:
    """`body` counted as it is sent, and `close` (which the front calls once the response is
    sent or abandoned) telling the observers how it ended."""

    async def closed() -> None:
        try:
            await close()
        finally:
            ended(router, record, status)

    return _Counted(body, record), closed


def ended(router: Router, record: RequestRecord, status: int) -> None:
    """The response with `status` ended: to its end (`record.complete`), else the client went
    away (or the front gave up writing to it)."""
    if record.complete:
        _end(router, record, status)
    else:
        _end(router, record, status if record.bytes_sent else CLIENT_GONE, aborted=True)


def _end(router: Router, record: RequestRecord, status: int, *, aborted: bool = False) -> None:
    """The event of the request to the observers, and to its trace when that records (no
    event is made when neither wants it)."""
    trace = record.trace
    if router.observers.listening or (trace is not None and trace.recording):
        event = record.event(status, aborted=aborted)
        router.emit(event)
        if trace is not None:
            trace.end(event)


class _Counted:
    """`body`, its bytes counted into `record` as they are read; `record.complete` once it
    ended. (A class, not an async generator: one given up on by a client that went away would
    be left to the garbage collector to finalise, which trio warns of.)"""

    def __init__(self, body: AsyncIterator[bytes], record: RequestRecord) -> None:
        self.body = body
        self.record = record

    def __aiter__(self) -> _Counted:
        return self

    async def __anext__(self) -> bytes:
        try:
            chunk = await anext(self.body)
        except StopAsyncIteration:
            self.record.complete = True
            raise
        self.record.bytes_sent += len(chunk)
        return chunk

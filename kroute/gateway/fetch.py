"""The I/O of the HTTP calls steps make (`kroute.pipeline.fetch`): one request through a
transport, its whole answer read within the call's timeout and size limit.

Thin on purpose: what to send and what the answer means are the step's (forwardAuth's, in
`kroute.rules.middlewares.forward_auth`); here every way the call can fail becomes `FetchFailed`
with the reason, so the step decides from one exception.

`Fetches` is a Router's: the TLS context for https calls is made once (building one reads the
system's CA store, tens of milliseconds on the event loop), and a Router without a transport of
its own (FastGateway forwards itself) gets one long-lived PooledTransport for its steps' calls,
whose connections are reused, closed with the Router (`Router.aclose`).
"""

from __future__ import annotations

import ssl

import anyio

from kroute.errors import UpstreamError
from kroute.pipeline.fetch import Call, FetchFailed, Reply
from kroute.transport.base import ForwardRequest, Target, Transport
from kroute.transport.pooled import PooledTransport
from kroute.transport.proxy import strip_hop_by_hop


class Fetches:
    """How one Router's steps call out: the TLS context and, when the Router has no transport,
    the transport (both made on first use)."""

    def __init__(self) -> None:
        self._tls: ssl.SSLContext | None = None
        self._own: PooledTransport | None = None

    async def fetch(self, transport: Transport | None, call: Call) -> Reply:
        """`call` through `transport`, or through this Router's own when it has none."""
        if transport is None:
            transport = self._own = self._own or PooledTransport()
        tls = None
        if call.https:
            tls = self._tls = self._tls or ssl.create_default_context()
        return await fetch(transport, call, tls)

    async def aclose(self) -> None:
        own, self._own = self._own, None
        if own is not None:
            with anyio.CancelScope(shield=True):
                await own.aclose()


async def fetch(transport: Transport, call: Call, tls: ssl.SSLContext | None) -> Reply:
    """`call` through `transport` (`tls`: the context of an https call)."""
    target = Target(call.host, call.port, tls=tls, server_name=call.host if tls else None)
    try:
        with anyio.fail_after(call.timeout):
            response = await transport.send(target, ForwardRequest(call.method, call.target,
                                                                   list(call.headers)))  # fmt: skip
            body = bytearray()
            async for chunk in response.body:
                body += chunk
                if len(body) > call.limit:
                    await response.aclose()
                    raise FetchFailed(f"the answer's body is larger than {call.limit} bytes")
    except TimeoutError:
        raise FetchFailed(f"no whole answer within {call.timeout:g}s") from None
    except UpstreamError as exc:
        raise FetchFailed(str(exc)) from exc
    return Reply(response.status, tuple(strip_hop_by_hop(response.headers)), bytes(body))

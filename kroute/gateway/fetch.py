"""The I/O of the HTTP calls steps make (`kroute.pipeline.fetch`): one request through a
transport, its whole answer read within the call's timeout and size limit.

Thin on purpose: what to send and what the answer means are the step's (forwardAuth's, in
`kroute.rules.middlewares.forward_auth`); here every way the call can fail becomes `FetchFailed`
with the reason, so the step decides from one exception.
"""

from __future__ import annotations

import ssl

import anyio

from kroute.errors import UpstreamError
from kroute.pipeline.fetch import Call, FetchFailed, Reply
from kroute.transport.base import ForwardRequest, Target, Transport
from kroute.transport.pooled import PooledTransport
from kroute.transport.proxy import strip_hop_by_hop


async def fetch(transport: Transport | None, call: Call) -> Reply:
    """`call` through `transport`; with None (a Router without a transport: FastGateway
    forwards itself), through a PooledTransport made for this call and closed after it."""
    if transport is None:
        own = PooledTransport()
        try:
            return await fetch(own, call)
        finally:
            with anyio.CancelScope(shield=True):
                await own.aclose()
    tls = ssl.create_default_context() if call.https else None
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

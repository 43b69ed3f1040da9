"""An httpx transport over ServiceClient: `httpx.AsyncClient(transport=KrouteTransport(router))`.

Requests go to the endpoints of the Service or route their URL names (see `kroute.client.service`).
kroute's failures become the httpx exceptions a client already handles: no route or no usable
endpoint -> `httpx.ConnectError` (what connecting to a Service without endpoints gives through
kube-proxy), upstream timeouts -> the httpx timeout of the same phase, invalid or cut responses
-> `httpx.RemoteProtocolError`. Requests with a body httpx holds in memory are replayable, so
safe retries apply to them; streamed bodies are sent once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx

from kroute.client.service import ServiceClient
from kroute.errors import (
    InvalidRequest,
    KrouteError,
    UpstreamClosed,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from kroute.gateway.router import Router
from kroute.transport.base import ForwardResponse

_TIMEOUTS: dict[str, type[httpx.TimeoutException]] = {
    "connect": httpx.ConnectTimeout,
    "read": httpx.ReadTimeout,
    "write": httpx.WriteTimeout,
    "pool": httpx.PoolTimeout,
}


class _Body(httpx.AsyncByteStream):
    def __init__(self, response: ForwardResponse) -> None:
        self.response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.response.body:
            yield chunk

    async def aclose(self) -> None:
        await self.response.aclose()


class KrouteTransport(httpx.AsyncBaseTransport):
    """httpx requests sent through a Router's pools (see the module docstring)."""

    def __init__(self, router: Router, *, cluster_domain: str = "cluster.local") -> None:
        self.client = ServiceClient(router, cluster_domain=cluster_domain)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if isinstance(request.stream, httpx.ByteStream):
            body: bytes | AsyncIterator[bytes] = request.read()
            length = None
        else:
            body = _chunks(request)
            declared = request.headers.get("content-length")
            length = int(declared) if declared is not None else None
        headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in request.headers.raw
                   if n.lower() not in (b"content-length", b"transfer-encoding")]  # fmt: skip
        try:
            _decision, response = await self.client.request(
                request.method, str(request.url), headers=headers, body=body,
                content_length=length,
            )  # fmt: skip
        except UpstreamTimeout as exc:
            raise _TIMEOUTS.get(exc.phase, httpx.ReadTimeout)(str(exc), request=request) from exc
        except (UpstreamProtocolError, UpstreamClosed) as exc:
            raise httpx.RemoteProtocolError(str(exc), request=request) from exc
        except InvalidRequest as exc:
            raise httpx.UnsupportedProtocol(str(exc), request=request) from exc
        except KrouteError as exc:
            raise httpx.ConnectError(str(exc), request=request) from exc
        return httpx.Response(
            response.status,
            headers=response.headers,
            stream=_Body(response),
            extensions={"reason_phrase": response.reason},
        )


async def _chunks(request: httpx.Request) -> AsyncIterator[bytes]:
    async for chunk in request.stream:  # type: ignore[union-attr]
        yield chunk

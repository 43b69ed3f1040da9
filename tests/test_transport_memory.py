"""MemoryTransport: plain handlers and ASGI apps, in process."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import pytest

from kroute.errors import UpstreamConnectError
from kroute.transport.base import ForwardRequest, Headers, Target
from kroute.transport.memory import MemoryTransport

pytestmark = pytest.mark.anyio


async def hello(request: ForwardRequest) -> tuple[int, Headers, bytes]:
    assert isinstance(request.body, bytes)
    return 200, [(b"Content-Type", b"text/plain")], b"hello " + request.body


async def asgi_app(scope: MutableMapping[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]],
                   send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:  # fmt: skip
    message = await receive()
    body = f"{scope['method']} {scope['path']}?{scope['query_string'].decode()} {message['body'].decode()}"
    await send({"type": "http.response.start", "status": 201, "headers": [(b"x-app", b"asgi")]})
    await send({"type": "http.response.body", "body": body.encode()})


async def test_handlers_asgi_apps_and_nothing_mounted() -> None:
    transport = MemoryTransport({"10.0.0.1:80": hello})
    transport.mount("10.0.0.2:80", asgi_app)
    response = await transport.send(
        Target("10.0.0.1", 80), ForwardRequest("POST", "/", body=b"world")
    )
    assert (response.status, await response.read()) == (200, b"hello world")
    response = await transport.send(
        Target("10.0.0.2", 80), ForwardRequest("PUT", "/a?b=1", body=b"x")
    )
    assert response.status == 201
    assert response.headers == [(b"x-app", b"asgi")]
    assert await response.read() == b"PUT /a?b=1 x"
    assert [endpoint for endpoint, _ in transport.sent] == ["10.0.0.1:80", "10.0.0.2:80"]
    with pytest.raises(UpstreamConnectError):
        await transport.send(Target("10.0.0.9", 80), ForwardRequest("GET", "/"))

"""The transport conformance suite against FastGateway's endpoint side.

FastGateway forwards with its own code (`kroute.gateway.fast`: the `Upstream` endpoint
connections and the exchange's attempts and relaying), not through a Transport, so the suite
reaches it through `FastGatewayTransport`: `send(target, request)` sends the request through a
FastGateway on loopback whose Router routes every request to `target` (a Service and an
EndpointSlice with the target's address and port). The gateway's answers are mapped back to
what a Transport raises: an error page made by `error_response` for an UpstreamError is that
error, raised; a response cut after its head is what the client sees (UpstreamClosed).

asyncio only: FastGateway runs on asyncio.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

import anyio
import anyio.abc
import attrs
import pytest

from kroute.errors import (
    UpstreamClosed,
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from kroute.gateway.fast import FastGateway
from kroute.gateway.router import Decision, Router
from kroute.transport import conformance as suite
from kroute.transport.base import ForwardRequest, ForwardResponse, Target, Timeouts
from kroute.transport.conformance import *  # noqa: F403
from kroute.transport.conformance import SLOW_TIMEOUTS, Backend, get
from kroute.transport.pooled import PooledTransport
from kroute.transport.proxy import error_response
from kroute.watch.sources import MemorySource
from tests.builders import ingress
from tests.test_gateway_e2e import endpoint_slice, service

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("anyio_backend", ["asyncio"])]

#: What the gateway answers for each UpstreamError (status and page, as `error_response`
#: makes them), and the error it stands for.
_ERRORS: list[Callable[[], UpstreamError]] = [
    lambda: UpstreamConnectError("refused"),
    lambda: UpstreamTimeout("connect", request_sent=False),
    lambda: UpstreamTimeout("read"),
    lambda: UpstreamProtocolError("invalid response"),
    lambda: UpstreamClosed("closed before the response ended"),
]
PAGES = {error_response(make())[::2]: make for make in _ERRORS}


class FastGatewayTransport:
    """A Transport over FastGateway's endpoint side (module docstring): one gateway per target,
    started on first use, each with a Router that routes every request to that target."""

    def __init__(self, group: anyio.abc.TaskGroup, timeouts: Timeouts = Timeouts()) -> None:
        self.group = group
        self.timeouts = timeouts
        #: The client side: requests to the gateways (its timeouts are the defaults, longer
        #: than the gateway's own, which are the ones tested).
        self.client = PooledTransport(fast_path=True)
        self.routers: dict[Target, Router] = {}
        self.gateways: dict[Target, int] = {}

    async def gateway(self, target: Target) -> int:
        """The port of the gateway forwarding to `target`."""
        port = self.gateways.get(target)
        if port is None:
            source = MemorySource(objects=[
                ingress("conformance", [(None, [("/", "Prefix", "web")])]), service("web"),
                endpoint_slice("web", target.port, target.host),
            ])  # fmt: skip
            router = self.routers[target] = Router([source])
            gateway = FastGateway(router, timeouts=self.timeouts)
            port = self.gateways[target] = await self.group.start(gateway.serve, "127.0.0.1", 0)
        return port

    async def send(self, target: Target, request: ForwardRequest) -> ForwardResponse:
        port = await self.gateway(target)
        response = await self.client.send(Target("127.0.0.1", port), request)
        if response.status in {status for status, _ in PAGES}:
            body = await response.read()
            make = PAGES.get((response.status, body))
            if make is not None:
                raise make()
            response = attrs.evolve(response, body=_once(body))
        return response

    async def aclose(self) -> None:
        await self.client.aclose()


async def _once(body: bytes) -> AsyncIterator[bytes]:
    yield body


@contextlib.asynccontextmanager
async def running(timeouts: Timeouts) -> AsyncIterator[FastGatewayTransport]:
    """A FastGatewayTransport whose gateways have `timeouts`, stopped at the end."""
    async with anyio.create_task_group() as group:
        transport = FastGatewayTransport(group, timeouts)
        yield transport
        await transport.aclose()
        group.cancel_scope.cancel()


@pytest.fixture
async def transport() -> AsyncIterator[FastGatewayTransport]:
    async with running(Timeouts()) as made:
        yield made


@pytest.fixture
async def slow_transport() -> AsyncIterator[FastGatewayTransport]:
    async with running(SLOW_TIMEOUTS) as made:
        yield made


class Answers:
    """An observer of a Router: the status each request was answered with, as it ended on the
    gateway (an error's status, also when the client only saw its body cut short)."""

    def __init__(self, router: Router) -> None:
        self.statuses: list[int] = []
        self.ended = anyio.Event()
        router.observers.append(self)

    def forwarded(self, decision: Decision, status: int, seconds: float) -> None:
        self.statuses.append(status)
        self.ended.set()

    def rebuilt(self, seconds: float) -> None:
        pass


async def cut_short(transport: FastGatewayTransport, backend: Backend, path: str) -> int:
    """GET `path`, whose response goes wrong after its head: the body is cut short (never
    passed on as whole); the status the gateway's observers were told."""
    await transport.gateway(backend.target)
    answers = Answers(transport.routers[backend.target])
    response = await transport.send(backend.target, get(path))
    assert response.status == 200
    with pytest.raises(UpstreamClosed):
        await response.read()
    await answers.ended.wait()
    return answers.statuses[-1]


# Three of the suite's tests are replaced here by what they mean for a gateway (same names, so
# the suite's own are not collected): a failure after the response head went out can only cut
# the client's body, and FastGateway has no write timeout.


@pytest.mark.parametrize(("path", "error"), [  # type: ignore[no-redef]
    ("/bad-status", UpstreamProtocolError), ("/cl-te", UpstreamProtocolError),
    ("/bad-chunk", UpstreamProtocolError), ("/close-mid", UpstreamClosed),
])  # fmt: skip
async def test_broken_responses_are_errors_never_passed_on(
    transport: FastGatewayTransport, backend: Backend, path: str, error: type[UpstreamError]
) -> None:
    """The suite's test, except /bad-chunk: the broken chunk comes after the head went out, so
    the client sees its body cut short (UpstreamClosed) and the gateway reports 502."""
    if path != "/bad-chunk":
        await suite.test_broken_responses_are_errors_never_passed_on(
            transport, backend, path, error
        )
        return
    assert await cut_short(transport, backend, "/bad-chunk") == 502
    assert await (await transport.send(backend.target, get("/fixed?size=3"))).read() == b"xxx"


async def test_read_timeout(  # type: ignore[no-redef]
    slow_transport: FastGatewayTransport, backend: Backend
) -> None:
    """Before the head: UpstreamTimeout (504, phase read); in the body (/slow-body), after the
    head went out: the body is cut short and the gateway reports 504."""
    with pytest.raises(UpstreamTimeout) as info:  # 504 with the read timeout's page
        await slow_transport.send(backend.target, get("/slow-head"))
    assert info.value.phase == "read"
    assert await cut_short(slow_transport, backend, "/slow-body") == 504


async def test_write_timeout(  # type: ignore[no-redef]
    slow_transport: FastGatewayTransport, backend: Backend
) -> None:
    """FastGateway has no write timeout: a body the endpoint does not read pauses the client
    connection (flow control), and the read timeout, counted from the request head, answers
    504."""

    async def endless() -> AsyncIterator[bytes]:
        while True:
            yield b"w" * 65536

    await slow_transport.gateway(backend.target)
    answers = Answers(slow_transport.routers[backend.target])
    request = ForwardRequest("POST", "/no-read", [(b"Host", b"h")], body=endless())
    # The gateway answers 504 and closes while the client still sends: the client sees the
    # connection closed under its request (or reads the 504 when it gets there first).
    with pytest.raises((UpstreamClosed, UpstreamTimeout)):
        await slow_transport.send(backend.target, request)
    await answers.ended.wait()
    assert answers.statuses == [504]

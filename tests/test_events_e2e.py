"""RequestEvents through every front (HttpServer on asyncio and trio, FastGateway, the ASGI
gateway on asyncio and trio): one per request, for each way a request can end."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

import anyio
import pytest

from kroute.gateway.access import AccessLog, HeaderModes, LogFormat
from kroute.gateway.asgi import AsgiGateway
from kroute.gateway.events import RequestEvent
from kroute.gateway.router import Router
from kroute.pipeline import Answer, Filters, UpstreamRequest
from kroute.transport.conformance import Backend
from kroute.watch.sources import MemorySource
from tests.builders import httproute, to
from tests.fronts import FrontClient, echo_gateway
from tests.test_gateway_e2e import endpoint_slice, service

pytestmark = pytest.mark.anyio


class Sink:
    """An observer that wants events: keeps them, and wakes whoever waits for the next."""

    def __init__(self) -> None:
        self.events: list[RequestEvent] = []
        self._arrived: anyio.Event | None = None

    def requested(self, event: RequestEvent) -> None:
        self.events.append(event)
        if self._arrived is not None:
            self._arrived.set()

    async def wait(self, count: int = 1) -> list[RequestEvent]:
        """Once `count` events arrived (a front may tell of a request after its client has
        the response: HttpServer does once the body is sent)."""
        with anyio.fail_after(10):
            while len(self.events) < count:
                self._arrived = anyio.Event()
                await self._arrived.wait()
        return self.events


def deny() -> Filters:
    registered = Filters()

    @registered.register("deny")
    def denied(request: UpstreamRequest) -> Answer | None:
        return Answer(403, "no entry", body=b"no\n")

    return registered


ROUTES = [
    httproute("ok", [{"backendRefs": [to("web")]}], hostnames=["ok.local"]),
    httproute("flaky", [{"backendRefs": [to("flaky")]}], hostnames=["flaky.local"]),
    httproute("dead", [{"backendRefs": [to("dead")]}], hostnames=["dead.local"]),
    httproute("empty", [{"backendRefs": [to("empty")]}], hostnames=["empty.local"]),
    httproute("moved", [{"filters": [{"type": "RequestRedirect", "requestRedirect": {
        "scheme": "https", "statusCode": 301}}]}], hostnames=["moved.local"]),
    httproute("denied", [{"filters": [{"type": "ExtensionRef", "extensionRef": {
        "group": "kroute.dev", "kind": "Filter", "name": "deny"}}],
        "backendRefs": [to("web")]}], hostnames=["denied.local"]),
]  # fmt: skip


def services(port: int) -> list[dict[str, Any]]:
    """Services beside `web` (the echo backend on 127.0.0.2:`port`): `flaky` has a dead
    endpoint (the same port where nothing listens: connection refused) and the live one,
    `dead` only a dead one, `empty` none."""
    return [
        service("flaky"), endpoint_slice("flaky", port, "127.0.0.3", "127.0.0.2"),
        service("dead"), endpoint_slice("dead", port, "127.0.0.4"),
        service("empty"),
    ]  # fmt: skip


@pytest.fixture
async def served(every_front: str) -> AsyncIterator[tuple[FrontClient, Backend, Router, Sink]]:
    async with echo_gateway(ROUTES, every_front, filters=deny()) as (front, backend, router):
        source = router.sources[0]
        assert isinstance(source, MemorySource)
        for obj in services(backend.port):
            source.apply(obj)
        sink = Sink()
        router.observers.append(sink)
        yield front, backend, router, sink


async def test_a_forwarded_request(served: tuple[FrontClient, Backend, Router, Sink]) -> None:
    front, backend, _, sink = served
    status, _, body = await front.request("ok.local", "/echo?x=1",
                                          headers=[(b"X-Trace", b"t1")])  # fmt: skip
    assert status == 200
    (event,) = await sink.wait()
    assert (event.method, event.host, event.target) == ("GET", "ok.local", "/echo?x=1")
    assert event.protocol == "HTTP/1.1"
    assert event.client_ip == "127.0.0.1"
    assert event.client_port > 0
    assert event.entry_point == "web"
    assert (event.status, event.outcome, event.origin_status) == (200, "forwarded", 200)
    assert "ok" in event.route
    assert event.service == "default/web:80"
    assert event.endpoints == (f"127.0.0.2:{backend.port}",)
    assert event.retries == 0
    assert event.bytes_sent == event.origin_bytes == len(body)
    assert 0 <= event.origin_seconds <= event.seconds
    assert (b"x-trace", b"t1") in [(n.lower(), v) for n, v in event.request_headers]
    assert event.start_utc.tzinfo is not None


async def test_no_route(served: tuple[FrontClient, Backend, Router, Sink]) -> None:
    front, _, _, sink = served
    status, _, body = await front.request("nowhere.local", "/x")
    assert status == 404
    (event,) = await sink.wait()
    assert (event.status, event.outcome, event.route, event.endpoints) == (404, "no_route", "", ())
    assert event.bytes_sent == len(body)
    assert event.origin_status == 0


async def test_every_attempt_failed(served: tuple[FrontClient, Backend, Router, Sink]) -> None:
    front, _, _, sink = served
    status, _, _ = await front.request("dead.local", "/echo")
    assert status == 502
    (event,) = await sink.wait()
    assert (event.status, event.outcome, event.service) == (
        502,
        "upstream_error",
        "default/dead:80",
    )
    assert event.endpoints[0].startswith("127.0.0.4:")
    assert event.origin_status == 0
    assert event.reason


async def test_no_endpoint(served: tuple[FrontClient, Backend, Router, Sink]) -> None:
    front, _, _, sink = served
    status, _, _ = await front.request("empty.local", "/echo")
    assert status == 503
    (event,) = await sink.wait()
    assert (event.status, event.outcome, event.endpoints) == (503, "unavailable", ())


async def test_a_retry_is_one_event_with_both_endpoints(
    served: tuple[FrontClient, Backend, Router, Sink],
) -> None:
    front, backend, _, sink = served
    for _ in range(2):  # round robin: one of the two starts at the dead endpoint
        status, _, _ = await front.request("flaky.local", "/echo")
        assert status == 200
    events = await sink.wait(2)
    live, dead = f"127.0.0.2:{backend.port}", f"127.0.0.3:{backend.port}"
    retried = [e for e in events if e.retries]
    assert retried
    for event in retried:
        assert event.endpoints == (dead, live)
        assert (event.status, event.outcome, event.retries) == (200, "forwarded", 1)


async def test_a_redirect(served: tuple[FrontClient, Backend, Router, Sink]) -> None:
    front, _, _, sink = served
    status, _, _ = await front.request("moved.local", "/a?b=1")
    assert status == 301
    (event,) = await sink.wait()
    assert (event.status, event.outcome, event.target) == (301, "redirect", "/a?b=1")
    assert "moved" in event.route


async def test_a_step_answered(served: tuple[FrontClient, Backend, Router, Sink]) -> None:
    front, backend, _, sink = served
    status, _, body = await front.request("denied.local", "/echo")
    assert (status, body) == (403, b"no\n")
    (event,) = await sink.wait()
    assert (event.status, event.outcome, event.endpoints) == (403, "answered", ())
    assert "deny" in event.steps[0]
    assert event.bytes_sent == 3
    assert backend.hits == {}


async def test_a_client_that_goes_away(
    served: tuple[FrontClient, Backend, Router, Sink], every_front: str
) -> None:
    front, _, router, sink = served
    size = 50_000_000  # more than the sockets' buffers hold: the front writes to a closed socket
    if every_front == "asgi":
        await abandon_asgi(router, f"/fixed?size={size}")
    else:
        assert front.port is not None
        async with await anyio.connect_tcp("127.0.0.1", front.port) as stream:
            await stream.send(b"GET /fixed?size=%d HTTP/1.1\r\nHost: ok.local\r\n\r\n" % size)
            received = b""
            while b"\r\n\r\n" not in received:
                received += await stream.receive()
    (event,) = await sink.wait()
    assert event.outcome == "client_abort"
    assert event.status in (200, 499)
    assert event.bytes_sent < size


async def abandon_asgi(router: Router, target: str) -> None:
    """The ASGI gateway's client goes away after the first piece of the body: the server's
    `send` fails (as an ASGI server's does on a closed connection)."""
    app = AsgiGateway(router)
    scope = {"type": "http", "method": "GET", "path": target.split("?")[0],
             "raw_path": target.split("?")[0].encode(), "query_string": target.split("?")[1].encode(),
             "headers": [(b"host", b"ok.local")], "client": ("127.0.0.1", 5000),
             "server": ("127.0.0.1", 80), "scheme": "http", "http_version": "1.1"}  # fmt: skip
    received = False

    async def receive() -> dict[str, Any]:
        nonlocal received
        if not received:
            received = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await anyio.sleep_forever()
        raise AssertionError

    async def send(message: Any) -> None:
        if message["type"] == "http.response.body":
            raise OSError("the client went away")

    with pytest.raises(OSError, match="went away"):
        await app(scope, receive, send)


async def test_nothing_is_built_without_a_listener(
    every_front: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Observers that want no events (Metrics): no record kept, no event made."""

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("an event was built with nobody listening")

    monkeypatch.setattr("kroute.gateway.recording.RequestRecord", never)
    monkeypatch.setattr("kroute.gateway.fast.relay.exchange_facts", never)
    async with echo_gateway(ROUTES, every_front) as (front, _, router):
        assert not router.observers.listening
        assert (await front.request("ok.local", "/echo"))[0] == 200
        assert (await front.request("nowhere.local"))[0] == 404


async def test_an_access_log_line_for_every_outcome(
    served: tuple[FrontClient, Backend, Router, Sink], tmp_path: Path
) -> None:
    front, _, router, sink = served
    modes = HeaderModes("keep", {"Authorization": "redact", "Cookie": "drop"})
    with AccessLog(tmp_path / "access.log", format=LogFormat(headers=modes)) as log:
        router.observers.append(log)
        secret = [(b"Authorization", b"Bearer s3cret"), (b"Cookie", b"c=1"), (b"X-Id", b"7")]
        asked = [("ok.local", 200), ("nowhere.local", 404), ("dead.local", 502),
                 ("empty.local", 503), ("moved.local", 301), ("denied.local", 403)]  # fmt: skip
        for host, status in asked:
            assert (await front.request(host, "/echo", headers=secret))[0] == status
        await sink.wait(len(asked))
        assert await anyio.to_thread.run_sync(log.drain)
    lines = [json.loads(line) for line in (tmp_path / "access.log").read_text().splitlines()]
    assert [(line["RequestHost"], line["DownstreamStatus"]) for line in lines] == asked
    assert [line["kroute_outcome"] for line in lines] == [
        "forwarded",
        "no_route",
        "upstream_error",
        "unavailable",
        "redirect",
        "answered",
    ]
    for line in lines:
        assert line["request_Authorization"] == "REDACTED"
        assert "request_Cookie" not in line
        assert line["request_X-Id"] == "7"
        assert line["entryPointName"] == "web"
    assert lines[0]["OriginStatus"] == 200
    assert lines[0]["ServiceName"] == "default/web:80"
    assert lines[2]["OriginStatus"] == 0


@pytest.mark.parametrize("form", ["json", "common"])
async def test_a_log_alone_gets_the_headers_its_format_writes(
    every_front: str, form: Literal["json", "common"], tmp_path: Path
) -> None:
    """With no other listener, the fronts capture the request's headers only for a format that
    writes some (`Observers.headers`): a common line still says the Referer and User-Agent."""
    async with echo_gateway(ROUTES, every_front) as (front, _, router):
        with AccessLog(tmp_path / "access.log", format=LogFormat(form)) as log:
            router.observers.append(log)
            assert router.observers.headers is (form == "common")
            sent = [(b"Referer", b"https://from.example/"), (b"User-Agent", b"probe/1")]
            assert (await front.request("ok.local", "/echo", headers=sent))[0] == 200
            with anyio.fail_after(10):
                while not log.statistics().seen:
                    await anyio.sleep(0.01)
            assert await anyio.to_thread.run_sync(log.drain)
    (line,) = (tmp_path / "access.log").read_text().splitlines()
    if form == "common":
        assert '"https://from.example/" "probe/1"' in line
    else:
        assert json.loads(line)["DownstreamStatus"] == 200
        assert not [field for field in json.loads(line) if field.startswith("request_")]

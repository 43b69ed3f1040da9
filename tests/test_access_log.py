"""Access logs: lines formatted offline from events (any event, one valid line), filters,
header modes; the writer's rotation on SIGUSR1 and its bounded queue under load."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kroute.errors import ConfigError
from kroute.gateway.access import AccessLog, HeaderModes, LogFilters, LogFormat
from kroute.gateway.access.format import FIELDS, common_line, json_line
from kroute.gateway.events import RequestEvent
from tests.builders import httproute, to
from tests.fronts import FrontClient, echo_gateway


def event(**fields: Any) -> RequestEvent:
    values: dict[str, Any] = {
        "method": "GET", "host": "shop.local:8080", "target": "/cart?id=1", "protocol": "HTTP/1.1",
        "client_ip": "127.0.0.1", "client_port": 50000, "entry_point": "web",
        "started": 1_767_225_600.25, "seconds": 0.0123, "status": 200, "bytes_sent": 42,
        "outcome": "forwarded", "route": "HTTPRoute default/shop", "service": "default/web:80",
        "endpoints": ("10.0.0.1:8080",), "origin_status": 200, "origin_bytes": 42,
        "origin_seconds": 0.01,
        "request_headers": ((b"User-Agent", b"curl/8"), (b"Authorization", b"Bearer s3cret"),
                            (b"X-Request-Id", b"abc")),
    }  # fmt: skip
    values.update(fields)
    return RequestEvent(**values)


def test_a_json_line_has_traefiks_fields() -> None:
    line = json.loads(json_line(event()))
    assert set(FIELDS) <= set(line)
    assert line["ClientHost"] == "127.0.0.1"
    assert line["ClientPort"] == "50000"
    assert (line["RequestHost"], line["RequestPort"], line["RequestAddr"]) == (
        "shop.local", "8080", "shop.local:8080")  # fmt: skip
    assert line["RequestPath"] == "/cart?id=1"
    assert line["Duration"] == 12_300_000  # nanoseconds, as Traefik
    assert line["OriginDuration"] == 10_000_000
    assert (line["DownstreamStatus"], line["DownstreamContentSize"]) == (200, 42)
    assert (line["ServiceAddr"], line["ServiceURL"]) == ("10.0.0.1:8080", "http://10.0.0.1:8080")
    assert line["StartUTC"] == "2026-01-01T00:00:00.25Z"
    assert line["RetryAttempts"] == 0
    assert line["entryPointName"] == "web"
    assert not any(name.startswith("request_") for name in line)  # headers: drop by default


def test_headers_kept_dropped_or_redacted_by_name() -> None:
    modes = HeaderModes("keep", {"authorization": "redact", "X-Request-Id": "drop"})
    line = json.loads(json_line(event(), modes))
    assert line["request_User-Agent"] == "curl/8"
    assert line["request_Authorization"] == "REDACTED"
    assert "request_X-Request-Id" not in line
    line = json.loads(json_line(event(), HeaderModes("drop", {"x-request-id": "keep"})))
    assert [n for n in line if n.startswith("request_")] == ["request_X-Request-Id"]
    with pytest.raises(ConfigError, match="hide"):
        HeaderModes("hide")  # type: ignore[arg-type]


def test_the_common_log_format_as_traefik_writes_it() -> None:
    assert common_line(event(), 7) == (
        '127.0.0.1 - - [01/Jan/2026:00:00:00 +0000] "GET /cart?id=1 HTTP/1.1" 200 42 "-" '
        '"curl/8" 7 "HTTPRoute default/shop" "http://10.0.0.1:8080" 12ms'
    )
    unrouted = common_line(event(route="", endpoints=(), origin_status=0, status=404))
    assert unrouted.endswith('404 42 "-" "curl/8" 0 "-" "-" 12ms')


@pytest.mark.parametrize(("filters", "kept"), [
    (LogFilters(), [True, True, True, True]),
    (LogFilters(status_codes=LogFilters.parse_status_codes(["500-599", "404"])),
     [False, True, True, False]),
    (LogFilters(retry_attempts=True), [False, False, False, True]),
    (LogFilters(min_duration=1.0), [False, False, True, False]),
    (LogFilters(status_codes=((404, 404),), retry_attempts=True), [False, True, False, True]),
])  # fmt: skip
def test_a_line_is_kept_when_any_filter_matches(filters: LogFilters, kept: list[bool]) -> None:
    events = [event(), event(status=404), event(status=502, seconds=2.0),
              event(endpoints=("a:1", "b:1"))]  # fmt: skip
    assert [filters.keeps(e) for e in events] == kept


@pytest.mark.parametrize("text", ["2xx", "200-", "300-200", "20"])
def test_status_code_ranges_are_checked(text: str) -> None:
    with pytest.raises(ConfigError, match="statusCodes"):
        LogFilters.parse_status_codes([text])


texts = st.text(max_size=40)
headers = st.lists(st.tuples(st.binary(min_size=1, max_size=20), st.binary(max_size=40)),
                   max_size=5).map(tuple)  # fmt: skip


@given(method=texts, host=texts, target=texts, route=texts, agent=st.binary(max_size=40),
       request_headers=headers, status=st.integers(0, 999),
       seconds=st.floats(0, 1e6, allow_nan=False), started=st.floats(0, 4e9, allow_nan=False))  # fmt: skip
def test_any_event_makes_one_valid_line(
    method: str, host: str, target: str, route: str, agent: bytes,
    request_headers: tuple[tuple[bytes, bytes], ...], status: int, seconds: float, started: float,
) -> None:  # fmt: skip
    hostile = event(method=method, host=host, target=target, route=route, status=status,
                    seconds=seconds, started=started,
                    request_headers=((b"User-Agent", agent), *request_headers))  # fmt: skip
    line = json_line(hostile, HeaderModes("keep"))
    assert "\n" not in line
    assert json.loads(line)["RequestPath"] == target
    common = common_line(hostile)
    assert "\n" not in common
    assert "\r" not in common


# -- the writer ---------------------------------------------------------------------------


def test_lines_go_to_the_file_and_it_is_reopened_on_sigusr1(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    previous = signal.getsignal(signal.SIGUSR1)
    try:
        with AccessLog(path) as log:
            log.reopen_on_signal()
            log.requested(event(target="/first"))
            assert log.drain()
            os.rename(path, tmp_path / "access.log.1")  # logrotate's move
            os.kill(os.getpid(), signal.SIGUSR1)
            log.requested(event(target="/second"))
            assert log.drain()
    finally:
        signal.signal(signal.SIGUSR1, previous)
    rotated = (tmp_path / "access.log.1").read_text().splitlines()
    assert [json.loads(line)["RequestPath"] for line in rotated] == ["/first"]
    assert [json.loads(line)["RequestPath"] for line in path.read_text().splitlines()] == [
        "/second"
    ]


@attrs.frozen
class StalledFormat(LogFormat):
    """Lines that wait for `go`: a writer stuck on a slow disk (the common format: a JSON
    log writes FastGateway's lines without `line`)."""

    go: threading.Event = attrs.field(factory=threading.Event, eq=False)

    def line(self, event: RequestEvent, count: int = 0) -> str:
        self.go.wait(30)
        return super().line(event, count)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_a_full_queue_drops_and_counts_and_serving_goes_on(
    tmp_path: Path, anyio_backend: str
) -> None:
    stalled = StalledFormat("common")
    routes = [httproute("ok", [{"backendRefs": [to("web")]}], hostnames=["ok.local"])]
    requests = 30
    async with echo_gateway(routes, "fast") as (front, _, router):
        with AccessLog(tmp_path / "access.log", format=stalled, buffer=5) as log:
            router.observers.append(log)
            for _ in range(requests):
                assert (await front.request("ok.local", "/echo"))[0] == 200
            stats = log.statistics()
            assert stats.seen == requests
            assert stats.written == 0  # (the writer is stuck)
            assert stats.dropped >= requests - 2 * 5  # the queue, and one batch taken by it
            stalled.go.set()
            assert await anyio.to_thread.run_sync(log.drain)
            stats = log.statistics()
            assert stats.written + stats.dropped == requests
    assert len((tmp_path / "access.log").read_text().splitlines()) == stats.written


@pytest.mark.anyio
async def test_the_example_gateway_writes_the_access_log_its_flags_ask_for(
    tmp_path: Path, anyio_backend: str
) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples" / "gateway"))
    try:
        import gateway
    finally:
        sys.path.pop(0)
    path = tmp_path / "access.log"
    manifests = Path(gateway.__file__).parent / "manifests"
    args = gateway.parse_args([
        "--manifests", str(manifests), "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0",
        "--grace", "1", "--no-gc-freeze", "--access-log", str(path),
        "--access-log-status", "500-599", "--access-log-headers", "keep",
        "--access-log-header", "Authorization=redact",
    ])  # fmt: skip
    stop = anyio.Event()
    async with anyio.create_task_group() as group:
        started = await group.start(gateway.serve, args, stop)
        with anyio.fail_after(10):
            while not started.router.ready:
                await anyio.sleep(0.01)
        client = FrontClient(started.port, None)
        # No pod of the example runs here: its routes answer 502 (kept), others 404 (filtered).
        auth = [(b"Authorization", b"Basic c2VjcmV0")]
        assert (await client.request("test-www.localhost", "/", headers=auth))[0] == 502
        assert (await client.request("unknown.localhost", "/"))[0] == 404
        await client.transport.aclose()
        stop.set()
    (line,) = [json.loads(text) for text in path.read_text().splitlines()]
    assert (line["RequestHost"], line["DownstreamStatus"]) == ("test-www.localhost", 502)
    assert line["request_Authorization"] == "REDACTED"
    if signal.getsignal(signal.SIGUSR1) not in (signal.SIG_DFL, None):
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)  # (installed by the example)

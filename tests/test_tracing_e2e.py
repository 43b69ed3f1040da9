"""Tracing through every front (HttpServer on asyncio and trio, FastGateway, the ASGI gateway
on asyncio and trio), seen through the OpenTelemetry SDK's in-memory exporter: the spans, their
links, the W3C Trace Context fields the backend receives, sampling."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence

import anyio
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, Sampler
from opentelemetry.trace import SpanKind, StatusCode

from kroute.gateway.router import Router
from kroute.gateway.tracing import FRESH_LINES, Trace, Tracing
from kroute.pipeline.fetch import Call, FetchFailed, Reply
from kroute.transport.conformance import Backend
from kroute.watch.sources import MemorySource
from tests.fronts import FrontClient, echo_gateway
from tests.test_events_e2e import ROUTES, deny, services

pytestmark = pytest.mark.anyio

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01".encode()


class Spans(SpanExporter):
    """The SDK's InMemorySpanExporter, and a wake-up for whoever waits for spans (a front ends
    a request's span once the response is sent: HttpServer after the client has it)."""

    def __init__(self) -> None:
        self.memory = InMemorySpanExporter()
        self._arrived: anyio.Event | None = None

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self.memory.export(spans)
        if self._arrived is not None:
            self._arrived.set()
        return result

    def servers(self) -> list[ReadableSpan]:
        return [s for s in self.memory.get_finished_spans() if s.kind == SpanKind.SERVER]

    async def wait(self, servers: int = 1) -> list[ReadableSpan]:
        """Every span finished once `servers` server spans have."""
        with anyio.fail_after(10):
            while len(self.servers()) < servers:
                self._arrived = anyio.Event()
                await self._arrived.wait()
        return list(self.memory.get_finished_spans())


def provider(sampler: Sampler = ALWAYS_ON) -> tuple[TracerProvider, Spans]:
    spans = Spans()
    made = TracerProvider(sampler=sampler)
    made.add_span_processor(SimpleSpanProcessor(spans))
    return made, spans


Served = tuple[FrontClient, Backend, Router, Spans]


async def serve(front: str, sampler: Sampler, ratio: float | None = None) -> AsyncIterator[Served]:
    traced, spans = provider(sampler)
    tracing = Tracing(traced, sample_ratio=ratio)
    async with echo_gateway(ROUTES, front, filters=deny(),
                            tracing=tracing) as (client, backend, router):  # fmt: skip
        source = router.sources[0]
        assert isinstance(source, MemorySource)
        for obj in services(backend.port):
            source.apply(obj)
        yield client, backend, router, spans


@pytest.fixture
async def served(every_front: str) -> AsyncIterator[Served]:
    async for found in serve(every_front, ALWAYS_ON):
        yield found


@pytest.fixture(params=["by-sdk", "by-kroute"])
async def unsampled(every_front: str, request: pytest.FixtureRequest) -> AsyncIterator[Served]:
    """Nothing sampled: by the provider's sampler, or by kroute's (`sample_ratio=0`) before the
    provider, whose sampler would keep everything."""
    if request.param == "by-sdk":
        async for found in serve(every_front, ALWAYS_OFF):
            yield found
    else:
        async for found in serve(every_front, ALWAYS_ON, ratio=0.0):
            yield found


def received(body: bytes, name: str) -> list[str]:
    """The values of the field `name` that the echo backend received."""
    return [v for n, v in json.loads(body)["headers"] if n.lower() == name]


def traceparent(span: ReadableSpan) -> str:
    context = span.get_span_context()
    assert context is not None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


async def test_a_request_starts_a_trace_the_backend_continues(served: Served) -> None:
    front, backend, _, spans = served
    status, _, body = await front.request("ok.local", "/echo?x=1")
    assert status == 200
    found = await spans.wait()
    (server,) = [s for s in found if s.kind == SpanKind.SERVER]
    (attempt,) = [s for s in found if s.kind == SpanKind.CLIENT]
    assert server.parent is None  # (the client sent no trace context: a new trace)
    assert received(body, "traceparent") == [traceparent(server)]
    assert attempt.parent is not None
    assert attempt.parent.span_id == server.context.span_id
    assert server.name.startswith("GET ")
    assert "ok" in server.name
    attributes = dict(server.attributes or {})
    assert attributes["http.request.method"] == "GET"
    assert (attributes["url.path"], attributes["url.query"]) == ("/echo", "x=1")
    assert attributes["url.scheme"] == "http"
    assert attributes["server.address"] == "ok.local"
    assert attributes["http.response.status_code"] == 200
    assert attributes["kroute.service"] == "default/web:80"
    assert attributes["kroute.entry_point"] == "web"
    assert attributes["kroute.outcome"] == "forwarded"
    assert "ok" in str(attributes["kroute.route"])
    assert server.status.status_code == StatusCode.UNSET
    assert dict(attempt.attributes or {})["server.address"] == "127.0.0.2"
    assert dict(attempt.attributes or {})["server.port"] == backend.port
    assert dict(attempt.attributes or {})["http.response.status_code"] == 200


async def test_the_clients_trace_context_is_continued(served: Served) -> None:
    front, _, _, spans = served
    sent = [(b"traceparent", TRACEPARENT), (b"tracestate", b"vendor=abc")]
    status, _, body = await front.request("ok.local", "/echo", headers=sent)
    assert status == 200
    (server,) = [s for s in await spans.wait() if s.kind == SpanKind.SERVER]
    assert server.parent is not None
    assert server.parent.is_remote
    assert f"{server.parent.span_id:016x}" == PARENT_ID
    assert f"{server.context.trace_id:032x}" == TRACE_ID
    # The backend gets this hop's span as its parent, once: the client's field is replaced.
    assert received(body, "traceparent") == [traceparent(server)]
    assert received(body, "tracestate") == ["vendor=abc"]


async def test_an_invalid_traceparent_starts_a_new_trace(served: Served) -> None:
    front, _, _, spans = served
    status, _, body = await front.request("ok.local", "/echo",
                                          headers=[(b"traceparent", b"00-zz-1-01")])  # fmt: skip
    assert status == 200
    (server,) = [s for s in await spans.wait() if s.kind == SpanKind.SERVER]
    assert server.parent is None
    assert received(body, "traceparent") == [traceparent(server)]


async def test_a_retry_is_two_attempt_spans(served: Served) -> None:
    front, _backend, _, spans = served
    for _ in range(2):  # round robin: one of the two starts at the dead endpoint
        assert (await front.request("flaky.local", "/echo"))[0] == 200
    found = await spans.wait(2)
    retried = [s for s in spans.servers() if dict(s.attributes or {})["kroute.retries"] == 1]
    assert retried
    for server in retried:
        attempts = sorted(
            (s for s in found if s.parent and s.parent.span_id == server.context.span_id),
            key=lambda s: s.start_time or 0,
        )
        assert [dict(a.attributes or {})["server.address"] for a in attempts] == [
            "127.0.0.3", "127.0.0.2",
        ]  # fmt: skip
        failed, answered = attempts
        assert failed.status.status_code == StatusCode.ERROR
        assert dict(failed.attributes or {})["error.type"]
        assert dict(answered.attributes or {})["http.response.status_code"] == 200
        assert [dict(a.attributes or {})["kroute.attempt"] for a in attempts] == [1, 2]
        assert server.status.status_code == StatusCode.UNSET


@pytest.mark.parametrize(("host", "status"), [("nowhere.local", 404), ("dead.local", 502),
                                              ("empty.local", 503), ("denied.local", 403)])  # fmt: skip
async def test_a_request_not_forwarded(served: Served, host: str, status: int) -> None:
    front, _, _, spans = served
    assert (await front.request(host, "/echo"))[0] == status
    found = await spans.wait()
    (server,) = [s for s in found if s.kind == SpanKind.SERVER]
    attributes = dict(server.attributes or {})
    assert attributes["http.response.status_code"] == status
    if status >= 500:
        assert server.status.status_code == StatusCode.ERROR
        assert attributes["error.type"] == str(status)
    else:
        assert server.status.status_code == StatusCode.UNSET
        assert "error.type" not in attributes
    attempts = [s for s in found if s.kind == SpanKind.CLIENT]
    if host == "dead.local":
        assert attempts
        assert all(a.status.status_code == StatusCode.ERROR for a in attempts)
    else:
        assert attempts == []


async def test_unsampled_requests_make_no_spans_but_pass_the_context_on(
    unsampled: Served,
) -> None:
    front, _, _, spans = unsampled
    status, _, body = await front.request("ok.local", "/echo")
    assert status == 200
    (field,) = received(body, "traceparent")
    version, trace_id, span_id, flags = field.split("-")
    assert version == "00"
    assert not int(flags, 16) & 1  # sampled=0 (Trace Context section 3.2.2.5)
    assert int(trace_id, 16)
    assert int(span_id, 16)
    sent = [(b"traceparent", TRACEPARENT.replace(b"-01", b"-00"))]
    status, _, body = await front.request("ok.local", "/echo", headers=sent)
    (field,) = received(body, "traceparent")
    assert field.startswith(f"00-{TRACE_ID}-")
    assert not int(field.rpartition("-")[2], 16) & 1
    assert not field.startswith(f"00-{TRACE_ID}-{PARENT_ID}")  # (this hop's own span id)
    assert (await front.request("dead.local", "/echo"))[0] == 502
    assert spans.memory.get_finished_spans() == ()


async def test_kroute_samples_parent_based(every_front: str) -> None:
    """With `sample_ratio`, a client's trace context decides (sampled: a span, whatever the
    ratio); without one, the ratio does (0: none)."""
    async for front, _, _, spans in serve(every_front, ALWAYS_ON, ratio=0.0):
        assert (await front.request("ok.local", "/echo"))[0] == 200
        status, _, body = await front.request("ok.local", "/echo",
                                              headers=[(b"traceparent", TRACEPARENT)])  # fmt: skip
        assert status == 200
        (server,) = [s for s in await spans.wait() if s.kind == SpanKind.SERVER]
        assert f"{server.context.trace_id:032x}" == TRACE_ID
        assert received(body, "traceparent") == [traceparent(server)]
    async for front, _, _, spans in serve(every_front, ALWAYS_ON, ratio=1.0):
        assert (await front.request("ok.local", "/echo"))[0] == 200
        (server,) = [s for s in await spans.wait() if s.kind == SpanKind.SERVER]
        assert server.parent is None


def test_a_sample_ratio_is_from_0_to_1() -> None:
    with pytest.raises(ValueError, match="is not from 0 to 1"):
        Tracing(TracerProvider(), sample_ratio=1.5)


async def test_calls_a_step_makes_are_spans_carrying_their_context() -> None:
    traced, spans = provider()
    trace = Tracing(traced).start("GET", [(b"traceparent", TRACEPARENT)], "http")
    calls: list[Call] = []

    async def fetch(call: Call) -> Reply:
        calls.append(call)
        if call.target == "/down":
            raise FetchFailed("no answer")
        return Reply(200, (), b"")

    call = Call("auth.local", 9000, False, "GET", "/check?x", ((b"traceparent", b"old"),), 1, 10)
    assert (await trace.fetcher(fetch)(call)).status == 200
    with pytest.raises(FetchFailed):
        await trace.fetcher(fetch)(Call("auth.local", 9000, False, "GET", "/down", (), 1, 10))
    answered, failed = spans.memory.get_finished_spans()
    assert calls[0].headers == ((b"traceparent", traceparent(answered).encode()),)
    assert answered.parent is not None
    assert isinstance(trace, Trace)
    assert answered.parent.span_id == trace.span.get_span_context().span_id
    assert dict(answered.attributes or {})["server.address"] == "auth.local"
    assert dict(answered.attributes or {})["http.response.status_code"] == 200
    assert failed.status.status_code == StatusCode.ERROR


def test_neither_import_nor_serving_without_tracing_imports_opentelemetry() -> None:
    code = (
        "import asyncio, sys\n"
        "import kroute\n"
        "assert 'opentelemetry' not in sys.modules, 'import kroute'\n"
        "class Started:\n"
        "    def __init__(self): self.port = asyncio.get_running_loop().create_future()\n"
        "    def started(self, port): self.port.set_result(port)\n"
        "async def main():\n"
        "    router = kroute.Router([kroute.MemorySource(objects=[])])\n"
        "    gateway, started = kroute.FastGateway(router), Started()\n"
        "    server = asyncio.create_task(gateway.serve('127.0.0.1', 0, task_status=started))\n"
        "    port = await started.port\n"
        "    reader, writer = await asyncio.open_connection('127.0.0.1', port)\n"
        "    writer.write(b'GET / HTTP/1.1\\r\\nHost: a\\r\\nConnection: close\\r\\n\\r\\n')\n"
        "    assert (await reader.read()).startswith(b'HTTP/1.1 404'), 'served'\n"
        "    server.cancel()\n"
        "asyncio.run(main())\n"
        "assert 'opentelemetry' not in sys.modules, 'serving'\n"
        "print('clean')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("clean")


def test_new_traces_not_sampled_have_valid_ids_of_their_own() -> None:
    """Trace Context section 3.2.2: version 00, a trace id of 32 and a span id of 16 lowercase
    hexadecimal digits, neither all zeros, flags 00; new ids for every request, across the
    batches `Tracing.fresh_line` makes its lines in."""
    tracing = Tracing(TracerProvider(), sample_ratio=0.0, rng=random.Random(7))
    lines = [tracing.new_trace().lines for _ in range(3 * FRESH_LINES + 1)]
    pattern = re.compile(rb"traceparent: 00-([0-9a-f]{32})-([0-9a-f]{16})-00\r\n")
    found = [pattern.fullmatch(line) for line in lines]
    ids = [(int(m[1], 16), int(m[2], 16)) for m in found if m is not None]
    assert len(ids) == len(lines)
    assert all(trace_id and span_id for trace_id, span_id in ids)
    assert len({trace_id for trace_id, _ in ids}) == len(lines)


async def test_trace_context_fields_are_found_whatever_their_case(every_front: str) -> None:
    """Field names are case-insensitive (RFC 9110 section 5.1): a client's `TraceParent` and
    `TraceState` are continued, and replaced rather than passed on twice."""
    async for front, _, _, spans in serve(every_front, ALWAYS_ON, ratio=0.0):
        sent = [(b"TraceParent", TRACEPARENT.replace(b"-01", b"-00")), (b"TraceState", b"k=v")]
        status, _, body = await front.request("ok.local", "/echo", headers=sent)
        assert status == 200
        (field,) = received(body, "traceparent")
        assert field.startswith(f"00-{TRACE_ID}-")
        assert field.endswith("-00")
        assert not field.startswith(f"00-{TRACE_ID}-{PARENT_ID}")
        assert received(body, "tracestate") == ["k=v"]
        assert spans.memory.get_finished_spans() == ()

"""Tracing: OpenTelemetry spans for the requests a gateway serves, W3C trace context passed on.

Why a component the application makes: tracing is optional (`pip install kroute[tracing]`,
the `opentelemetry-api` package), and a gateway that does not trace must not pay for it.
`opentelemetry` is imported when a `Tracing` is made, never by `import kroute`; a Router
without one (`Router.tracing` None) costs each request one attribute test on FastGateway.

What it does, the same on every front (FastGateway in `kroute.gateway.fast.traced`,
HttpServer and the ASGI gateway through `Router.forward` and `kroute.gateway.recording`):

- the request's W3C `traceparent` / `tracestate` (Trace Context, sections 3.2 and 3.3) are
  continued, or a trace is started when there are none (or they are invalid);
- one SERVER span per request, from when it is routed until its response ended (or the client
  went away), with the attributes of `server_attributes`, read from the request's
  `RequestEvent` (the one source logs and traces share); its status is ERROR on a 5xx;
- the request the backend receives carries the server span's `traceparent` (and the
  `tracestate` it continues); the client's own are replaced, never passed on twice;
- a CLIENT span per attempt at an endpoint (`server.address`, `server.port`,
  `kroute.attempt`, the response status or `error.type`), ending with the response head;
- a CLIENT span per HTTP call a route's step makes (forwardAuth's request to its auth
  service), and per RequestMirror copy (sent later by the Router's mirror workers), each
  carrying that span's `traceparent`.

Sampling is the TracerProvider's (the SDK's samplers, e.g. `ParentBased(TraceIdRatioBased(r))`),
or kroute's own before it (`Tracing(provider, sample_ratio=r)`, parent-based): a request kroute
does not sample costs no span at all, where the SDK's `start_span` of a span that does not
record costs about 5 µs. Either way a request that is not sampled gets no attribute computed
and no child span made, but its context (the flag sampled=0) is still passed on, as Trace
Context section 3.2.2.5 asks of a vendor that does not record.
"""

from __future__ import annotations

import importlib.metadata
import random
from binascii import hexlify
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import attrs

from kroute.pipeline.fetch import Call, Fetch, FetchFailed, Reply
from kroute.rules.request import normalize_host

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, SpanContext, Tracer, TracerProvider
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    from kroute.gateway.events import RequestEvent
    from kroute.pipeline.filters import MirrorCopy

__all__ = ["Propagation", "Trace", "Tracing", "server_attributes"]

Header = tuple[bytes, bytes]
#: The Trace Context fields (W3C Trace Context, section 3), lowercase.
TRACE_FIELDS = frozenset({b"traceparent", b"tracestate"})
_LINE_PREFIXES = (b"traceparent:", b"tracestate:")
#: How many new traces' `traceparent` lines `Tracing.fresh` makes at once.
FRESH_LINES = 256


class Tracing:
    """Spans for a Router's requests (module docstring), from `provider` (None: the global
    TracerProvider, `opentelemetry.trace.set_tracer_provider`). Give it to the Router:
    `Router(sources, tracing=Tracing(provider))`, or set `router.tracing` before serving.

    `sample_ratio` None: every request asks the provider's sampler (a span each, recording or
    not: the SDK's `start_span` costs about 5 µs, a third of FastGateway's own work). A ratio:
    kroute samples first, parent-based (a client's trace context decides; without one, a
    `ratio` share of requests is sampled), and only sampled requests reach the provider (whose
    sampler decides again: the SDK's default, `ParentBased(ALWAYS_ON)`, keeps them). A request
    kroute does not sample costs no span, its trace context still passed on (sampled=0).
    """

    def __init__(
        self,
        provider: TracerProvider | None = None,
        *,
        sample_ratio: float | None = None,
        rng: random.Random | None = None,
    ) -> None:
        try:
            from opentelemetry import context, trace
            from opentelemetry.trace.propagation.tracecontext import (
                TraceContextTextMapPropagator,
            )
        except ImportError as exc:  # pragma: no cover (the extra is installed for the tests)
            raise ImportError(
                "kroute's tracing needs opentelemetry-api: pip install 'kroute[tracing]'"
            ) from exc
        if sample_ratio is not None and not 0.0 <= sample_ratio <= 1.0:
            raise ValueError(f"Tracing: sample_ratio {sample_ratio!r} is not from 0 to 1")
        self.api = trace
        provider = provider or trace.get_tracer_provider()
        self.tracer: Tracer = provider.get_tracer("kroute", importlib.metadata.version("kroute"))
        self.propagator: TraceContextTextMapPropagator = TraceContextTextMapPropagator()
        self.sample_ratio = sample_ratio
        self.rng = rng or random.Random()
        #: kroute's sampling of a request without a trace context: a `draw` at or above
        #: `threshold` is not sampled (`sample_ratio`; 2.0, never, when the provider decides).
        self.draw = self.rng.random
        self.threshold = 2.0 if sample_ratio is None else sample_ratio
        self.bits = self.rng.getrandbits
        #: The `traceparent` lines of new traces not sampled, made a batch at a time.
        self.fresh: Iterator[bytes] = iter(())
        #: The parent of a request without a trace context: none (not the caller's current span).
        self.root: Context = context.Context()

    def start(self, method: str, headers: Iterable[Header], scheme: str) -> Propagation:
        """The trace of a request that arrived with `headers` (only its Trace Context fields,
        or none: a front that knows the request has none passes ()): its server span started,
        as a child of the client's trace context when it sent a valid one; or, not sampled by
        kroute, no span: the trace context alone."""
        carrier: dict[str, list[str]] | None = None
        for name, value in headers:
            lower = name.lower()
            if lower in TRACE_FIELDS:  # (several tracestate fields are one list, 3.3)
                carrier = carrier or {}
                carrier.setdefault(lower.decode(), []).append(value.decode("latin-1"))
        ratio = self.sample_ratio
        if carrier is None:
            if self.draw() >= self.threshold:  # (the fast way: no span)
                return self.new_trace()
            parent = None  # (a new trace: the provider's sampler decides)
        else:
            parent = self.propagator.extract(carrier)  # (invalid: a new trace)
            if ratio is not None:
                context = self.api.get_current_span(parent).get_span_context()
                if context.is_valid:
                    if not context.trace_flags.sampled:
                        return self.unsampled(context)
                elif self.draw() >= ratio:
                    return self.new_trace(inbound=True)
        span = self.tracer.start_span(method, parent or self.root, kind=self.api.SpanKind.SERVER)
        context = span.get_span_context()
        lines = fields(context.trace_id, context.span_id, context.trace_flags,
                       context.trace_state.to_header())  # fmt: skip
        trace = Trace(self, lines, bool(carrier), span, method)
        if trace.recording:
            span.set_attributes({"http.request.method": method, "url.scheme": scheme})
        return trace

    def new_trace(self, *, inbound: bool = False) -> Propagation:
        """A new trace kroute does not sample (the request has no valid trace context): a
        `traceparent` of new random ids, sampled=0, and no `tracestate` (Trace Context section
        4, processing model: no traceparent received, a new trace-id and parent-id; sections
        3.2.2.3 to 3.2.2.5), what OpenTelemetry's ParentBased sampler passes on for a root it
        drops, so that the backend's own tracer follows the decision. This runs for every
        request that is not sampled, so the lines are made `FRESH_LINES` at a time
        (`fresh_line`): one draw of random bytes, formatted in C."""
        return Propagation(self, next(self.fresh, None) or self.fresh_line(), inbound)

    def fresh_line(self) -> bytes:
        """The `traceparent` line of a new trace not sampled (`fresh`): the next of a batch
        (`fresh`, an iterator), a new batch made when it ran out."""
        line = next(self.fresh, None)
        if line is None:
            self.fresh = self._fresh_lines()
            line = next(self.fresh)
        return line

    def _fresh_lines(self) -> Iterator[bytes]:
        """`FRESH_LINES` traceparent lines of new ids: 24 random bytes each, a trace id and a
        span id in hexadecimal with the dash between them. (A span id of zeros, which section
        3.2.2.4 calls invalid, is drawn once in 2**64.)"""
        drawn = self.rng.randbytes(24 * FRESH_LINES)
        ids = [hexlify(drawn[at : at + 24], b"-", -16) for at in range(0, len(drawn), 24)]
        return map(b"traceparent: 00-%b-00\r\n".__mod__, ids)

    def unsampled(self, parent: SpanContext) -> Propagation:
        """A request whose client's trace context says not sampled: passed on in `parent`'s
        trace with this hop's own span id (Trace Context section 3.4, "update parent-id"), its
        flags and `tracestate` as received (sections 3.2.2.5, 3.3)."""
        own = self.bits(64) or 1
        state = parent.trace_state.to_header()
        return Propagation(self, fields(parent.trace_id, own, parent.trace_flags, state), True)


def without_fields(lines: bytes) -> bytes:
    """Header lines as FastGateway renders them (`Name: value\\r\\n`) but the Trace Context
    fields (the client's, or a step's: the request gets its trace's instead)."""
    return b"".join(line + b"\r\n" for line in lines.split(b"\r\n")[:-1]
                    if not line[:12].lower().startswith(_LINE_PREFIXES))  # fmt: skip


def fields(trace_id: int, span_id: int, flags: int, state: str) -> bytes:
    """The Trace Context header lines of a span context (W3C Trace Context, section 3.2.2:
    `traceparent` version 00; section 3.3: `tracestate` when there is one)."""
    lines = b"traceparent: 00-%032x-%016x-%02x\r\n" % (trace_id, span_id, flags)
    if state:
        lines += b"tracestate: %b\r\n" % state.encode("latin-1")
    return lines


class Propagation:
    """A request's trace context, passed on to the backend; nothing recorded (what a request
    that is not sampled gets). `Trace` adds the spans of one that is."""

    __slots__ = ("inbound", "lines", "tracing")
    #: The request's spans record (it was sampled): attributes and child spans only then.
    recording = False

    def __init__(self, tracing: Tracing, lines: bytes, inbound: bool) -> None:
        self.tracing = tracing
        #: The Trace Context fields the backend gets, as header lines (`fields`). (A random
        #: draw of ids is all zero, which section 3.2.2 calls invalid, once in 2**64.)
        self.lines = lines
        #: The client sent Trace Context fields (to be replaced, not passed on).
        self.inbound = inbound

    @property
    def values(self) -> list[Header]:
        """The Trace Context fields the backend gets."""
        lines = self.lines.split(b"\r\n")[:-1]
        return [(name, value) for name, _, value in (line.partition(b": ") for line in lines)]

    def propagate(
        self, headers: Iterable[Header], values: list[Header] | None = None
    ) -> list[Header]:
        """`headers` with the Trace Context fields `values` (default: the server span's) in
        place of any they had."""
        kept = [(n, v) for n, v in headers if n.lower() not in TRACE_FIELDS]
        return [*kept, *(self.values if values is None else values)]

    def fetcher(self, fetch: Fetch) -> Fetch:
        """`fetch`, each call carrying the trace context (`Trace`: a span each)."""

        async def propagated(call: Call) -> Reply:
            return await fetch(attrs.evolve(call, headers=tuple(self.propagate(call.headers))))

        return propagated

    async def mirrored(self, copy: MirrorCopy, send: Callable[[MirrorCopy], Awaitable[None]]
                       ) -> None:  # fmt: skip
        """`send` a RequestMirror's copy of the request, carrying the trace context (`Trace`:
        a span of its own)."""
        await send(attrs.evolve(copy, headers=tuple(self.propagate(copy.headers))))

    def attempt(self, address: str, port: int) -> None:
        """An attempt at the endpoint `address`:`port` begins (`Trace`: a span)."""

    def attempt_ended(self, status: int = 0, error: BaseException | str | None = None) -> None:
        """The attempt under way got a response head with `status`, or failed with `error`."""

    def end(self, event: RequestEvent) -> None:
        """The request ended as `event` says (`Trace`: the server span ends)."""


class Trace(Propagation):
    """A request with its server span: the attempt under way, calls the steps make."""

    __slots__ = ("attempt_span", "attempts", "method", "recording", "span")

    def __init__(
        self, tracing: Tracing, lines: bytes, inbound: bool, span: Span, method: str
    ) -> None:
        super().__init__(tracing, lines, inbound)
        self.span = span
        self.method = method
        self.recording = span.is_recording()
        self.attempt_span: Span | None = None
        self.attempts = 0

    @property
    def context(self) -> Context:
        """The server span as the parent of others."""
        context: Context = self.tracing.api.set_span_in_context(self.span)
        return context

    # -- attempts ------------------------------------------------------------------------------

    def attempt(self, address: str, port: int) -> None:
        """An attempt at the endpoint `address`:`port` begins (a span when recording)."""
        if not self.recording:
            return
        self.attempt_ended(error="given up")  # (a try still open: it is not waited for)
        self.attempts += 1
        self.attempt_span = self.tracing.tracer.start_span(
            self.method, self.context, kind=self.tracing.api.SpanKind.CLIENT,
            attributes={"http.request.method": self.method, "server.address": address,
                        "server.port": port, "kroute.attempt": self.attempts},
        )  # fmt: skip

    def attempt_ended(self, status: int = 0, error: BaseException | str | None = None) -> None:
        """The attempt under way got a response head with `status`, or failed with `error`."""
        span = self.attempt_span
        if span is None:
            return
        self.attempt_span = None
        if status:
            span.set_attribute("http.response.status_code", status)
        if error is not None:
            kind = error if isinstance(error, str) else type(error).__name__
            span.set_attribute("error.type", kind)
            self.failed(span, str(error))
        elif status >= 500:  # (a client span's error: any 4xx or 5xx; 4xx is the client's)
            span.set_attribute("error.type", str(status))
            self.failed(span, "")
        span.end()

    def failed(self, span: Span, description: str) -> None:
        status = self.tracing.api.Status(self.tracing.api.StatusCode.ERROR, description or None)
        span.set_status(status)

    # -- the end -------------------------------------------------------------------------------

    def end(self, event: RequestEvent) -> None:
        """The request ended as `event` says: the server span gets its attributes and ends."""
        span = self.span
        if not self.recording:
            return
        if self.attempt_span is not None:  # (the client went away, or the request timed out)
            self.attempt_ended(event.origin_status, None if event.origin_status else event.outcome)
        span.set_attributes(server_attributes(event))
        if event.route:
            span.update_name(f"{event.method} {event.route}")
        if event.status >= 500:  # (a server span's error: 5xx only, 4xx are the client's)
            self.failed(span, event.reason)
        span.end()

    # -- calls the steps make ------------------------------------------------------------------

    def fetcher(self, fetch: Fetch) -> Fetch:
        """`fetch`, each call a CLIENT span (when recording) whose context the call carries."""
        if not self.recording:
            return super().fetcher(fetch)

        async def traced(call: Call) -> Reply:
            return await self.call(call, fetch)

        return traced

    async def call(self, call: Call, fetch: Callable[[Call], Awaitable[Reply]]) -> Reply:
        span, headers = self.client_span(call.method, call.headers, {
            "server.address": call.host, "server.port": call.port,
            "url.path": call.target.partition("?")[0], "kroute.call": "step"})  # fmt: skip
        try:
            reply = await fetch(attrs.evolve(call, headers=headers))
            span.set_attribute("http.response.status_code", reply.status)
        except FetchFailed as exc:
            span.set_attribute("error.type", "FetchFailed")
            self.failed(span, str(exc))
            raise
        finally:
            span.end()
        return reply

    async def mirrored(self, copy: MirrorCopy, send: Callable[[MirrorCopy], Awaitable[None]]
                       ) -> None:  # fmt: skip
        """`send` a RequestMirror's copy as a CLIENT span of its own (when recording), which
        the copy carries: issue 22 asks for a span per slow step, and a copy goes out after
        its request, on its own time."""
        if not self.recording:
            return await super().mirrored(copy, send)
        span, headers = self.client_span(copy.method, copy.headers, {
            "url.path": copy.target.partition("?")[0], "kroute.call": "mirror",
            "kroute.mirror.backend": str(copy.step.backend)})  # fmt: skip
        try:
            await send(attrs.evolve(copy, headers=headers))
        except Exception as exc:
            span.set_attribute("error.type", type(exc).__name__)
            self.failed(span, str(exc))
            raise
        finally:
            span.end()

    def client_span(self, method: str, headers: Iterable[Header], attributes: dict[str, Any]
                    ) -> tuple[Span, tuple[Header, ...]]:  # fmt: skip
        """A CLIENT span, child of the server span, for a request kroute makes on the side,
        and that request's `headers` carrying the span's own trace context."""
        span = self.tracing.tracer.start_span(
            method, self.context, kind=self.tracing.api.SpanKind.CLIENT,
            attributes={"http.request.method": method, **attributes},
        )  # fmt: skip
        own = span.get_span_context()
        carried = Propagation(self.tracing, fields(own.trace_id, own.span_id, own.trace_flags,
                                                   own.trace_state.to_header()), False)  # fmt: skip
        return span, tuple(self.propagate(headers, carried.values))


def server_attributes(event: RequestEvent) -> dict[str, Any]:
    """A request's server span attributes: OpenTelemetry's HTTP semantic conventions (`http.*`,
    `url.*`, `client.*`, `server.*`, `network.*`) and kroute's own (`kroute.*`)."""
    path, _, query = event.target.partition("?")
    found: dict[str, Any] = {
        "url.path": path,
        "server.address": normalize_host(event.host),
        "client.address": event.client_ip,
        "client.port": event.client_port,
        "network.protocol.version": event.protocol.removeprefix("HTTP/"),
        "http.response.status_code": event.status,
        "http.response.body.size": event.bytes_sent,
        "kroute.entry_point": event.entry_point,
        "kroute.outcome": event.outcome,
        "kroute.retries": event.retries,
    }
    if query:
        found["url.query"] = query
    if event.status >= 500:
        found["error.type"] = str(event.status)
    if event.route:
        found["kroute.route"] = event.route
    if event.service:
        found["kroute.service"] = event.service
    if event.steps:
        found["kroute.steps"] = event.steps
    if event.endpoints:
        found["kroute.endpoints"] = event.endpoints
    if event.reason:
        found["kroute.reason"] = event.reason
    return found

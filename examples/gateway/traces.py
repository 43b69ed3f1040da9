"""The example gateway's traces: OpenTelemetry spans exported over OTLP, from command-line flags
(gateway.py adds them with `add_arguments`).

    [--tracing otlp] [--tracing-sample-ratio RATIO]

`--tracing otlp` sends spans to an OpenTelemetry collector over OTLP/HTTP; it needs the SDK and
the exporter (`pip install opentelemetry-sdk opentelemetry-exporter-otlp-proto-http`), and says
so when they are missing. Where to send them is the exporter's standard environment
(`OTEL_EXPORTER_OTLP_ENDPOINT`, default http://localhost:4318; `OTEL_EXPORTER_OTLP_HEADERS`),
and the service name `OTEL_SERVICE_NAME` (default kroute). Sampling is parent-based: a request
whose client sent a trace context follows the client's decision, others are traced with
probability RATIO (default 1); every request passes a trace context on (docs/operations.md).
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

import kroute

EXPORTER = "opentelemetry.exporter.otlp.proto.http.trace_exporter"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    traces = parser.add_argument_group("traces (docs/operations.md)")
    traces.add_argument("--tracing", choices=["otlp"],
                        help="OpenTelemetry spans to a collector over OTLP/HTTP")  # fmt: skip
    traces.add_argument("--tracing-sample-ratio", type=ratio, default=1.0, metavar="RATIO",
                        help="share traced of requests whose client did not decide")  # fmt: skip


def ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a ratio from 0 to 1")
    return value


def tracing(args: argparse.Namespace) -> tuple[kroute.Tracing, Any] | None:
    """The Tracing the flags ask for and its TracerProvider (shut down at exit: it sends the
    spans still queued), or None; SystemExit naming the packages when they are missing."""
    if args.tracing is None:
        return None
    try:
        sdk = importlib.import_module("opentelemetry.sdk.trace")
        export = importlib.import_module("opentelemetry.sdk.trace.export")
        sampling = importlib.import_module("opentelemetry.sdk.trace.sampling")
        exporter = importlib.import_module(EXPORTER)
    except ImportError as exc:
        raise SystemExit(
            f"--tracing otlp needs the OpenTelemetry SDK and OTLP exporter ({exc.name} is "
            "missing): pip install opentelemetry-sdk opentelemetry-exporter-otlp-proto-http"
        ) from None
    resources = importlib.import_module("opentelemetry.sdk.resources")
    resource = resources.Resource.create({"service.name": "kroute"})  # (OTEL_SERVICE_NAME wins)
    # kroute samples (parent-based, the ratio for requests without a trace context), so what
    # is not sampled costs no span; the provider keeps what kroute sampled (ParentBased(ALWAYS_ON)).
    provider = sdk.TracerProvider(sampler=sampling.ParentBased(sampling.ALWAYS_ON),
                                  resource=resource)  # fmt: skip
    provider.add_span_processor(export.BatchSpanProcessor(exporter.OTLPSpanExporter()))
    return kroute.Tracing(provider, sample_ratio=args.tracing_sample_ratio), provider

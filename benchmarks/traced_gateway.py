"""The example gateway with tracing installed and never sampled, for bench_gateway's pairs.

    python benchmarks/traced_gateway.py <the example gateway's flags>

Why: `--tracing otlp --tracing-sample-ratio 0` needs the OTLP exporter, which nothing sampled
never calls; this runs the example gateway as it is, its `traces.tracing` giving the same
Tracing (`sample_ratio=0`, the SDK's TracerProvider: `bench_hotpath.unsampled`) without one.
"""

from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples/gateway"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import traces
from bench_hotpath import unsampled

import kroute

ROOT = Path(__file__).resolve().parent.parent


def tracing(args: argparse.Namespace) -> tuple[kroute.Tracing, Any]:
    provider = unsampled("kroute")
    return kroute.Tracing(provider, sample_ratio=0.0), provider


if __name__ == "__main__":
    traces.tracing = tracing
    sys.argv[0] = str(ROOT / "examples/gateway/gateway.py")
    runpy.run_path(sys.argv[0], run_name="__main__")

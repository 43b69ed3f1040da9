"""The request pipeline: what a route does to a request after the match (docs/pipeline.md).

Pure values and functions: no I/O library is imported here (import-linter holds it). Fronts
run a route's `Chain` through `run_request` / `run_request_async`, `run_response` and
`run_body` (response bodies, `kroute.pipeline.body`).
"""

from kroute.pipeline.body import BodyFilter, Replace, run_body
from kroute.pipeline.cors import CORS
from kroute.pipeline.filters import (
    Function,
    HeaderEdits,
    Mirror,
    MirrorCopy,
    Refuse,
    RequestHeaderModifier,
    ResponseHeaderModifier,
    Share,
    URLRewrite,
)
from kroute.pipeline.registry import Filters
from kroute.pipeline.steps import (
    EMPTY,
    Answer,
    AsyncStep,
    Chain,
    Step,
    UpstreamRequest,
    run_end,
    run_outcome,
    run_request,
    run_request_async,
    run_response,
)

__all__ = [
    "CORS",
    "EMPTY",
    "Answer",
    "AsyncStep",
    "BodyFilter",
    "Chain",
    "Filters",
    "Function",
    "HeaderEdits",
    "Mirror",
    "MirrorCopy",
    "Refuse",
    "Replace",
    "RequestHeaderModifier",
    "ResponseHeaderModifier",
    "Share",
    "Step",
    "URLRewrite",
    "UpstreamRequest",
    "run_body",
    "run_end",
    "run_outcome",
    "run_request",
    "run_request_async",
    "run_response",
]

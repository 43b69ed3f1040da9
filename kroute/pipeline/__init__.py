"""The request pipeline: what a route does to a request after the match (docs/pipeline.md).

Pure values and functions: no I/O library is imported here (import-linter holds it). Fronts
run a route's `Chain` through `run_request` / `run_request_async`, `run_response`,
`run_body` (response bodies, `kroute.pipeline.body`), `run_outcome` and `run_end`. A step that
waits is an `Awaited` (its HTTP calls: a `Call` given to the front's `Fetch`, a `Reply` or
`FetchFailed` back); one that waits only for some requests is a `Deferring`, whose `request`
says `WAIT` for those (`run_request` then gives a `Waiting`).
"""

from kroute.pipeline.body import BodyFilter, Replace, run_body
from kroute.pipeline.cors import CORS
from kroute.pipeline.fetch import Call, Fetch, FetchFailed, Reply
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
    WAIT,
    Answer,
    AsyncStep,
    Awaited,
    Chain,
    Deferring,
    Step,
    UpstreamRequest,
    Waiting,
    run_end,
    run_outcome,
    run_request,
    run_request_async,
    run_response,
)

__all__ = [
    "CORS",
    "EMPTY",
    "WAIT",
    "Answer",
    "AsyncStep",
    "Awaited",
    "BodyFilter",
    "Call",
    "Chain",
    "Deferring",
    "Fetch",
    "FetchFailed",
    "Filters",
    "Function",
    "HeaderEdits",
    "Mirror",
    "MirrorCopy",
    "Refuse",
    "Replace",
    "Reply",
    "RequestHeaderModifier",
    "ResponseHeaderModifier",
    "Share",
    "Step",
    "URLRewrite",
    "UpstreamRequest",
    "Waiting",
    "run_body",
    "run_end",
    "run_outcome",
    "run_request",
    "run_request_async",
    "run_response",
]

"""What a route does to a request after the match: steps, as values, and the one runner.

A compiled route carries a `Chain`: request steps, run in order before forwarding, each of
which may change the request (`UpstreamRequest`) or answer it by itself (`Answer`: a redirect, a
refusal), and response steps, run on the response head. The chain is built once, when the
route is compiled: nothing is parsed per request, and a route without steps pays one attribute
test.

Every front (FastGateway, HttpServer, the ASGI gateway) and `explain` run a chain through
`run_request` / `run_request_async` and `run_response`, so they cannot drift. Steps are pure
where they can be (header edits, rewrites, redirects, refusals); a step that must wait (a
user's async check) is an `AsyncStep`, and only chains that hold one are awaited.

Headers are `(name, value)` byte pairs as they travel, names compared case-insensitively
(RFC 9110 section 5.1).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar

import attrs

if TYPE_CHECKING:
    from kroute.objects import BackendRef
    from kroute.pipeline.body import BodyFilter, Replace
    from kroute.pipeline.fetch import Fetch
    from kroute.pipeline.filters import MirrorCopy

Header = tuple[bytes, bytes]
_log = logging.getLogger(__name__)


@attrs.define
class UpstreamRequest:
    """The request as the backend will receive it; request steps change it in place.

    `path` is the path as it will be sent (percent-encodings as received), `query` the query
    without `?` (None when the target had none), `headers` the end-to-end fields including
    Host. `routed` is the path as routing saw it (normalised), which rewrites start from
    (`kroute.pipeline.paths`). `scheme` and `client` say how the request arrived. `mirrors`
    are the copies RequestMirror steps made, which the front hands to `Router.mirror`. `notes` is
    what a request step leaves for its response step, under the step's field: response steps
    see the response head and this request, not the request as it arrived (CORS keeps the
    allowed Origin there). `clock` is the front's monotonic clock (seconds; the Router's), for
    steps that count time (rateLimit); None offline (`kroute.rules.preview`), where steps that
    keep state across requests are not run (`Step.offline`).
    """

    method: str
    path: str
    query: str | None
    headers: list[Header]
    routed: str = ""
    scheme: str = "http"
    client: str = ""
    notes: dict[str, Any] = attrs.field(factory=dict)
    mirrors: tuple[MirrorCopy, ...] = attrs.field(default=(), kw_only=True)  # (no allocation)
    clock: Callable[[], float] | None = attrs.field(default=None, kw_only=True, eq=False)

    @classmethod
    def from_target(
        cls, method: str, target: str, headers: list[Header], *, routed: str,
        scheme: str = "http", client: str = "", clock: Callable[[], float] | None = None,
    ) -> UpstreamRequest:  # fmt: skip
        """The request to forward, from the target as received (origin-form)."""
        path, mark, query = target.partition("?")
        return cls(method, path, query if mark else None, headers, routed, scheme, client,
                   clock=clock)  # fmt: skip

    @property
    def target(self) -> str:
        return self.path if self.query is None else f"{self.path}?{self.query}"

    def get(self, name: bytes) -> bytes | None:
        """The first value of header `name` (any case), or None."""
        name = name.lower()
        return next((v for n, v in self.headers if n.lower() == name), None)

    def set(self, name: bytes, value: bytes) -> None:
        """Replace every field `name` by one (RFC 9110 section 5.3), in the first one's place."""
        lower, size = name.lower(), len(name)  # (the length first: most names differ in it)
        places = [i for i, (n, _) in enumerate(self.headers)
                  if len(n) == size and n.lower() == lower]  # fmt: skip
        if not places:
            self.headers.append((name, value))
            return
        self.headers[places[0]] = (name, value)
        for i in reversed(places[1:]):
            del self.headers[i]

    def remove(self, name: bytes) -> None:
        lower = name.lower()
        self.headers[:] = [f for f in self.headers if f[0].lower() != lower]


@attrs.frozen
class Answer:
    """A response a step gives instead of forwarding; `reason` is for explain and logs, the
    client sees `body` (never internals)."""

    status: int
    reason: str
    headers: tuple[Header, ...] = ()
    body: bytes = b""
    step: str = ""  # the step that answered, for explain


@attrs.frozen
class Step:
    """One step of a chain. `field` names where it was configured ("spec.rules[0].filters[1]");
    a subclass overrides `request` (before forwarding), `response` (on the response head), or
    both, and says so in `on_request` / `on_response`."""

    field: str
    on_request: ClassVar[bool] = True
    on_response: ClassVar[bool] = False
    #: The step wants the request's outcome (`outcome`, called through `run_outcome`).
    on_outcome: ClassVar[bool] = False
    #: What the step does to a request depends only on its path and the fields it names
    #: (`touches`) and it records nothing else: a front may remember the result per path
    #: (FastGateway does, `Client.planned`). One that answers (a rewrite refusing an unclean
    #: path with 400) does so from the path alone, and a front then runs the chain itself.
    declarative: ClassVar[bool] = False
    #: The step wants to know when the request ends (`end`, called once by every front through
    #: `run_end`: the response sent, the request answered or failed, the client gone).
    on_end: ClassVar[bool] = False
    #: What the step does depends on the request alone, so `kroute.rules.preview` may run it;
    #: False for steps whose answer depends on earlier requests (rateLimit, inFlightReq), which
    #: a preview must neither run nor count.
    offline: ClassVar[bool] = True
    #: The step sees response bodies (`body`, through `kroute.pipeline.body.run_body`).
    on_body: ClassVar[bool] = False

    @property
    def request_limit(self) -> int | None:
        """The most request body bytes the step lets through (413 past it), None for no
        limit: every front counts the body against the chain's smallest
        (`Chain.request_limit`)."""
        return None

    @property
    def label(self) -> str:
        return f"{type(self).__name__} ({self.field})" if self.field else type(self).__name__

    @property
    def backends(self) -> tuple[BackendRef, ...]:
        """The backends the step sends to besides the route's (RequestMirror's copies, the
        errors Middleware's pages): the Router keeps their pools."""
        return ()

    @property
    def touches(self) -> frozenset[bytes] | None:
        """The request header names (lower case) this step reads or changes; None when it may
        read any (a user's function, a mirror that copies them all). A front that adds its
        forwarding headers itself may add them after the steps of a chain that never names
        them (FastGateway does: it keeps their lines rendered per connection)."""
        return None

    def request(self, request: UpstreamRequest) -> Answer | None:
        return None

    def response(self, status: int, headers: list[Header], request: UpstreamRequest) -> None:
        return None

    def body(
        self, status: int, headers: list[Header], request: UpstreamRequest
    ) -> BodyFilter | Answer | Replace | None:
        """What happens to this response's body (only for steps with `on_body`; see
        `kroute.pipeline.body`): called on the head, after the response steps."""
        return None

    def end(self, request: UpstreamRequest) -> None:
        """The request ended (only for steps with `on_end`); called at most once per request,
        also when a later step answered it or its `request` never ran (`request.notes` says
        what the step did)."""

    def outcome(self, request: UpstreamRequest, status: int, seconds: float) -> None:
        """The request's outcome, once known: the response head's `status` (or the status the
        gateway answered instead: a step's answer, 502/504 when the backend failed), `seconds`
        after it was routed. What a circuit breaker counts."""


@attrs.frozen
class Awaited(Step):
    """A request step that must wait: `request_async` is awaited in its place in the chain,
    with the front's `fetch` for the HTTP calls it makes (`kroute.pipeline.fetch`; None where
    no front runs it, as in explain)."""

    async def request_async(self, request: UpstreamRequest, fetch: Fetch | None) -> Answer | None:
        raise NotImplementedError


@attrs.frozen
class AsyncStep(Awaited):
    """A request step that must wait (a user's `async def` filter, `name`); `check` is
    awaited."""

    check: Callable[[UpstreamRequest], Awaitable[Answer | None]] = attrs.field(
        kw_only=True, eq=False
    )
    name: str = attrs.field(default="", kw_only=True)

    @property
    def label(self) -> str:
        return f"Filter {self.name} ({self.field})"

    async def request_async(
        self, request: UpstreamRequest, fetch: Fetch | None = None
    ) -> Answer | None:
        answer = await self.check(request)
        return None if answer is None else attrs.evolve(answer, step=answer.step or self.label)


@attrs.frozen
class Chain:
    """The steps of a route, split once by where they run."""

    steps: tuple[Step, ...] = ()
    request: tuple[Step, ...] = attrs.field(init=False)
    response: tuple[Step, ...] = attrs.field(init=False)
    #: The steps told the request's outcome (`run_outcome`).
    outcome: tuple[Step, ...] = attrs.field(init=False)

    @outcome.default
    def _outcome(self) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if s.on_outcome)

    #: Some request step must be awaited: fronts that run callbacks start a task for it.
    waits: bool = attrs.field(init=False)

    @request.default
    def _request(self) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if s.on_request)

    @response.default
    def _response(self) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if s.on_response)

    #: Steps told when the request ends (`Step.on_end`).
    ends: tuple[Step, ...] = attrs.field(init=False)

    @ends.default
    def _ends(self) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if s.on_end)

    #: The steps that see response bodies (`Step.on_body`, `kroute.pipeline.body.run_body`).
    body: tuple[Step, ...] = attrs.field(init=False)

    @body.default
    def _body(self) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if s.on_body)

    #: The most request body bytes the steps let through (413 past it), None for no limit.
    request_limit: int | None = attrs.field(init=False)

    @request_limit.default
    def _request_limit(self) -> int | None:
        limits = [s.request_limit for s in self.steps if s.request_limit is not None]
        return min(limits) if limits else None

    @waits.default
    def _waits(self) -> bool:
        return any(isinstance(s, Awaited) for s in self.request)

    #: Every request step is declarative (`Step.declarative`) and none runs on responses.
    declarative: bool = attrs.field(init=False)

    @declarative.default
    def _declarative(self) -> bool:
        return not self.response and not self.body and all(s.declarative for s in self.request)

    #: The request header names the request and body steps read or change, None for any
    #: (`Step.touches`).
    touches: frozenset[bytes] | None = attrs.field(init=False)

    @touches.default
    def _touches(self) -> frozenset[bytes] | None:
        names: set[bytes] = set()
        for step in (*self.request, *self.body):
            touched = step.touches
            if touched is None:
                return None
            names |= touched
        return frozenset(names)

    def __bool__(self) -> bool:
        return bool(self.steps)

    def __add__(self, other: Chain) -> Chain:
        return self if not other else Chain(self.steps + other.steps)


EMPTY = Chain()


def run_request(chain: Chain, request: UpstreamRequest) -> Answer | None:
    """Run the request steps of a chain that does not wait (`Chain.waits` false); the first
    answer stops it. (A plain loop: driving `run_request_async`'s coroutine instead cost a
    microsecond per request on FastGateway's hot path.)"""
    if chain.waits:
        raise RuntimeError("a chain with a step that waits runs with run_request_async")
    for step in chain.request:
        answer = _run(step, request)
        if answer is not None:
            return answer
    return None


async def run_request_async(
    chain: Chain, request: UpstreamRequest, fetch: Fetch | None = None
) -> Answer | None:
    """Run the request steps in order, awaiting those that wait (`fetch`: how they make HTTP
    calls, `kroute.pipeline.fetch`); the first answer stops it."""
    for step in chain.request:
        if isinstance(step, Awaited):
            try:
                answer = await step.request_async(request, fetch)
            except Exception:
                return _failed(step)
        else:
            answer = _run(step, request)
        if answer is not None:
            return answer
    return None


def _run(step: Step, request: UpstreamRequest) -> Answer | None:
    """One step that does not wait: its answer, labelled with the step; a step that raises
    fails the request closed."""
    try:
        answer = step.request(request)
    except Exception:
        return _failed(step)
    if answer is None or answer.step:
        return answer
    return attrs.evolve(answer, step=step.label)


def _failed(step: Step) -> Answer:
    """A step raised (a user's filter has a bug, its auth service is down): the request (or
    its response, `run_response`) fails closed with 500, and the exception goes to the log,
    not to the client."""
    _log.exception("%s failed; the request is answered 500", step.label)
    return Answer(500, f"{step.label} raised an exception", step=step.label,
                  body=b"500 Internal Server Error\n")  # fmt: skip


def run_response(
    chain: Chain, status: int, headers: list[Header], request: UpstreamRequest
) -> Answer | None:
    """Run the response steps on a response head's end-to-end headers, in place; `request` is
    the one the request steps ran on (its `notes`). None when they ran; the 500 to answer
    instead when one raised: the response fails closed, never sent without a step's edits
    (a security header, a removed internal one). Every front answers that 500 in place of the
    response and drops the backend's connection (its body is not read)."""
    for step in chain.response:
        try:
            step.response(status, headers, request)
        except Exception:
            return _failed(step)
    return None


def run_end(chain: Chain, request: UpstreamRequest) -> None:
    """Tell the steps that want it (`Chain.ends`) that the request ended; every front calls
    this once per request that ran the request steps, whatever became of it. A step that
    raises is logged: the request is over, there is nobody left to answer."""
    for step in chain.ends:
        try:
            step.end(request)
        except Exception:
            _log.exception("%s failed at the end of a request", step.label)


def run_outcome(chain: Chain, request: UpstreamRequest, status: int, seconds: float) -> None:
    """Tell the steps that want it (`Chain.outcome`) how the request ended: every front calls
    this once per request whose chain has such steps, when the response head (or the gateway's
    own answer) is decided; `seconds` since the request was routed. A step that raises is
    logged, as in `run_end`: the outcome is a report, and the request goes on."""
    for step in chain.outcome:
        try:
            step.outcome(request, status, seconds)
        except Exception:
            _log.exception("%s failed on the outcome of a request", step.label)

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
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, ClassVar

import attrs

from kroute.pipeline.patch import Edit, ResponsePatch, fold
from kroute.pipeline.request import Answer as Answer
from kroute.pipeline.request import Header as Header
from kroute.pipeline.request import Offload as Offload
from kroute.pipeline.request import UpstreamRequest as UpstreamRequest

if TYPE_CHECKING:
    from kroute.objects import BackendRef
    from kroute.pipeline.body import BodyFilter, Replace
    from kroute.pipeline.fetch import Fetch

_log = logging.getLogger(__name__)


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

    @property
    def by_client(self) -> bool:
        """The step lets a request through or answers it from the client's address alone
        (`UpstreamRequest.client`) and changes nothing: `admit` decides, and a front that
        remembers what a chain's other steps make of a path (`Chain.declarative`) asks it per
        request without building the request (`run_gates`). ipAllowList on the peer's
        address is one."""
        return False

    def admit(self, client: str) -> Answer | None:
        """What `request` answers for any request from `client` (only for `by_client`)."""
        raise NotImplementedError

    def request(self, request: UpstreamRequest) -> Answer | None:
        return None

    def response_edits(self, scheme: str) -> tuple[Edit, ...] | None:
        """What `response` does, as the same edits on every response to a request that
        arrived over `scheme` ((name, value) sets, (name, None) removes), in order; None when
        they depend on the response or the request (`kroute.pipeline.patch`)."""
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
class Deferring(Awaited):
    """A request step that decides most requests at once and waits only for some: its
    `request` returns `WAIT` for a request it cannot decide without blocking (only when the
    request has an `offload`; without one it decides by itself, blocking, as offline), and
    `request_async` is awaited in its place for that request. A chain of such steps does not
    wait (`Chain.waits`), so a front runs it inline and starts a task only for the requests
    that need one (`run_request`'s `Waiting`). basicAuth is one: a bcrypt check takes tens of
    milliseconds, a credential it remembers none."""


@attrs.frozen
class Waiting(Answer):
    """What `run_request` returns when a `Deferring` step said `WAIT`: not an answer to give.
    The steps before index `at` ran; `run_request_async(..., waiting=at)` goes on from it."""

    at: int = attrs.field(default=0, kw_only=True)


#: What a `Deferring` step's `request` returns for a request it awaits (`request_async`).
WAIT = Answer(0, "the step waits for this request", step="(waiting)")


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
        return any(isinstance(s, Awaited) and not isinstance(s, Deferring) for s in self.request)

    #: The request steps that decide from the client's address alone (`Step.by_client`).
    gates: tuple[Step, ...] = attrs.field(init=False, eq=False)

    @gates.default
    def _gates(self) -> tuple[Step, ...]:
        return tuple(s for s in self.request if s.by_client)

    #: The response steps as one patch per scheme ("http", "https"), when each makes the same
    #: edits on every response (`Step.response_edits`, `kroute.pipeline.patch`); else None.
    patches: Mapping[str, ResponsePatch] | None = attrs.field(init=False, eq=False)

    @patches.default
    def _patches(self) -> Mapping[str, ResponsePatch] | None:
        if not self.response:
            return None
        patches = {}
        for scheme in ("http", "https"):
            edits = [step.response_edits(scheme) for step in self.response]
            if any(e is None for e in edits):
                return None
            patches[scheme] = fold(edit for made in edits for edit in made or ())
        return patches

    #: What the chain does to a request depends only on its path, the fields the steps name
    #: and the client's address, and what it does to a response only on the scheme: every
    #: request step is declarative (`Step.declarative`) or decides by the client
    #: (`Step.by_client`, `gates`), the response steps are a patch (`patches`), and no step
    #: sees bodies, outcomes or ends. A front may then remember per path what the request
    #: steps but the gates make of a request (`plan_request`), ask the gates per request
    #: (`run_gates`) and patch response heads (FastGateway does, `Client.planned`).
    declarative: bool = attrs.field(init=False)

    @declarative.default
    def _declarative(self) -> bool:
        return (
            not self.body and not self.outcome and not self.ends
            and (not self.response or self.patches is not None)
            and all(s.declarative or s.by_client for s in self.request)
        )  # fmt: skip

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
    answer stops it. When a `Deferring` step waits for this request (which it does only when
    the request has an `offload`), a `Waiting` says where: the front goes on with
    `run_request_async(..., waiting=answer.at)`. (A plain loop: driving `run_request_async`'s
    coroutine instead cost a microsecond per request on FastGateway's hot path.)"""
    if chain.waits:
        raise RuntimeError("a chain with a step that waits runs with run_request_async")
    for at, step in enumerate(chain.request):
        answer = _run(step, request)
        if answer is not None:
            return Waiting(0, WAIT.reason, at=at) if answer is WAIT else answer
    return None


async def run_request_async(
    chain: Chain, request: UpstreamRequest, fetch: Fetch | None = None, *,
    waiting: int | None = None,
) -> Answer | None:  # fmt: skip
    """Run the request steps in order, awaiting those that wait (`fetch`: how they make HTTP
    calls, `kroute.pipeline.fetch`); the first answer stops it. `waiting`: `run_request` ran
    the steps before that index and the `Deferring` step there said `WAIT`, so it is awaited
    and the rest run."""
    steps = chain.request
    for at in range(waiting or 0, len(steps)):
        step = steps[at]
        if not isinstance(step, Awaited):
            answer = _run(step, request)
        elif isinstance(step, Deferring) and at != waiting:
            answer = _run(step, request)
            if answer is WAIT:
                answer = await _awaited(step, request, fetch)
        else:
            answer = await _awaited(step, request, fetch)
        if answer is not None:
            return answer
    return None


async def _awaited(step: Awaited, request: UpstreamRequest, fetch: Fetch | None) -> Answer | None:
    try:
        return await step.request_async(request, fetch)
    except Exception:
        return _failed(step)


def plan_request(chain: Chain, request: UpstreamRequest) -> Answer | None:
    """`run_request` without the chain's gates (`Chain.gates`): what a front remembers per
    path for a declarative chain (`Chain.declarative`), asking the gates per request
    (`run_gates`). The gates change nothing and no declarative step reads the client, so the
    chain's answer is this one, else the first gate's, else this request."""
    for step in chain.request:
        if not step.by_client:
            answer = _run(step, request)
            if answer is not None:
                return answer
    return None


def run_gates(chain: Chain, client: str) -> Answer | None:
    """The answer of the first of the chain's gates (`Chain.gates`) that refuses a request
    from `client`, or None; labelled, and failing closed, as `run_request` does."""
    for step in chain.gates:
        try:
            answer = step.admit(client)
        except Exception:
            return _failed(step)
        if answer is not None:
            return answer if answer.step else attrs.evolve(answer, step=step.label)
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
    response and drops the backend's connection (its body is not read). A chain whose response
    steps are one patch (`Chain.patches`) applies the patch."""
    patches = chain.patches
    if patches is not None:
        patch = patches.get(request.scheme)
        if patch is not None:
            patch.apply(headers)
            return None
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

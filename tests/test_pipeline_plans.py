"""What fronts may plan and patch instead of running a chain per request, and steps that wait
only for some requests: the answers are the runner's own (hypothesis where it applies)."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kroute.pipeline import Answer, Chain, HeaderEdits, ResponseHeaderModifier, UpstreamRequest
from kroute.pipeline.patch import fold
from kroute.pipeline.steps import (
    WAIT,
    Deferring,
    Step,
    Waiting,
    plan_request,
    run_gates,
    run_request,
    run_request_async,
    run_response,
)
from kroute.rules.middlewares.headers import headers
from kroute.rules.middlewares.ipallowlist import ip_allow_list
from kroute.rules.middlewares.paths import strip_prefix

NAMES = st.sampled_from([b"X-A", b"x-a", b"X-B", b"Content-Type", b"Vary"])
VALUES = st.sampled_from([b"1", b"2", b"text/plain"])
FIELDS = st.lists(st.tuples(NAMES, VALUES), max_size=6)


def by_name(fields: list[tuple[bytes, bytes]]) -> dict[bytes, list[bytes]]:
    """Fields by lower-case name, values in order: what RFC 9110 section 5.3 gives meaning."""
    out: dict[bytes, list[bytes]] = {}
    for name, value in fields:
        out.setdefault(name.lower(), []).append(value)
    return out


@given(fields=FIELDS, edits=st.lists(st.tuples(FIELDS, st.lists(NAMES, max_size=2)),
                                     min_size=1, max_size=3))  # fmt: skip
def test_a_patch_is_the_steps_run_one_by_one(
    fields: list[tuple[bytes, bytes]], edits: list[tuple[list[tuple[bytes, bytes]], list[bytes]]]
) -> None:
    """Sets and removals of several steps folded into one patch give what each step's edits
    (`HeaderEdits.apply`, the request side's own) give one after another."""
    steps = [ResponseHeaderModifier(f"s{i}", edits=HeaderEdits(set=tuple(sets),
                                                               remove=tuple(removes)))
             for i, (sets, removes) in enumerate(edits)]  # fmt: skip
    chain = Chain(tuple(steps))
    assert chain.patches is not None
    one_by_one = UpstreamRequest("GET", "/", None, list(fields))
    for step in steps:
        step.edits.apply(one_by_one)
    patched = list(fields)
    assert run_response(chain, 200, patched, UpstreamRequest("GET", "/", None, [])) is None
    assert by_name(patched) == by_name(one_by_one.headers)
    patch = chain.patches["http"]
    assert patch.lines == b"".join(b"%b: %b\r\n" % f for f in patch.fields)
    assert {n.lower() for n, _ in patch.fields} <= patch.drop


def test_security_headers_patch_by_scheme_and_add_is_not_a_patch() -> None:
    steps = headers({"stsSeconds": 60, "frameDeny": True,
                     "customResponseHeaders": {"X-Frame-Options": "", "X-Served-By": "k"}},
                    "spec.headers")  # fmt: skip
    chain = Chain(steps)
    assert chain.patches is not None
    assert chain.patches["http"].fields == ((b"X-Served-By", b"k"),)  # (DENY, then removed)
    assert chain.patches["https"].fields == ((b"Strict-Transport-Security", b"max-age=60"),
                                             (b"X-Served-By", b"k"))  # fmt: skip
    added = ResponseHeaderModifier("f", edits=HeaderEdits(add=((b"Vary", b"Origin"),)))
    assert Chain((added,)).patches is None  # (joins the response's own value)
    assert not Chain((*steps, added)).declarative


def test_gates_are_asked_apart_from_the_plan() -> None:
    strip = strip_prefix({"prefixes": ["/api"]}, "strip")
    allow = ip_allow_list({"sourceRange": ["127.0.0.1/32"]}, "allow")
    forwarded = ip_allow_list({"sourceRange": ["127.0.0.1/32"], "ipStrategy": {"depth": 1}}, "x")
    chain = Chain((allow, strip))
    assert (chain.declarative, chain.gates) == (True, (allow,))
    assert not Chain((forwarded, strip)).declarative  # (reads X-Forwarded-For: not a gate)
    request = UpstreamRequest("GET", "/api/x", None, [], "/api/x")
    assert plan_request(chain, request) is None  # (the gate is not run: no client here)
    assert (request.path, request.headers) == ("/x", [(b"X-Forwarded-Prefix", b"/api")])
    assert run_gates(chain, "127.0.0.1") is None
    refused = run_gates(chain, "192.0.2.1")
    assert refused is not None
    assert (refused.status, refused.step) == (403, allow.label)
    # The same answers as the runner's on the whole request.
    whole = UpstreamRequest("GET", "/api/x", None, [], "/api/x", client="192.0.2.1")
    assert run_request(chain, whole) == refused


def test_ipv6_subnet_applies_to_the_peer_through_admit() -> None:
    allow = ip_allow_list({"sourceRange": ["2001:db8::/64"],
                           "ipStrategy": {"ipv6Subnet": 48}}, "f")  # fmt: skip
    assert allow.by_client
    assert allow.admit("2001:db8::1") is None
    # Not in the /64 itself, but its /48 (2001:db8::) is: the subnet stands for the client.
    assert allow.admit("2001:db8:0:1::1") is None
    assert allow.admit("2001:db9::1") is not None


@attrs.frozen
class Slow(Deferring):
    """Decides "fast" requests at once and waits for the others."""

    calls: list[str] = attrs.field(factory=list, eq=False)

    def request(self, request: UpstreamRequest) -> Answer | None:
        self.calls.append("request")
        if request.get(b"x-fast") is not None:
            return None
        return WAIT if request.offload is not None else self.decide(request)

    async def request_async(self, request: UpstreamRequest, fetch: object) -> Answer | None:
        self.calls.append("request_async")
        assert request.offload is not None
        answer: Answer | None = await request.offload(lambda: self.decide(request))
        return answer

    def decide(self, request: UpstreamRequest) -> Answer | None:
        return Answer(401, "no") if request.get(b"x-ok") is None else None


@attrs.frozen
class Count(Step):
    seen: list[str] = attrs.field(factory=list, eq=False)

    def request(self, request: UpstreamRequest) -> Answer | None:
        self.seen.append(self.field)
        return None


async def offload(function: object) -> object:
    assert callable(function)
    return function()


@pytest.mark.anyio
@pytest.mark.parametrize(("headers", "expected"), [
    ([(b"X-Fast", b"1")], None), ([(b"X-Ok", b"1")], None), ([], 401),
])  # fmt: skip
async def test_a_deferring_step_waits_only_when_it_must(
    headers: list[tuple[bytes, bytes]], expected: int | None
) -> None:
    before, slow, after = Count("before"), Slow("slow"), Count("after")
    chain = Chain((before, slow, after))
    assert not chain.waits
    request = UpstreamRequest("GET", "/", None, list(headers), offload=offload)
    answer = run_request(chain, request)
    if headers == [(b"X-Fast", b"1")]:
        assert answer is None
        assert slow.calls == ["request"]
    else:
        assert isinstance(answer, Waiting)
        assert answer.at == 1
        assert after.seen == []
        answer = await run_request_async(chain, request, None, waiting=answer.at)
        assert slow.calls == ["request", "request_async"]
    assert (answer.status if answer is not None else None) == expected
    assert before.seen == ["before"]  # (once: not run again when the chain goes on)
    assert after.seen == ([] if expected else ["after"])
    # Offline (no offload) the step decides by itself, and the runner never says Waiting.
    offline = UpstreamRequest("GET", "/", None, list(headers))
    again = run_request(chain, offline)
    assert not isinstance(again, Waiting)
    assert (again.status if again is not None else None) == expected
    # run_request_async from the start: the same answer, the step tried at once first.
    direct = UpstreamRequest("GET", "/", None, list(headers), offload=offload)
    answer = await run_request_async(chain, direct, None)
    assert (answer.status if answer is not None else None) == expected


def test_fold_keeps_the_last_edit_of_a_name_last() -> None:
    patch = fold([(b"A", b"1"), (b"B", b"2"), (b"a", b"3"), (b"C", None)])
    assert patch.fields == ((b"B", b"2"), (b"a", b"3"))
    assert patch.drop == frozenset({b"a", b"b", b"c"})

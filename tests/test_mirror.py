"""HTTPRoute RequestMirror: the share decision (pure), the compile (percent, fraction, backendRef
checks), the Router's queue, and copies through every front with real backends on loopback: the
copy arrives as the steps before the mirror left the request, and a mirror backend that hangs or
refuses never delays or fails the request it copies."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.abc
import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.trace import SpanKind

import kroute
from kroute.gateway.router import Router
from kroute.gateway.tracing import Tracing
from kroute.objects import BackendRef
from kroute.pipeline import Chain, Mirror, Share, UpstreamRequest, run_request
from kroute.rules.preview import preview
from kroute.transport.conformance import Backend
from kroute.watch.sources import MemorySource
from tests.builders import gateway, httproute, to
from tests.fronts import FrontClient, serving
from tests.test_gateway_e2e import endpoint_slice, service
from tests.test_pipeline_e2e import headers_of
from tests.test_tracing_e2e import TRACE_ID, TRACEPARENT, provider, traceparent


def mirror(service: str = "shadow", *, namespace: str | None = None, **share: Any
           ) -> dict[str, Any]:  # fmt: skip
    ref: dict[str, Any] = {"name": service, "port": 80}
    if namespace is not None:
        ref["namespace"] = namespace
    return {"type": "RequestMirror", "requestMirror": {"backendRef": ref, **share}}


# -- the share: pure ------------------------------------------------------------------------


@given(st.floats(min_value=0, max_value=1, exclude_max=True))
def test_percent_0_never_and_100_always(draw: float) -> None:
    assert not Share(0, 100).takes(draw)
    assert Share(100, 100).takes(draw)
    assert Share().takes(draw)  # neither percent nor fraction: every request
    assert Share(7, 7).takes(draw)


@given(st.integers(1, 10_000).flatmap(lambda d: st.tuples(st.integers(0, d), st.just(d))))
def test_a_fraction_takes_its_share_of_evenly_spread_draws(fraction: tuple[int, int]) -> None:
    numerator, denominator = fraction
    share = Share(numerator, denominator)
    taken = sum(share.takes((k + 0.5) / denominator) for k in range(denominator))
    assert taken == numerator


@given(st.integers(0, 1000), st.integers(1, 1000), st.floats(0, 1, exclude_max=True),
       st.floats(0, 1, exclude_max=True))  # fmt: skip
def test_a_smaller_draw_is_taken_when_a_larger_one_is(num: int, den: int, a: float, b: float
                                                       ) -> None:  # fmt: skip
    share = Share(min(num, den), den)
    low, high = sorted((a, b))
    assert not share.takes(high) or share.takes(low)


def test_the_step_copies_the_request_as_the_steps_before_it_left_it() -> None:
    backend = BackendRef("default", "shadow", 80)
    chain = Chain((Mirror("f[0]", backend=backend), Mirror("f[1]", backend=backend,
                                                           share=Share(0, 100))))  # fmt: skip
    request = UpstreamRequest.from_target("GET", "/a?b", [(b"Host", b"h")], routed="/a")
    assert run_request(chain, request) is None
    (copy,) = request.mirrors  # (a 0% mirror copies nothing)
    request.set(b"Host", b"changed later")
    assert (copy.method, copy.target, copy.headers) == ("GET", "/a?b", ((b"Host", b"h"),))
    unusable = Mirror("f", backend=attrs.evolve(backend, error="RefNotPermitted: no"))
    request = UpstreamRequest.from_target("GET", "/", [], routed="/")
    run_request(Chain((unusable,)), request)
    assert request.mirrors == ()


# -- the compile ----------------------------------------------------------------------------


def mirrors_of(result: kroute.CompileResult) -> list[Mirror]:
    route = result.table.routes[0]
    chains = (route.chain, *route.backend_chains)
    return [s for chain in chains for s in chain.steps if isinstance(s, Mirror)]


def test_percent_fraction_and_several_mirrors_compile() -> None:
    result = kroute.compile_objects([gateway(), httproute("r", [{
        "filters": [mirror(percent=20), mirror("other", fraction={"numerator": 1}),
                    mirror("third", fraction={"numerator": 2, "denominator": 3})],
        "backendRefs": [to("web", filters=[mirror("fourth")])],
    }])])  # fmt: skip
    assert not result.errors
    assert not result.refused
    assert [(str(m.backend), m.share) for m in mirrors_of(result)] == [
        ("default/shadow:80", Share(20, 100)),
        ("default/other:80", Share(1, 100)),  # (the denominator defaults to 100)
        ("default/third:80", Share(2, 3)),
        ("default/fourth:80", Share(1, 1)),
    ]


@pytest.mark.parametrize(
    ("filter_", "field", "reason"),
    [
        (mirror(percent=10, fraction={"numerator": 1}), "requestMirror", "only one of"),
        (mirror(percent=101), "requestMirror.percent", "out of range"),
        (mirror(fraction={"numerator": 3, "denominator": 2}), "requestMirror.fraction",
         "numerator must be less than or equal to denominator"),
        (mirror(fraction={"numerator": 1, "denominator": 0}),
         "requestMirror.fraction.denominator", "out of range"),
        (mirror(fraction={}), "requestMirror.fraction.numerator", "required"),
        ({"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "shadow"}}},
         "requestMirror.backendRef.port", "required"),
    ],
)  # fmt: skip
def test_malformed_mirrors_are_field_errors(filter_: dict[str, Any], field: str, reason: str
                                            ) -> None:  # fmt: skip
    result = kroute.compile_objects([gateway(), httproute("r", [{
        "filters": [filter_], "backendRefs": [to("web")]}])])  # fmt: skip
    (error,) = result.errors
    assert error.field == f"spec.rules[0].filters[0].{field}"
    assert reason in error.reason


def test_a_mirror_to_another_namespace_needs_a_reference_grant() -> None:
    route = httproute("r", [{"filters": [mirror(namespace="other")],
                             "backendRefs": [to("web")]}])  # fmt: skip
    result = kroute.compile_objects([gateway(), route])
    (step,) = mirrors_of(result)
    assert step.backend.error is not None
    assert step.backend.error.startswith("RefNotPermitted")
    assert not result.refused  # served, not copied (the spec: the backend "must be dropped")
    (note,) = [n for n in result.notes if "RequestMirror" in n]
    assert "spec.rules[0].filters[0]" in note
    assert "RefNotPermitted" in note
    grant = {
        "apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "ReferenceGrant",
        "metadata": {"name": "g", "namespace": "other"},
        "spec": {"from": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute",
                           "namespace": "default"}], "to": [{"group": "", "kind": "Service"}]},
    }  # fmt: skip
    result = kroute.compile_objects([gateway(), route, grant])
    (step,) = mirrors_of(result)
    assert step.backend == BackendRef("other", "shadow", 80)
    assert not [n for n in result.notes if "RequestMirror" in n]


def test_a_preview_says_what_is_copied_where() -> None:
    result = kroute.compile_objects([gateway(), httproute("r", [{
        "filters": [mirror(percent=20)], "backendRefs": [to("web")]}])])  # fmt: skip
    seen = preview(result.table.routes[0], kroute.RequestHead.build("GET", "a.local", "/x?y"))
    assert seen.changes == (
        "RequestMirror to default/shadow:80 (20%, spec.rules[0].filters[0]): copies GET /x?y",
    )


# -- the Router's queue (no I/O) ------------------------------------------------------------


def mirror_router(*filters: dict[str, Any]) -> Router:
    source = MemorySource(objects=[
        gateway(), httproute("r", [{"filters": list(filters), "backendRefs": [to("web")]}]),
        service("web"), service("shadow"), endpoint_slice("shadow", 8080, "127.0.0.3"),
    ])  # fmt: skip
    return Router([source], rng=random.Random(7))


def copies(router: Router, *, body: bool = False) -> None:
    decision = router.route(kroute.RequestHead.build("GET", "any.local", "/"))
    assert decision.chain is not None
    request = UpstreamRequest.from_target("GET", "/", [(b"Host", b"any.local")], routed="/")
    assert run_request(decision.chain, request) is None
    router.mirror(request, body=body)


def test_the_router_keeps_a_pool_for_a_mirror_backend() -> None:
    router = mirror_router(mirror())
    pool = router.pool(BackendRef("default", "shadow", 80))
    assert pool is not None
    assert [s.endpoints[0].endpoint for s in router.statistics().pools if s.name == pool.name]


def test_the_queue_is_bounded_and_bodies_are_skipped() -> None:
    router = mirror_router(mirror(), mirror(percent=0))
    router.mirrors = kroute.Mirrors(queue=2)
    for _ in range(3):
        copies(router)  # (nothing sends them: `run` is not running)
    copies(router, body=True)
    stats = router.statistics().mirrors
    assert (stats.queued, stats.dropped, stats.skipped, stats.mirrored, stats.failed) == (
        2, 1, 1, 0, 0)  # (the 0% mirror copied nothing, so it skipped nothing)  # fmt: skip


def test_a_fraction_mirrors_about_its_share_with_a_seeded_rng() -> None:
    router = mirror_router(mirror(fraction={"numerator": 1, "denominator": 4}))
    router.mirrors = kroute.Mirrors(queue=10_000)
    for _ in range(4000):
        copies(router)
    assert 850 < router.statistics().mirrors.queued < 1150


# -- through every front, with real backends ------------------------------------------------


@attrs.define
class Recorder:
    """A backend that records each request head; while `hang` it answers nothing."""

    address: str
    port: int = 0
    hang: bool = False
    requests: list[tuple[str, str, dict[str, list[str]]]] = attrs.Factory(list)

    async def serve(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        listener = await anyio.create_tcp_listener(local_host=self.address, local_port=0)
        self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
        task_status.started()
        async with listener:
            await listener.serve(self._one)

    async def _one(self, stream: anyio.abc.SocketStream) -> None:
        async with stream:
            data = b""
            while b"\r\n\r\n" not in data:
                data += await stream.receive()
            line, *fields = data.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
            method, target, _ = line.split(" ")
            seen: dict[str, list[str]] = {}
            for name, _, value in (f.partition(":") for f in fields):
                seen.setdefault(name.strip().lower(), []).append(value.strip())
            self.requests.append((method, target, seen))
            if self.hang:
                await anyio.sleep_forever()
            await stream.send(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")


async def until(condition: Any) -> None:
    """Wait until `condition()` holds (the copy travels on its own, after the response)."""
    with anyio.fail_after(5):
        while not condition():
            await anyio.sleep(0.005)


@pytest.fixture
async def world(every_front: str) -> AsyncIterator[tuple[FrontClient, Backend, Recorder, Router]]:
    primary, shadow = Backend("127.0.0.2"), Recorder("127.0.0.3")
    async with anyio.create_task_group() as group:
        await group.start(primary.serve)
        await group.start(shadow.serve)
        refusing = await anyio.create_tcp_listener(local_host="127.0.0.4", local_port=0)
        closed = refusing.extra(anyio.abc.SocketAttribute.local_port)
        await refusing.aclose()  # a port nothing listens on: connections are refused
        source = MemorySource(objects=[
            gateway(),
            httproute("copied", [{
                "filters": [
                    {"type": "RequestHeaderModifier",
                     "requestHeaderModifier": {"set": [{"name": "X-Before", "value": "1"}]}},
                    mirror(), mirror("shadow2"), mirror("never", percent=0),
                    {"type": "URLRewrite", "urlRewrite": {
                        "path": {"type": "ReplaceFullPath", "replaceFullPath": "/echo"}}},
                ],
                "backendRefs": [to("web")],
            }], hostnames=["copied.local"]),
            httproute("answered", [{"filters": [mirror(), {"type": "Fancy"}],
                                    "backendRefs": [to("web")]}], hostnames=["answered.local"]),
            httproute("refused", [{"filters": [mirror("refusing")], "backendRefs": [to("web")]}],
                      hostnames=["refused.local"]),
            service("web"), service("shadow"), service("shadow2"), service("refusing"),
            service("never"),
            endpoint_slice("web", primary.port, primary.address),
            endpoint_slice("shadow", shadow.port, shadow.address),
            endpoint_slice("shadow2", shadow.port, shadow.address),
            endpoint_slice("refusing", closed, "127.0.0.4"),
            endpoint_slice("never", shadow.port, shadow.address),
        ])  # fmt: skip
        router = Router([source])
        router.mirrors = kroute.Mirrors(queue=4, concurrency=2)
        group.start_soon(router.run)  # (the mirror workers run there)
        async with serving(router, every_front) as front:
            yield front, primary, shadow, router
        group.cancel_scope.cancel()


World = tuple[FrontClient, Backend, Recorder, Router]


@pytest.mark.anyio
async def test_each_mirror_gets_a_copy_as_the_steps_before_it_left_it(world: World) -> None:
    front, primary, shadow, router = world
    status, _, body = await front.request("copied.local", "/orig?q=1",
                                          headers=[(b"X-Client", b"c")])  # fmt: skip
    assert status == 200, body
    echo = json.loads(body)
    assert echo["target"] == "/echo?q=1"  # the rewrite after the mirrors applies to the request
    assert headers_of(echo)["x-before"] == ["1"]
    await until(lambda: router.statistics().mirrors.mirrored == 2)
    assert len(shadow.requests) == 2  # one per mirror (the 0% one sends none)
    for method, target, seen in shadow.requests:
        assert (method, target) == ("GET", "/orig?q=1")  # as it was before the rewrite
        assert seen["x-before"] == ["1"]
        assert seen["x-client"] == ["c"]
        assert seen["host"] == ["copied.local"]
        assert seen["x-forwarded-host"] == ["copied.local"]
    assert primary.hits == {"/echo": 1}
    stats = router.statistics().mirrors
    assert (stats.failed, stats.dropped, stats.skipped) == (0, 0, 0)


@pytest.mark.anyio
async def test_a_request_a_later_step_answers_is_not_copied(world: World) -> None:
    front, primary, shadow, router = world
    assert (await front.request("answered.local", "/answered"))[0] == 500  # (fails closed)
    assert (await front.request("copied.local", "/after"))[0] == 200
    await until(lambda: router.statistics().mirrors.mirrored >= 2)
    assert [target for _, target, _ in shadow.requests] == ["/after", "/after"]
    assert primary.hits == {"/echo": 1}


@pytest.mark.anyio
async def test_a_hanging_mirror_never_delays_the_request(world: World) -> None:
    front, primary, shadow, router = world
    shadow.hang = True
    status, _, _ = await front.request("copied.local", "/first")
    assert status == 200
    await until(lambda: len(shadow.requests) == 2)  # both copies in, neither answered
    status, _, _ = await front.request("copied.local", "/second")
    assert status == 200  # answered while the copies of the first hang
    assert router.statistics().mirrors.mirrored == 0
    assert primary.hits == {"/echo": 2}


@pytest.mark.anyio
async def test_copies_beyond_the_bound_are_dropped_not_waited_for(world: World) -> None:
    front, primary, shadow, router = world  # (2 workers, 4 places in the queue)
    shadow.hang = True
    assert (await front.request("copied.local", "/1"))[0] == 200
    await until(lambda: len(shadow.requests) == 2)  # both workers hang on a copy
    statuses = [(await front.request("copied.local", f"/{i}"))[0] for i in range(2, 5)]
    assert statuses == [200, 200, 200]
    stats = router.statistics().mirrors
    assert (stats.queued, stats.dropped, stats.mirrored) == (4, 2, 0)
    assert primary.hits == {"/echo": 4}


@pytest.mark.anyio
async def test_a_refusing_mirror_never_fails_the_request(world: World) -> None:
    front, primary, _, router = world
    status, _, body = await front.request("refused.local", "/echo")
    assert status == 200, body
    await until(lambda: router.statistics().mirrors.failed == 1)
    assert router.statistics().mirrors.mirrored == 0
    assert primary.hits == {"/echo": 1}


@pytest.mark.anyio
async def test_a_request_with_a_body_is_not_copied(world: World) -> None:
    front, _, shadow, router = world
    status, _, body = await front.request("copied.local", "/post", method="POST", body=b"hello")
    assert status == 200, body
    assert json.loads(body)["method"] == "POST"
    assert router.statistics().mirrors.skipped == 2
    assert shadow.requests == []


@pytest.mark.anyio
async def test_copies_are_spans_of_their_requests_trace(world: World) -> None:
    """Traced (issue 22: a span per slow step), each copy is a CLIENT span of its request's
    server span and carries that span's trace context; a request kroute does not sample makes
    no span, and its copies carry its context (sampled=0) as its request does."""
    front, _, shadow, router = world
    traced, spans = provider()
    router.tracing = Tracing(traced, sample_ratio=0.0)
    status, _, _ = await front.request("copied.local", "/orig",
                                       headers=[(b"traceparent", TRACEPARENT)])  # fmt: skip
    assert status == 200
    await until(lambda: router.statistics().mirrors.mirrored == 2)
    found = spans.memory.get_finished_spans()
    (server,) = [s for s in found if s.kind == SpanKind.SERVER]
    assert f"{server.context.trace_id:032x}" == TRACE_ID
    copies = [s for s in found if dict(s.attributes or {}).get("kroute.call") == "mirror"]
    assert {dict(c.attributes or {})["kroute.mirror.backend"] for c in copies} == {
        "default/shadow:80", "default/shadow2:80"}  # fmt: skip
    assert all(c.kind == SpanKind.CLIENT for c in copies)
    assert all(c.parent is not None and c.parent.span_id == server.context.span_id
               for c in copies)  # fmt: skip
    assert sorted(seen["traceparent"] for _, _, seen in shadow.requests) == sorted(
        [traceparent(c)] for c in copies
    )  # (the client's own replaced, not passed on twice)
    status, _, body = await front.request("copied.local", "/unsampled")
    assert status == 200
    await until(lambda: router.statistics().mirrors.mirrored == 4)
    (sent,) = [v for n, v in json.loads(body)["headers"] if n.lower() == "traceparent"]
    assert sent.endswith("-00")  # (not sampled: Trace Context section 3.2.2.5)
    assert [seen["traceparent"] for _, _, seen in shadow.requests[2:]] == [[sent], [sent]]
    assert len(spans.memory.get_finished_spans()) == len(found)

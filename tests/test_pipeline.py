"""The pipeline offline: steps, path rewriting (with hypothesis), compile-time fail-closed
cases, and what `kroute.testing` can assert about them."""

from __future__ import annotations

import asyncio
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

import kroute
from kroute.pipeline import (
    Answer,
    Chain,
    Filters,
    HeaderEdits,
    UpstreamRequest,
    run_request,
    run_response,
)
from kroute.pipeline.paths import replace_prefix, wire_path
from kroute.rules.preview import preview
from kroute.rules.request import normalize_path, path_stems
from kroute.testing import Routing, request_from_url
from tests.builders import gateway, httproute, ingress, ingressroute, to
from tests.test_pipeline_failures_e2e import Recording


@pytest.mark.parametrize(("matched", "path", "replacement", "expected"), [
    # Gateway API v1.6 HTTPPathModifier, ReplacePrefixMatch's table
    ("/foo", "/foo/bar", "/xyz", "/xyz/bar"),
    ("/foo", "/foo/bar", "/xyz/", "/xyz/bar"),
    ("/foo/", "/foo/bar", "/xyz", "/xyz/bar"),
    ("/foo/", "/foo/bar", "/xyz/", "/xyz/bar"),
    ("/foo", "/foo", "/xyz", "/xyz"),
    ("/foo/", "/foo", "/xyz", "/xyz"),
    ("/foo", "/foo/", "/xyz", "/xyz/"),
    ("/foo/", "/foo/", "/xyz", "/xyz/"),
    ("/foo", "/foo/bar", "/", "/bar"),
    ("/foo", "/foo", "/", "/"),
    ("/", "/foo", "/xyz", "/xyz/foo"),
])  # fmt: skip
def test_replace_prefix_follows_the_spec_table(
    matched: str, path: str, replacement: str, expected: str
) -> None:
    assert replace_prefix(path, matched, replacement) == expected


segment = st.text(st.sampled_from("ab%2F.~ -"), min_size=1, max_size=4)
raw_path = st.lists(segment, max_size=5).map(lambda s: "/" + "/".join(s))


@given(raw_path, st.integers(0, 5), st.lists(st.sampled_from(["x", "y", "%2F"]), max_size=3))
def test_prefix_rewrites_stay_under_the_replacement(raw: str, cut: int, parts: list[str]) -> None:
    path = normalize_path(raw)  # what routing matched on
    stems = path_stems(path)
    matched = stems[min(cut, len(stems) - 1)] or "/"
    replacement = "/" + "/".join(parts)
    rewritten = replace_prefix(path, matched, replacement)
    # No escaping: the backend's own normalisation of what is sent stays under the replacement.
    sent = normalize_path(wire_path(rewritten))
    stem = normalize_path(replacement).rstrip("/")
    assert sent == stem or sent.startswith(stem + "/") or (not stem and sent.startswith("/"))
    # Percent-encoding kept: a reserved character stays encoded through the rewrite.
    assert rewritten.count("%2F") >= path.count("%2F") - matched.count("%2F")
    # Replacing a prefix by itself changes nothing (idempotence).
    assert replace_prefix(path, matched, matched) == path


def test_header_edits_set_add_remove() -> None:
    request = UpstreamRequest("GET", "/", None, [(b"Host", b"h"), (b"x-a", b"1"), (b"X-A", b"2"),
                                                 (b"x-gone", b"1")])  # fmt: skip
    HeaderEdits(set=((b"X-A", b"new"),), add=((b"x-list", b"b"),), remove=(b"X-GONE",)).apply(
        request
    )
    assert request.headers == [(b"Host", b"h"), (b"X-A", b"new"), (b"x-list", b"b")]
    HeaderEdits(add=((b"X-List", b"c"),)).apply(request)
    assert request.get(b"x-list") == b"b,c"


def refused_fields(*objects: dict[str, Any], filters: Filters | None = None) -> set[str]:
    result = kroute.compile_objects(objects, filters=filters or Filters())
    assert not result.errors, result.errors
    return {f"{e.obj} {e.field}" for e in result.refused}


def test_what_kroute_cannot_apply_is_named_by_object_and_field() -> None:
    ext = {"type": "ExtensionRef", "extensionRef": {"group": "kroute.dev", "kind": "Filter",
                                                     "name": "missing"}}  # fmt: skip
    assert refused_fields(
        gateway(),
        httproute("r", [
            {"filters": [ext], "backendRefs": [to("a")]},
            {"filters": [{"type": "RequestMirror", "requestMirror": {"backendRef": to("m")}},
                         {"type": "Fancy"}], "backendRefs": [to("a")]},
            {"timeouts": {"request": "1s", "idle": "5s"}, "retry": {"attempts": 2},
             "sessionPersistence": {"sessionName": "s"}, "backendRefs": [to("a")]},
            {"backendRefs": [to("a", filters=[ext])]},
            {"filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {}}] * 2,
             "backendRefs": [to("a")]},
        ]),
        ingressroute("ir", [{"match": "Host(`a`)", "middlewares": [{"name": "auth"}],
                             "services": [{"name": "a", "port": 80, "scheme": "https"}],
                             "observability": {"accessLogs": False}}]),
        ingress("ing", [("h", [("/", "Prefix", "a")])],
                annotations={"traefik.ingress.kubernetes.io/router.middlewares": "x@kubernetescrd"}),
    ) >= {
        "HTTPRoute default/r spec.rules[0].filters[0]",
        "HTTPRoute default/r spec.rules[1].filters[1]",
        "HTTPRoute default/r spec.rules[2].timeouts.idle",
        "HTTPRoute default/r spec.rules[2].sessionPersistence",
        "HTTPRoute default/r spec.rules[3].backendRefs[0].filters[0]",
        "HTTPRoute default/r spec.rules[4].filters[1]",
        "IngressRoute default/ir spec.routes[0].middlewares[0]",
        "IngressRoute default/ir spec.routes[0].services[0].scheme",
        "IngressRoute default/ir spec.routes[0].observability",
        "Ingress default/ing metadata.annotations[traefik.ingress.kubernetes.io/router.middlewares]",
    }  # fmt: skip


@pytest.mark.parametrize("name", ["Content-Length", "transfer-encoding", "Connection", "Upgrade"])
def test_a_header_edit_cannot_set_framing_or_connection_fields(name: str) -> None:
    """Every front frames the message itself; a step's Content-Length would be a second one."""
    edit = {"set": [{"name": name, "value": "1"}]}
    result = kroute.compile_objects([gateway(), httproute("r", [{"filters": [
        {"type": "ResponseHeaderModifier", "responseHeaderModifier": {}},
        {"type": "RequestHeaderModifier", "requestHeaderModifier": edit},
    ], "backendRefs": [to("a")]}])])  # fmt: skip
    (error,) = result.errors
    assert str(error).startswith("HTTPRoute default/r: spec.rules[0].filters[1]"
                                 ".requestHeaderModifier.set[0].name: ")  # fmt: skip
    assert "the gateway writes it itself" in str(error)
    assert not result.table.routes


def test_defaults_that_change_nothing_are_not_refused() -> None:
    assert not refused_fields(
        ingressroute("ir", [{"match": "Host(`a`)", "syntax": "v3",
                             "services": [{"name": "a", "port": 80, "passHostHeader": True}]}]),
    )  # fmt: skip


def filters() -> Filters:
    registered = Filters()

    @registered.register("team")
    def team(request: UpstreamRequest) -> Answer | None:
        if request.get(b"x-team") is None:
            return Answer(403, "no team")
        request.set(b"X-Team-Checked", b"yes")
        return None

    return registered


ROUTING = [
    gateway(),
    httproute("api", [{
        "matches": [{"path": {"type": "PathPrefix", "value": "/api"}}],
        "filters": [
            {"type": "RequestHeaderModifier",
             "requestHeaderModifier": {"set": [{"name": "X-Env", "value": "prod"}]}},
            {"type": "URLRewrite",
             "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/v2"}}},
            {"type": "ExtensionRef",
             "extensionRef": {"group": "kroute.dev", "kind": "Filter", "name": "team"}},
            {"type": "ResponseHeaderModifier",
             "responseHeaderModifier": {"add": [{"name": "X-Via", "value": "kroute"}]}},
        ],
        "backendRefs": [to("api")],
    }, {
        "matches": [{"path": {"type": "PathPrefix", "value": "/old"}}],
        "filters": [{"type": "RequestRedirect", "requestRedirect": {
            "statusCode": 301, "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/new"}}}],
    }], hostnames=["shop.test"]),
]  # fmt: skip


def test_testing_asserts_what_the_backend_receives() -> None:
    routing = Routing.from_objects(ROUTING, filters=filters())
    found = routing.expect_forwarded(
        "shop.test/api/cart?id=%2F7", path="/v2/cart?id=%2F7",
        headers={"x-env": "prod", "x-team-checked": "yes", "x-drop": None},
        request_headers={"X-Team": "a"},
    )  # fmt: skip
    assert found.response_headers == ((b"X-Via", b"kroute"),)
    assert "URLRewrite (spec.rules[0].filters[1]): path /api/cart?id=%2F7 -> /v2/cart?id=%2F7" in (
        found.changes
    )
    routing.expect_answer("shop.test/api/cart", 403)
    routing.expect_redirect("shop.test/old/x?q=1", "http://shop.test/new/x?q=1", status=301)
    with pytest.raises(AssertionError, match="expected path '/cart'"):
        routing.expect_forwarded(
            "shop.test/api/cart", path="/cart", request_headers={"X-Team": "a"}
        )


def test_strict_routing_fails_on_a_route_that_fails_closed() -> None:
    with pytest.raises(AssertionError, match="no filter named 'team'"):
        Routing.from_objects(ROUTING)  # the filter is not registered
    assert Routing.from_objects(ROUTING, strict=False).preview("shop.test/api/x").status == (
        500,
        "ExtensionRef: no filter named 'team' is registered with the Router (registered: none)",
    )


def test_a_waiting_chain_is_not_run_without_an_event_loop() -> None:
    async def check(request: UpstreamRequest) -> Answer | None:
        await asyncio.sleep(0)  # (suspends: what an auth call does)
        return None

    registered = Filters()
    registered.register("wait")(check)
    step = registered.step("wait", "spec.rules[0].filters[0]")
    assert step is not None
    chain = Chain((step,))
    assert chain.waits
    with pytest.raises(RuntimeError, match="run_request_async"):
        run_request(chain, UpstreamRequest("GET", "/", None, []))


def test_explain_shows_what_the_backend_receives_and_which_step_did_what() -> None:
    table = kroute.compile_objects(ROUTING, filters=filters()).table
    request = kroute.RequestHead.build("GET", "shop.test", "/api/cart?id=7",
                                       headers={"X-Team": "a", "X-Other": ["1", "2"]})  # fmt: skip
    found = kroute.explain(table, request)
    data = found.to_json()
    assert data["upstream"] == {
        "method": "GET", "host": "shop.test", "path": "/v2/cart?id=7",
        "headers": {"host": "shop.test", "x-team": "a", "x-other": ["1", "2"], "x-env": "prod",
                    "x-team-checked": "yes"},
    }  # fmt: skip
    assert data["response_headers"] == {"X-Via": "kroute"}
    assert data["steps"] == [
        "RequestHeaderModifier (spec.rules[0].filters[0])", "URLRewrite (spec.rules[0].filters[1])",
        "Filter team (spec.rules[0].filters[2])", "ResponseHeaderModifier (spec.rules[0].filters[3])",
    ]  # fmt: skip
    text = found.text()
    assert (
        "step URLRewrite (spec.rules[0].filters[1]): path /api/cart?id=7 -> /v2/cart?id=7" in text
    )
    assert "the backend receives: GET shop.test/v2/cart?id=7" in text
    denied = kroute.explain(table, kroute.RequestHead.build("GET", "shop.test", "/api/cart"))
    assert (denied.to_json()["status"], denied.to_json()["reason"]) == (403, "no team")
    assert "answered by a step: 403 (no team)" in denied.text()
    moved = kroute.explain(table, kroute.RequestHead.build("GET", "shop.test", "/old/x?q=1"))
    assert moved.to_json()["redirect"] == {"status": 301, "location": "http://shop.test/new/x?q=1"}
    assert "redirects: 301 to http://shop.test/new/x?q=1" in moved.text()


def test_a_raising_response_step_is_a_500_in_run_response_and_explain() -> None:
    """`run_response` fails the response closed (the 500 to answer, the step named) and
    explain shows it, instead of raising into the caller."""
    step = Recording("f", raises="response")
    request = UpstreamRequest("GET", "/", None, [], "/")
    answer = run_response(Chain((step,)), 200, [], request)
    assert answer is not None
    assert (answer.status, answer.step) == (500, "Recording (f)")
    route = kroute.compile_objects(ROUTING).table.routes[0]
    shown = preview(attrs.evolve(route, chain=Chain((step,))), request_from_url("shop.test/x"))
    assert shown.status == (500, "Recording (f) raised an exception")


WRITING_STEPS = ["Answer", "AsyncStep", "Awaited", "Call", "Chain", "Deferring", "Fetch",
                 "FetchFailed", "Reply", "Step", "UpstreamRequest", "WAIT", "Waiting", "run_end",
                 "run_outcome", "run_request", "run_request_async", "run_response"]  # fmt: skip


@pytest.mark.parametrize("name", WRITING_STEPS)
def test_what_users_writing_steps_need_is_public(name: str) -> None:
    """What docs/pipeline.md names for users' own steps (a step that waits and calls out, the
    runners) is exported by kroute.pipeline and kroute, the same object."""
    assert name in kroute.pipeline.__all__
    assert name in kroute.__all__
    assert getattr(kroute, name) is getattr(kroute.pipeline, name)

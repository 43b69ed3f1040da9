"""The forwardAuth Middleware offline: what is sent to the auth service and what its answer
means (`ForwardAuth.call` and `decide`, pure), trustForwardHeader, the fields that are errors
and those that fail closed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import kroute
from kroute.gateway.fetch import Fetches
from kroute.pipeline import UpstreamRequest
from kroute.pipeline.fetch import Call, FetchFailed, Reply
from kroute.pipeline.filters import canonical_name
from kroute.pipeline.steps import Chain, run_request_async
from kroute.rules.middlewares.forward_auth import ForwardAuth, forward_auth
from kroute.transport.base import ForwardRequest, ForwardResponse, Target
from tests.test_middlewares_e2e import middleware, using

pytestmark = pytest.mark.anyio


def step(**options: Any) -> ForwardAuth:
    built = forward_auth({"address": "http://auth.local:8080/check?x=1", **options},
                         "spec.forwardAuth")  # fmt: skip
    assert isinstance(built, ForwardAuth)
    return built


def request(*headers: tuple[bytes, bytes]) -> UpstreamRequest:
    return UpstreamRequest("POST", "/api/x", "q=1", [(b"Host", b"app.local"), *headers],
                           scheme="https", client="203.0.113.9")  # fmt: skip


def sent(call: Call) -> dict[str, str]:
    return {n.decode().lower(): v.decode() for n, v in call.headers}


def test_the_call_describes_the_request() -> None:
    call = step().call(request((b"Authorization", b"Bearer t"), (b"X-Forwarded-Host", b"evil")))
    assert (call.host, call.port, call.https, call.method, call.target) == (
        "auth.local", 8080, False, "GET", "/check?x=1")  # fmt: skip
    headers = sent(call)
    assert headers["host"] == "auth.local:8080"
    assert headers["authorization"] == "Bearer t"
    assert headers["x-forwarded-method"] == "POST"
    assert headers["x-forwarded-proto"] == "https"
    assert headers["x-forwarded-host"] == "app.local"  # not the request's: not trusted
    assert headers["x-forwarded-uri"] == "/api/x?q=1"
    assert headers["x-forwarded-for"] == "203.0.113.9"


def test_trust_forward_header_passes_the_fronts_values_on() -> None:
    call = step(trustForwardHeader=True).call(request(
        (b"X-Forwarded-Host", b"outer.example"), (b"X-Forwarded-For", b"198.51.100.1, 203.0.113.9"),
    ))  # fmt: skip
    headers = sent(call)
    assert headers["x-forwarded-host"] == "outer.example"
    assert headers["x-forwarded-for"] == "198.51.100.1, 203.0.113.9"
    assert headers["x-forwarded-method"] == "POST"  # (the request has none: its own)


def test_auth_request_headers_and_preserve_method() -> None:
    call = step(authRequestHeaders=["authorization"], preserveRequestMethod=True).call(
        request((b"Authorization", b"t"), (b"Cookie", b"c=1")))  # fmt: skip
    assert call.method == "POST"
    assert "cookie" not in sent(call)
    assert sent(call)["authorization"] == "t"


def test_a_denial_becomes_the_answer_with_its_headers_and_body() -> None:
    reply = Reply(403, ((b"Location", b"login"), (b"Content-Length", b"2"),
                        (b"Connection", b"close"), (b"X-Why", b"nope")), b"no")  # fmt: skip
    answer = step().decide(request(), reply)
    assert answer is not None
    assert (answer.status, answer.body) == (403, b"no")
    assert dict(answer.headers) == {b"Location": b"http://auth.local:8080/login",
                                    b"X-Why": b"nope"}  # fmt: skip
    kept = step(preserveLocationHeader=True).decide(request(), reply)
    assert kept is not None
    assert dict(kept.headers)[b"Location"] == b"login"


def test_a_yes_copies_the_named_headers_in_place_of_the_clients() -> None:
    through = request((b"x-user", b"mallory"), (b"X-Group-A", b"spoofed"))
    reply = Reply(204, ((b"X-User", b"alice"), (b"x-group-b", b"g"), (b"X-Else", b"e")), b"")
    assert step(authResponseHeaders=["X-User"],
                authResponseHeadersRegex="^X-Group-").decide(through, reply) is None  # fmt: skip
    names = [(n.lower(), v) for n, v in through.headers]
    assert (b"x-user", b"alice") in names
    assert (b"x-user", b"mallory") not in names
    assert (b"x-group-b", b"g") in names
    assert (b"x-group-a", b"spoofed") not in names
    assert all(n != b"x-else" for n, _ in names)


def test_auth_cookies_replace_the_backends_of_the_same_name() -> None:
    auth = step(addAuthCookiesToResponse=["session"])
    through = request()
    reply = Reply(200, ((b"Set-Cookie", b"session=new"), (b"Set-Cookie", b"other=x")), b"")
    assert auth.decide(through, reply) is None
    headers = [(b"Set-Cookie", b"session=old"), (b"Set-Cookie", b"app=1")]
    auth.response(200, headers, through)
    assert headers == [(b"Set-Cookie", b"app=1"), (b"Set-Cookie", b"session=new")]


async def test_a_failed_call_or_no_front_refuses_with_500() -> None:
    async def down(call: Call) -> Reply:
        raise FetchFailed("connection refused")

    chain = Chain((step(),))
    for fetch in (down, None):
        answer = await run_request_async(chain, request(), fetch)
        assert answer is not None
        assert answer.status == 500


@pytest.mark.parametrize(("options", "why"), [
    ({"address": "ftp://a"}, "spec.forwardAuth.address: 'ftp://a' is not an http"),
    ({"address": "http://u:p@a/"}, "user information"),
    ({"address": "http://a:99999/"}, "invalid port"),
    ({"authResponseHeaders": ["bad name"]}, "authResponseHeaders[0]"),
    ({"authResponseHeadersRegex": "(a)\\1"}, "authResponseHeadersRegex"),
    ({"trustForwardHeader": "yes"}, "expected a boolean"),
    ({"madeUp": 1}, "spec.forwardAuth.madeUp: unknown option"),
])  # fmt: skip
def test_invalid_options_name_the_field(options: dict[str, Any], why: str) -> None:
    spec = {"forwardAuth": {"address": "http://auth.local/", **options}}
    (error,) = kroute.compile_objects([middleware("m", spec)]).errors
    assert why in str(error)


@pytest.mark.parametrize("name", ["tls", "forwardBody", "headerField"])
def test_what_kroute_lacks_fails_closed(name: str) -> None:
    value: Any = {"insecureSkipVerify": True} if name == "tls" else True
    spec = {"forwardAuth": {"address": "http://auth.local/", name: value}}
    result = kroute.compile_objects([middleware("m", spec), using("a.local", "m")])
    (refused,) = [str(r) for r in result.refused]
    assert f"forwardAuth.{name} is not supported by kroute yet" in refused


def test_go_canonical_names() -> None:
    assert canonical_name("x-auth-USER") == "X-Auth-User"
    assert canonical_name("bad name") == "bad name"


@given(st.lists(st.tuples(st.binary(min_size=1, max_size=20), st.binary(max_size=20)),
                max_size=8), st.integers(100, 599))  # fmt: skip
def test_any_answer_is_a_decision(headers: list[tuple[bytes, bytes]], status: int) -> None:
    """Whatever the auth service answers, the step decides without raising: through only on
    2xx."""
    auth = step(authResponseHeadersRegex="^X-", addAuthCookiesToResponse=["s"],
                authResponseHeaders=["X-A"])  # fmt: skip
    answer = auth.decide(request(), Reply(status, tuple(headers), b"body"))
    assert (answer is None) == (200 <= status < 300)


async def test_logs_and_explain_never_show_the_addresss_query() -> None:
    """The address may carry a token in its query: the label (explain) and the reasons (logs,
    request events) show scheme://host:port/path only."""
    auth = forward_auth({"address": "http://auth.local/check?token=s3cret"}, "spec.forwardAuth")
    assert isinstance(auth, ForwardAuth)

    async def down(call: Call) -> Reply:
        assert call.target == "/check?token=s3cret"  # (the call itself is as configured)
        raise FetchFailed("connection refused")

    failed = await run_request_async(Chain((auth,)), request(), down)
    denied = auth.decide(request(), Reply(403, (), b""))
    assert failed is not None
    assert denied is not None
    for shown in (auth.label, failed.reason, denied.reason):
        assert "s3cret" not in shown
        assert "http://auth.local:80/check" in shown


class Recorder:
    """A transport that answers 204 and keeps the targets it was asked for."""

    def __init__(self) -> None:
        self.targets: list[Target] = []

    async def send(self, target: Target, request: ForwardRequest) -> ForwardResponse:
        self.targets.append(target)
        return ForwardResponse(204, b"No Content", [], _empty())

    async def aclose(self) -> None:
        pass


async def _empty() -> AsyncIterator[bytes]:
    return
    yield b""


async def test_the_tls_context_is_made_once() -> None:
    """Making an SSLContext reads the CA store (tens of milliseconds on the loop): a Router's
    calls share one."""
    fetches, recorder = Fetches(), Recorder()
    call = Call("auth.local", 443, True, "GET", "/", (), 1.0, 100)
    for _ in range(3):
        assert (await fetches.fetch(recorder, call)).status == 204
    first = recorder.targets[0].tls
    assert first is not None
    assert all(t.tls is first for t in recorder.targets)
    assert recorder.targets[0].server_name == "auth.local"

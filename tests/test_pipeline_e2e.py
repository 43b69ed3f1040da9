"""The request pipeline through every front (HttpServer on asyncio and trio, FastGateway, the
ASGI gateway on asyncio and trio), with a real backend on loopback that echoes what it got."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from kroute.gateway.router import Router
from kroute.pipeline import Answer, Filters, UpstreamRequest
from kroute.transport.conformance import Backend
from kroute.transport.proxy import TrustedProxies
from tests.builders import httproute, ingress, ingressroute, to
from tests.fronts import FrontClient, echo_gateway

pytestmark = pytest.mark.anyio


def headers_of(echo: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in echo["headers"]:
        out.setdefault(name.lower(), []).append(value)
    return out


async def echoed(
    front: FrontClient, host: str, headers: list[tuple[bytes, bytes]] | None = None
) -> dict[str, list[str]]:
    """The headers the echo backend got for GET /echo on `host` (which must answer 200)."""
    status, _, body = await front.request(host, "/echo", headers=headers)
    assert status == 200, body
    return headers_of(json.loads(body))


def filters() -> Filters:
    registered = Filters()

    @registered.register("tenant")
    def tenant(request: UpstreamRequest) -> Answer | None:
        request.set(b"X-Tenant", (request.get(b"x-team") or b"none").upper())
        return None

    @registered.register("token")
    async def token(request: UpstreamRequest) -> Answer | None:
        await anyio.sleep(0)  # (an authorisation call would wait here)
        if request.get(b"authorization") != b"Bearer good":
            return Answer(401, "no valid token", headers=((b"WWW-Authenticate", b"Bearer"),))
        return None

    @registered.register("copy")
    def copy(request: UpstreamRequest) -> Answer | None:
        """What the steps before it left: X-A copied to X-Seen-A."""
        request.set(b"X-Seen-A", request.get(b"x-a") or b"(none)")
        return None

    @registered.register("broken")
    def broken(request: UpstreamRequest) -> Answer | None:
        raise RuntimeError("secret internal detail")

    return registered


def set_a() -> dict[str, Any]:
    return {"type": "RequestHeaderModifier",
            "requestHeaderModifier": {"set": [{"name": "X-A", "value": "1"}]}}  # fmt: skip


def ext(name: str, group: str = "kroute.dev", kind: str = "Filter") -> dict[str, Any]:
    return {"type": "ExtensionRef", "extensionRef": {"group": group, "kind": kind, "name": name}}


ROUTES = [
    httproute("edit", [{
        "matches": [{"path": {"type": "PathPrefix", "value": "/api"}}],
        "filters": [
            {"type": "RequestHeaderModifier", "requestHeaderModifier": {
                "set": [{"name": "X-Set", "value": "set"}],
                "add": [{"name": "X-Add", "value": "added"}],
                "remove": ["X-Secret"]}},
            {"type": "URLRewrite", "urlRewrite": {
                "hostname": "internal.local",
                "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}}},
            {"type": "ResponseHeaderModifier", "responseHeaderModifier": {
                "set": [{"name": "X-Served-By", "value": "kroute"}], "remove": ["Content-Type"]}},
        ],
        "backendRefs": [to("web")],
    }], hostnames=["edit.local"]),
    httproute("forwarding", [{"filters": [{"type": "RequestHeaderModifier",
        "requestHeaderModifier": {"remove": ["X-Forwarded-For"],
                                  "set": [{"name": "X-Forwarded-Proto", "value": "https"}]}}],
        "backendRefs": [to("web")]}], hostnames=["forwarding.local"]),
    # Declarative steps (FastGateway remembers what they make of a path: `Client.planned`).
    httproute("planned", [{
        "matches": [{"path": {"type": "PathPrefix", "value": "/api"}}],
        "filters": [
            {"type": "RequestHeaderModifier",
             "requestHeaderModifier": {"set": [{"name": "X-Plan", "value": "yes"}],
                                       "add": [{"name": "X-Added", "value": "a"}]}},
            {"type": "URLRewrite", "urlRewrite": {
                "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}}}],
        "backendRefs": [to("web")]}], hostnames=["planned.local"]),
    # Steps run in the order written: the copy sees X-A only when it comes after the set.
    httproute("ordered", [{"filters": [set_a(), ext("copy")], "backendRefs": [to("web")]}],
              hostnames=["set-then-copy.local"]),
    httproute("reversed", [{"filters": [ext("copy"), set_a()], "backendRefs": [to("web")]}],
              hostnames=["copy-then-set.local"]),
    httproute("redirect", [{"filters": [{"type": "RequestRedirect", "requestRedirect": {
        "scheme": "https", "statusCode": 303,
        "path": {"type": "ReplaceFullPath", "replaceFullPath": "/login"}}}]}],
        hostnames=["redirect.local"]),
    httproute("mine", [{"filters": [ext("tenant"), ext("token")], "backendRefs": [to("web")]}],
              hostnames=["mine.local"]),
    httproute("broken", [{"filters": [ext("broken")], "backendRefs": [to("web")]}],
              hostnames=["broken.local"]),
    # Fail closed: none of these may reach the backend.
    httproute("unknown-ext", [{"filters": [ext("nope")], "backendRefs": [to("web")]}],
              hostnames=["unknown-ext.local"]),
    httproute("middleware-ext", [{"filters": [ext("auth", "traefik.io", "Middleware")],
                                  "backendRefs": [to("web")]}], hostnames=["mw-ext.local"]),
    httproute("mirror", [{"filters": [{"type": "FancyFilter"}], "backendRefs": [to("web")]}],
              hostnames=["unknown-type.local"]),
    httproute("session", [{"sessionPersistence": {"sessionName": "s"}, "backendRefs": [to("web")]}],
              hostnames=["session.local"]),
    httproute("backend-filter", [{"backendRefs": [to("web", filters=[ext("nope")])]}],
              hostnames=["backend-filter.local"]),
    ingressroute("auth", [{"match": "Host(`basic-auth.local`)",
                           "middlewares": [{"name": "basic-auth"}],
                           "services": [{"name": "web", "port": 80}]}]),
    ingress("nginx-auth", [("nginx-auth.local", [("/", "Prefix", "web")])],
            annotations={"nginx.ingress.kubernetes.io/auth-url": "http://auth/check"}),
]  # fmt: skip
REFUSED = ["unknown-ext.local", "mw-ext.local", "unknown-type.local", "session.local",
           "backend-filter.local", "basic-auth.local", "nginx-auth.local"]  # fmt: skip


@pytest.fixture
async def client(every_front: str) -> AsyncIterator[tuple[FrontClient, Backend, Router]]:
    async with echo_gateway(ROUTES, every_front, filters=filters()) as served:
        yield served


async def test_header_edits_and_rewrites_reach_the_backend(
    client: tuple[FrontClient, Backend, Router],
) -> None:
    front, backend, _ = client
    status, headers, body = await front.request(
        "edit.local",
        "/api/echo?q=%2F1",
        headers=[(b"X-Set", b"old"), (b"X-Add", b"first"), (b"X-Secret", b"s3cret")],
    )
    assert status == 200, body
    echo = json.loads(body)
    seen = headers_of(echo)
    assert echo["target"] == "/echo?q=%2F1"  # the prefix replaced, the query kept as it was
    assert seen["host"] == ["internal.local"]
    assert seen["x-set"] == ["set"]
    assert seen["x-add"] == ["first,added"]  # appended to the existing value (spec example)
    assert "x-secret" not in seen
    assert seen["x-forwarded-host"] == ["edit.local"]  # what the client asked for
    names = {n.lower(): v for n, v in headers}
    assert names[b"x-served-by"] == b"kroute"
    assert b"content-type" not in names
    assert backend.hits == {"/echo": 1}


@pytest.mark.parametrize("host", [
    "forwarding.local",  # steps that name the fields they touch
    "set-then-copy.local",  # a user's function: the steps see every field
    "edit.local",  # the steps name Host, which the request carries
])  # fmt: skip
async def test_fields_named_by_connection_never_reach_the_backend(
    client: tuple[FrontClient, Backend, Router], host: str
) -> None:
    # RFC 9110 section 7.6.1, with steps as without: every form FastGateway gives the steps.
    hop = [(b"Connection", b"keep-alive, X-Hop-Secret"), (b"X-Hop-Secret", b"1"),
           (b"X-Kept", b"2")]  # fmt: skip
    front = client[0]
    status, _, body = await front.request(host, "/api/echo" if host == "edit.local" else "/echo",
                                          headers=hop)  # fmt: skip
    assert status == 200, body
    seen = headers_of(json.loads(body))
    assert "x-hop-secret" not in seen
    assert seen["x-kept"] == ["2"]


async def test_the_same_path_again_gives_the_same_request_whatever_its_query(
    client: tuple[FrontClient, Backend, Router],
) -> None:
    front, backend, _ = client
    for query in ("?a=1", "?b=%2F2", "", "?a=1"):
        status, _, body = await front.request("planned.local", f"/api/echo{query}")
        assert status == 200, body
        echo = json.loads(body)
        assert echo["target"] == f"/echo{query}"
        seen = headers_of(echo)
        assert seen["x-plan"] == ["yes"]
        assert seen["x-added"] == ["a"]
        assert seen["x-forwarded-host"] == ["planned.local"]
    # A request that carries a field the steps name gets the steps themselves.
    status, _, body = await front.request(
        "planned.local", "/api/echo", headers=[(b"X-Plan", b"no"), (b"X-Added", b"b")]
    )
    seen = headers_of(json.loads(body))
    assert seen["x-plan"] == ["yes"]
    assert seen["x-added"] == ["b,a"]
    assert backend.hits == {"/echo": 5}


async def test_steps_may_edit_the_forwarding_headers(
    client: tuple[FrontClient, Backend, Router],
) -> None:
    # Every front gives the steps the request with this hop's forwarding headers in it.
    seen = await echoed(client[0], "forwarding.local")
    assert "x-forwarded-for" not in seen
    assert seen["x-forwarded-proto"] == ["https"]
    assert seen["x-forwarded-host"] == ["forwarding.local"]


@pytest.mark.parametrize(("host", "seen"), [
    ("set-then-copy.local", ["1"]), ("copy-then-set.local", ["(none)"]),
])  # fmt: skip
async def test_steps_run_in_the_order_written(
    client: tuple[FrontClient, Backend, Router], host: str, seen: list[str]
) -> None:
    headers = await echoed(client[0], host)
    assert headers["x-seen-a"] == seen
    assert headers["x-a"] == ["1"]


async def test_redirect_status_and_location(client: tuple[FrontClient, Backend, Router]) -> None:
    front, backend, _ = client
    status, headers, _ = await front.request("redirect.local", "/old?x=1")
    assert status == 303
    assert dict(headers)[b"Location"] == b"https://redirect.local/login?x=1"
    assert backend.hits == {}


async def test_registered_filters_edit_and_answer(
    client: tuple[FrontClient, Backend, Router],
) -> None:
    front, backend, _ = client
    status, headers, _ = await front.request("mine.local", "/echo")
    assert status == 401
    assert (b"WWW-Authenticate", b"Bearer") in headers
    assert backend.hits == {}
    allowed = [(b"Authorization", b"Bearer good"), (b"X-Team", b"a")]
    assert (await echoed(front, "mine.local", allowed))["x-tenant"] == ["A"]
    assert backend.hits == {"/echo": 1}


async def test_a_filter_that_raises_fails_closed_without_saying_why(
    client: tuple[FrontClient, Backend, Router],
) -> None:
    front, backend, _ = client
    status, _, body = await front.request("broken.local", "/echo")
    assert status == 500
    assert b"secret" not in body
    assert b"RuntimeError" not in body
    assert backend.hits == {}


@pytest.mark.parametrize("host", REFUSED)
async def test_what_kroute_cannot_apply_fails_closed(
    client: tuple[FrontClient, Backend, Router], host: str
) -> None:
    front, backend, router = client
    status, _, body = await front.request(host, "/echo")
    assert status == 500
    assert b"cannot be served as configured" in body
    assert b"nope" not in body  # names stay inside
    assert b"auth" not in body
    assert backend.hits == {}
    assert router.refused  # and said out loud (explain and the admin API read this)


SAID = [(b"X-Forwarded-Uri", b"/public"), (b"X-Forwarded-Method", b"GET"),
        (b"X-Real-Ip", b"10.0.0.1"), (b"X_Forwarded_For", b"10.0.0.2")]  # fmt: skip


@pytest.mark.parametrize("trusted", [False, True])
async def test_what_a_client_says_of_its_request_goes_on_only_from_a_trusted_proxy(
    every_front: str, trusted: bool
) -> None:
    """X-Forwarded-Uri, -Method, X-Real-Ip (Traefik's forwardedheaders set) reach the backend
    only from a trusted proxy (a forwardAuth service reads them); underscore spellings never."""
    plain = [httproute("plain", [{"backendRefs": [to("web")]}], hostnames=["plain.local"])]
    proxies = TrustedProxies.of("127.0.0.0/8") if trusted else TrustedProxies()
    async with echo_gateway(plain, every_front, trusted=proxies) as (front, _, _):
        got = await echoed(front, "plain.local", SAID)
    said = {k: got.get(k) for k in ("x-forwarded-uri", "x-forwarded-method", "x-real-ip")}
    if trusted:
        assert said == {"x-forwarded-uri": ["/public"], "x-forwarded-method": ["GET"],
                        "x-real-ip": ["10.0.0.1"]}  # fmt: skip
    else:
        assert said == dict.fromkeys(said)
    assert "x_forwarded_for" not in got


async def test_gateway_answers_to_head_carry_no_body(every_front: str) -> None:
    """A gateway's own answer (no route: 404; a step's: 403) to HEAD has the head a GET would
    get and no body (RFC 9110 section 9.3.2); the next request on the connection is answered
    as itself (a body there would be read as the start of the next response)."""
    routes = [httproute("plain", [{"backendRefs": [to("web")]}], hostnames=["plain.local"]),
              httproute("refused", [{"filters": [ext("nobody")], "backendRefs": [to("web")]}],
                        hostnames=["refused.local"])]  # fmt: skip
    filters = Filters()
    filters.register("nobody")(lambda request: Answer(403, "nobody may"))
    async with echo_gateway(routes, every_front, filters=filters) as (front, backend, _):
        for host, status in (("nowhere.local", 404), ("refused.local", 403)):
            got, headers, body = await front.request(host, "/echo", method="HEAD")
            assert (got, body) == (status, b"")
            length = {n.lower(): v for n, v in headers}[b"content-length"]
            assert int(length) > 0  # (what a GET would have got)
            if front.port is not None:  # the same, on one connection, read as it comes
                await head_then_get(front.port, host, status)
        assert backend.hits == ({"/echo": 2} if every_front != "asgi" else {})


async def head_then_get(port: int, host: str, status: int) -> None:
    """HEAD to `host` and GET to plain.local pipelined on one connection: two whole answers,
    the first without a body."""
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(f"HEAD /echo HTTP/1.1\r\nHost: {host}\r\n\r\nGET /echo HTTP/1.1\r\n"
                          "Host: plain.local\r\nConnection: close\r\n\r\n".encode())  # fmt: skip
        received = b""
        with anyio.fail_after(5):
            while True:
                try:
                    received += await stream.receive()
                except anyio.EndOfStream:
                    break
    first, _, rest = received.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 %d" % status)
    assert rest.startswith(b"HTTP/1.1 200"), rest[:80]

"""Traefik Middlewares through every front (HttpServer on asyncio and trio, FastGateway, the
ASGI gateway on asyncio and trio), against a real echo backend on loopback. Each Middleware is
written as Traefik's documentation shows it (its page's Kubernetes example, the same fields), so
users' existing objects are known to work; what fails closed never reaches the backend."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from kroute.gateway.router import Router
from kroute.transport.conformance import Backend
from tests.builders import httproute, ingress, ingressroute, to
from tests.fronts import FrontClient, echo_gateway
from tests.test_pipeline_e2e import ext, headers_of

pytestmark = pytest.mark.anyio


def middleware(name: str, spec: dict[str, Any], namespace: str = "default") -> dict[str, Any]:
    return {"apiVersion": "traefik.io/v1alpha1", "kind": "Middleware",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}  # fmt: skip


def using(host: str, *names: str, namespace: str = "default") -> dict[str, Any]:
    """An IngressRoute for `host` through the Middlewares `names` (name or namespace/name)."""
    refs = [dict(zip(("namespace", "name"), n.split("/"), strict=True)) if "/" in n
            else {"name": n} for n in names]  # fmt: skip
    return ingressroute(host.split(".")[0], [{"match": f"Host(`{host}`)", "middlewares": refs,
                        "services": [{"name": "web", "port": 80}]}], namespace=namespace)  # fmt: skip


# The Kubernetes examples of Traefik v3's middleware pages, field for field.
MIDDLEWARES = [
    middleware("test-stripprefix", {"stripPrefix": {"prefixes": ["/foobar", "/fiibar"]}}),
    middleware("test-stripprefixregex",
               {"stripPrefixRegex": {"regex": ["/foo/[a-z0-9]+/[0-9]+/"]}}),
    middleware("test-addprefix", {"addPrefix": {"prefix": "/foo"}}),
    middleware("test-replacepath", {"replacePath": {"path": "/foo"}}),
    middleware("test-replacepathregex",
               {"replacePathRegex": {"regex": "^/foo/(.*)", "replacement": "/bar/$1"}}),
    middleware("test-header", {"headers": {
        "customRequestHeaders": {"X-Script-Name": "test", "X-Custom-Request-Header": ""},
        "customResponseHeaders": {"X-Custom-Response-Header": "value", "Content-Type": ""}}}),
    middleware("security-header", {"headers": {"frameDeny": True, "browserXssFilter": True,
                                               "stsSeconds": 31536000, "forceSTSHeader": True,
                                               "contentTypeNosniff": True,
                                               "contentSecurityPolicy": "default-src 'self'"}}),
    middleware("cors-header", {"headers": {
        "accessControlAllowMethods": ["GET", "OPTIONS", "PUT"],
        "accessControlAllowHeaders": ["*"],
        "accessControlAllowOriginList": ["https://foo.bar.org", "https://example.org"],
        "accessControlMaxAge": 100, "addVaryHeader": True}}),
    middleware("test-redirectscheme", {"redirectScheme": {"scheme": "https", "permanent": True}}),
    middleware("test-redirectregex", {"redirectRegex": {
        "regex": "^http://localhost/(.*)", "replacement": "http://mydomain/${1}"}}),
    middleware("secured", {"chain": {"middlewares": [{"name": "test-stripprefix"},
                                                     {"name": "test-header"}]}}),
    # Fail closed: each route through one of these answers 500 and never forwards.
    middleware("test-auth", {"basicAuth": {"secret": "authsecret"}}),
    middleware("invalid", {"stripPrefix": {"prefixes": "/not-a-list"}}),
    middleware("loop-a", {"chain": {"middlewares": [{"name": "loop-b"}]}}),
    middleware("loop-b", {"chain": {"middlewares": [{"name": "loop-a"}]}}),
    middleware("elsewhere", {"addPrefix": {"prefix": "/x"}}, namespace="other"),
    middleware("removed", {"headers": {"sslRedirect": True}}),
]  # fmt: skip
ROUTES = [
    *MIDDLEWARES,
    using("strip.local", "test-stripprefix"),
    using("stripregex.local", "test-stripprefixregex"),
    using("add.local", "test-addprefix"),
    using("replace.local", "test-replacepath"),
    using("replaceregex.local", "test-replacepathregex"),
    using("headers.local", "test-header"),
    using("security.local", "security-header"),
    using("cors.local", "cors-header"),
    using("scheme.local", "test-redirectscheme"),
    using("localhost", "test-redirectregex"),
    using("chain.local", "secured"),
    using("order.local", "test-replacepath", "test-stripprefix"),
    ingress("annotated", [("annotated.local", [("/", "Prefix", "web")])], annotations={
        "traefik.ingress.kubernetes.io/router.middlewares":
            "default-test-stripprefix@kubernetescrd,default-test-header@kubernetescrd"}),
    httproute("extref", [{"filters": [ext("test-stripprefix", "traefik.io", "Middleware")],
                          "backendRefs": [to("web")]}], hostnames=["extref.local"]),
    using("auth.local", "test-auth"),
    using("missing.local", "no-such-middleware"),
    using("invalid.local", "invalid"),
    using("loop.local", "loop-a"),
    using("cross.local", "other/elsewhere"),
    using("removed.local", "removed"),
    using("partly.local", "test-stripprefix", "test-auth"),
]  # fmt: skip
REFUSED = ["auth.local", "missing.local", "invalid.local", "loop.local", "cross.local",
           "removed.local", "partly.local"]  # fmt: skip


@pytest.fixture
async def client(every_front: str) -> AsyncIterator[tuple[FrontClient, Backend, Router]]:
    async with echo_gateway(ROUTES, every_front) as served:
        yield served


async def echo(front: FrontClient, host: str, target: str, **request: Any) -> dict[str, Any]:
    status, _, body = await front.request(host, target, **request)
    assert status == 200, (status, body)
    result: dict[str, Any] = json.loads(body)
    return result


@pytest.mark.parametrize("host", ["strip.local", "annotated.local", "extref.local"])
async def test_strip_prefix_from_every_kind_of_reference(
    client: tuple[FrontClient, Backend, Router], host: str
) -> None:
    front, backend, _ = client
    got = await echo(front, host, "/foobar/echo?q=1",
                     headers=[(b"X-Forwarded-Prefix", b"/spoofed")])  # fmt: skip
    assert got["target"] == "/echo?q=1"
    assert headers_of(got)["x-forwarded-prefix"] == ["/foobar"]  # the client's is replaced
    got = await echo(front, host, "/fiibar/echo")
    assert got["target"] == "/echo"
    assert backend.hits == {"/echo": 2}


async def test_strip_prefix_refuses_a_path_it_would_leave_unclean(
    client: tuple[FrontClient, Backend, Router],
) -> None:
    front, backend, _ = client
    status, _, _ = await front.request("strip.local", "/foobar../echo")
    assert status == 400  # Traefik v3: `/../echo` is never sent
    assert backend.hits == {}


async def test_strip_prefix_regex(client: tuple[FrontClient, Backend, Router]) -> None:
    got = await echo(client[0], "stripregex.local", "/foo/abc/123/echo")
    assert got["target"] == "/echo"
    assert headers_of(got)["x-forwarded-prefix"] == ["/foo/abc/123/"]


async def test_add_prefix_and_replace_path(client: tuple[FrontClient, Backend, Router]) -> None:
    front, backend, _ = client
    assert (await front.request("add.local", "/echo?x=1"))[0] == 404  # the backend's own 404
    assert (await front.request("replace.local", "/any/thing"))[0] == 404
    assert backend.hits == {"/foo/echo": 1, "/foo": 1}


async def test_replace_path_regex_and_the_replaced_path(
    client: tuple[FrontClient, Backend, Router],
) -> None:
    front, backend, _ = client
    assert (await front.request("replaceregex.local", "/foo/a/b?x=1"))[0] == 404
    assert (await front.request("replaceregex.local", "/echo"))[0] == 200  # no match: as is
    assert backend.hits == {"/bar/a/b": 1, "/echo": 1}


async def test_steps_run_in_the_order_of_the_references(
    client: tuple[FrontClient, Backend, Router],
) -> None:
    # replacePath first (/foo), then stripPrefix /foobar does not apply.
    front, backend, _ = client
    assert (await front.request("order.local", "/foobar/echo"))[0] == 404
    assert backend.hits == {"/foo": 1}


async def test_custom_request_and_response_headers(
    client: tuple[FrontClient, Backend, Router],
) -> None:
    front, _, _ = client
    status, headers, body = await front.request(
        "headers.local", "/echo", headers=[(b"X-Custom-Request-Header", b"secret")]
    )
    assert status == 200
    seen = headers_of(json.loads(body))
    assert seen["x-script-name"] == ["test"]
    assert "x-custom-request-header" not in seen  # an empty value removes
    names = {n.lower(): v for n, v in headers}
    assert names[b"x-custom-response-header"] == b"value"
    assert b"content-type" not in names


async def test_security_headers(client: tuple[FrontClient, Backend, Router]) -> None:
    status, headers, _ = await client[0].request("security.local", "/echo")
    assert status == 200
    names = {n.lower(): v for n, v in headers}
    assert names[b"x-frame-options"] == b"DENY"
    assert names[b"x-xss-protection"] == b"1; mode=block"
    assert names[b"x-content-type-options"] == b"nosniff"
    assert names[b"strict-transport-security"] == b"max-age=31536000"  # forced over plain HTTP
    assert names[b"content-security-policy"] == b"default-src 'self'"


async def test_cors_preflight_is_answered_by_the_gateway(
    client: tuple[FrontClient, Backend, Router],
) -> None:
    front, backend, _ = client
    status, headers, _ = await front.request("cors.local", "/echo", method="OPTIONS", headers=[
        (b"Origin", b"https://foo.bar.org"), (b"Access-Control-Request-Method", b"PUT"),
        (b"Access-Control-Request-Headers", b"x-a")])  # fmt: skip
    assert status == 200
    names = {n.lower(): v for n, v in headers}
    assert names[b"access-control-allow-origin"] == b"https://foo.bar.org"
    assert names[b"access-control-allow-methods"] == b"GET, OPTIONS, PUT"
    assert names[b"access-control-max-age"] == b"100"
    assert backend.hits == {}
    _, headers, _ = await front.request("cors.local", "/echo",
                                        headers=[(b"Origin", b"https://evil.example")])  # fmt: skip
    names = {n.lower(): v for n, v in headers}
    assert b"access-control-allow-origin" not in names
    assert names[b"vary"] == b"Origin"
    _, headers, _ = await front.request("cors.local", "/echo",
                                        headers=[(b"Origin", b"https://example.org")])  # fmt: skip
    assert (b"access-control-allow-origin", b"https://example.org") in [
        (n.lower(), v) for n, v in headers]  # fmt: skip


async def test_redirect_scheme(client: tuple[FrontClient, Backend, Router]) -> None:
    front, backend, _ = client
    status, headers, _ = await front.request("scheme.local", "/echo?x=1")
    assert status == 301
    assert dict(headers)[b"Location"] == b"https://scheme.local/echo?x=1"
    status, headers, _ = await front.request("scheme.local", "/echo", method="POST", body=b"x")
    assert status == 308  # the method is kept
    assert backend.hits == {}


async def test_redirect_regex(client: tuple[FrontClient, Backend, Router]) -> None:
    front, backend, _ = client
    status, headers, _ = await front.request("localhost", "/some/path?x=1")
    assert status == 302
    assert dict(headers)[b"Location"] == b"http://mydomain/some/path?x=1"
    assert backend.hits == {}


async def test_chain_expands_in_place(client: tuple[FrontClient, Backend, Router]) -> None:
    got = await echo(client[0], "chain.local", "/foobar/echo")
    assert got["target"] == "/echo"
    assert headers_of(got)["x-script-name"] == ["test"]


@pytest.mark.parametrize("host", REFUSED)
async def test_what_cannot_be_applied_fails_closed(
    client: tuple[FrontClient, Backend, Router], host: str
) -> None:
    front, backend, router = client
    status, _, body = await front.request(host, "/foobar/echo")
    assert status == 500
    assert b"cannot be served as configured" in body
    assert b"Middleware" not in body  # the reasons stay inside
    assert backend.hits == {}
    refused = [str(r) for r in router.refused]
    assert any(host.split(".")[0] in r for r in refused), refused

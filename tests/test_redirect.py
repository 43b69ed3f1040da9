"""Redirects (pure): the Ingress ssl-redirect annotation, the HTTPRoute RequestRedirect filter,
the Location they build, and the Router's decision."""

from __future__ import annotations

from typing import Any

import pytest

import kroute
from kroute.rules.redirect import Redirect
from tests.builders import gateway, httproute, ingress, to


@pytest.mark.parametrize(("redirect", "request_", "location"), [
    (Redirect(308, scheme="https", only_from="http"), ("http", "a.test", 8080, "/p", "q=1"),
     "https://a.test/p?q=1"),  # a changed scheme takes its well-known port
    (Redirect(302, scheme="https", port=8443), ("http", "a.test", None, "/", ""),
     "https://a.test:8443/"),
    (Redirect(301, hostname="b.test"), ("http", "a.test", 8080, "/x", ""),
     "http://b.test:8080/x"),  # same scheme: the request's port stays
    (Redirect(302, full_path="/new"), ("https", "a.test", 443, "/old/x", "k=v"),
     "https://a.test/new?k=v"),
    (Redirect(302, prefix=("/old", "/new")), ("http", "a.test", None, "/old/x/y", ""),
     "http://a.test/new/x/y"),
    (Redirect(302, prefix=("/old", "/")), ("http", "a.test", None, "/old/x", ""),
     "http://a.test/x"),
    (Redirect(302, prefix=("/old", "/new")), ("http", "a.test", None, "/old", ""),
     "http://a.test/new"),
])  # fmt: skip
def test_locations(redirect: Redirect, request_: tuple[Any, ...], location: str) -> None:
    scheme, host, port, path, query = request_
    assert redirect.location(scheme=scheme, host=host, port=port, path=path,
                             query=query) == location  # fmt: skip


def test_ingress_ssl_redirect_is_for_plain_http_only() -> None:
    secure = ingress("s", [("s.test", [("/", "Prefix", "svc")])],
                     annotations={"kroute.dev/ssl-redirect": "true"})  # fmt: skip
    router = kroute.Router([kroute.MemorySource(objects=[secure])])
    plain = router.route(kroute.RequestHead.build("GET", "s.test:80", "/a?b=1"))
    assert plain.status == 308
    assert plain.location == "https://s.test/a?b=1"
    https = router.route(kroute.RequestHead.build("GET", "s.test", "/a", scheme="https"))
    assert https.status == 503  # forwarded (no endpoint here), not redirected
    status, headers, _ = kroute.error_response(kroute.gateway.router.status_error(plain))
    assert status == 308
    assert (b"Location", b"https://s.test/a?b=1") in headers


def test_a_bad_ssl_redirect_value_rejects_the_ingress_alone() -> None:
    bad = ingress("bad", [("b.test", [("/", "Prefix", "svc")])],
                  annotations={"kroute.dev/ssl-redirect": "yes"})  # fmt: skip
    good = ingress("good", [("g.test", [("/", "Prefix", "svc")])])
    result = kroute.compile_objects([bad, good])
    (error,) = result.errors
    assert error.field == "metadata.annotations[kroute.dev/ssl-redirect]"
    assert len(result.table) == 1


def http_to_https(**extra: Any) -> dict[str, Any]:
    return {"type": "RequestRedirect", "requestRedirect": {"scheme": "https", **extra}}


def test_httproute_request_redirect_on_the_http_listener() -> None:
    listeners = [{"name": "http", "protocol": "HTTP", "port": 80},
                 {"name": "https", "protocol": "HTTPS", "port": 443,
                  "tls": {"certificateRefs": [{"name": "t"}]}}]  # fmt: skip
    redirect = httproute("to-https", [{"filters": [http_to_https(statusCode=301)]}],
                         parents=[{"name": "gw", "sectionName": "http"}], hostnames=["a.test"])  # fmt: skip
    app = httproute("app", [{"backendRefs": [to("svc")]}],
                    parents=[{"name": "gw", "sectionName": "https"}], hostnames=["a.test"])  # fmt: skip
    result = kroute.compile_objects([gateway(listeners=listeners), redirect, app])
    assert not result.errors
    assert not result.notes
    router = kroute.Router([kroute.MemorySource(objects=[gateway(listeners=listeners), redirect])])
    decision = router.route(kroute.RequestHead.build("GET", "a.test", "/x"))
    assert decision.status == 301
    assert decision.location == "https://a.test/x"


@pytest.mark.parametrize(("filters", "field"), [
    ([http_to_https(statusCode=304)], "spec.rules[0].filters[0].requestRedirect.statusCode"),
    ([{"type": "RequestRedirect", "requestRedirect": {"scheme": "ftp"}}],
     "spec.rules[0].filters[0].requestRedirect.scheme"),
    ([http_to_https(path={"type": "Sideways"})],
     "spec.rules[0].filters[0].requestRedirect.path.type"),
])  # fmt: skip
def test_invalid_request_redirects_are_rejected_by_field(filters: list[Any], field: str) -> None:
    result = kroute.compile_objects([gateway(), httproute("r", [{"filters": filters}])])
    (error,) = result.errors
    assert error.field == field


def test_replace_prefix_match_uses_each_matchs_prefix() -> None:
    route = httproute("r", [{
        "matches": [{"path": {"type": "PathPrefix", "value": "/old"}}],
        "filters": [{"type": "RequestRedirect", "requestRedirect": {
            "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/new"}}}],
    }])  # fmt: skip
    router = kroute.Router([kroute.MemorySource(objects=[gateway(), route])])
    decision = router.route(kroute.RequestHead.build("GET", "a.test", "/old/page"))
    assert decision.status == 302
    assert decision.location == "http://a.test/new/page"

"""Helpers for users' own tests: routing expectations that read one line each.

    routing = Routing.from_files("deploy/")
    routing.expect("shop.example.com/cart", "shop/cart:http")
    routing.expect("shop.example.com/admin", None)          # 404

What happens after the match is testable the same way, offline (`kroute.rules.preview`):

    routing.expect_forwarded("shop.example.com/api/cart", path="/cart",
                             headers={"x-team": "shop"})
    routing.expect_redirect("shop.example.com/old", "https://shop.example.com/new")
    routing.expect_answer("shop.example.com/admin", 401)   # a filter answers by itself

A failed expectation raises AssertionError with the full explanation of the decision, so the
test report says which rule won and why the others lost.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence

from kroute.manifests import load_paths
from kroute.objects import Manifest, Obj
from kroute.pipeline.registry import NO_FILTERS, Filters
from kroute.rules.compile import DEFAULT_CLASS, CompileResult, compile_objects
from kroute.rules.explain import Explanation, explain
from kroute.rules.preview import Preview, preview
from kroute.rules.request import HeaderInput, RequestHead
from kroute.rules.route import Route

#: What a test expects: one backend "ns/name:port", several (any weights), backend -> weight,
#: or None for "no route" (404).
Expected = str | Sequence[str] | Mapping[str, int] | None


def request_from_url(
    url: str,
    *,
    method: str = "GET",
    headers: HeaderInput | None = None,
    client_ip: str | None = None,
) -> RequestHead:
    """A request head from `host/path?query` (a leading `http://` or `https://` is allowed)."""
    rest = url.split("://", 1)[1] if "://" in url else url
    slash = min((i for i in (rest.find("/"), rest.find("?")) if i != -1), default=len(rest))
    host, target = rest[:slash], rest[slash:] or "/"
    return RequestHead.build(method, host, target, headers=headers, client_ip=client_ip)


class Routing:
    """A compiled set of manifests to test expectations against.

    With `strict` (the default) an object rejected as invalid, or a route that fails closed
    (a filter or middleware kroute cannot apply), fails the test at once: a typo in a manifest
    should not pass as "that route is simply missing".
    """

    def __init__(self, result: CompileResult, *, strict: bool = True) -> None:
        if strict and (result.errors or result.refused):
            problems = "\n".join(f"  {e}" for e in (*result.errors, *result.refused))
            raise AssertionError(f"invalid objects in the routing under test:\n{problems}")
        self.result = result
        self.table = result.table

    @classmethod
    def from_files(
        cls,
        *paths: str | os.PathLike[str],
        strict: bool = True,
        ingress_class: str = DEFAULT_CLASS,
        gateway_class: str = DEFAULT_CLASS,
        filters: Filters = NO_FILTERS,
    ) -> Routing:
        """Compile manifest files and directory trees (`filters`: the application's own)."""
        return cls.from_objects(
            load_paths(paths),
            strict=strict,
            ingress_class=ingress_class,
            gateway_class=gateway_class,
            filters=filters,
        )

    @classmethod
    def from_objects(
        cls,
        objects: Iterable[Obj | Manifest],
        *,
        strict: bool = True,
        ingress_class: str = DEFAULT_CLASS,
        gateway_class: str = DEFAULT_CLASS,
        filters: Filters = NO_FILTERS,
    ) -> Routing:
        """Compile objects given as mappings."""
        result = compile_objects(objects, ingress_class=ingress_class,
                                 gateway_class=gateway_class, filters=filters)  # fmt: skip
        return cls(result, strict=strict)

    def explain(
        self,
        url: str,
        *,
        method: str = "GET",
        headers: HeaderInput | None = None,
        client_ip: str | None = None,
    ) -> Explanation:
        """The explanation of how `url` is routed."""
        request = request_from_url(url, method=method, headers=headers, client_ip=client_ip)
        return explain(self.table, request)

    def expect(
        self,
        url: str,
        to: Expected,
        *,
        route: str | None = None,
        method: str = "GET",
        headers: HeaderInput | None = None,
        client_ip: str | None = None,
    ) -> Route | None:
        """Assert where `url` goes; `route` optionally names the rule that must win."""
        request = request_from_url(url, method=method, headers=headers, client_ip=client_ip)
        found = self.table.match(request)
        problem = _mismatch(found, to, route)
        if problem:
            raise AssertionError(f"{problem}\n{explain(self.table, request).text()}")
        return found

    def preview(
        self,
        url: str,
        *,
        method: str = "GET",
        headers: HeaderInput | None = None,
        client_ip: str | None = None,
    ) -> Preview:
        """What the route's steps make of `url`: the request the backend would receive, or the
        redirect or answer given instead (`kroute.rules.preview`)."""
        request = request_from_url(url, method=method, headers=headers, client_ip=client_ip)
        return preview(self.table.match(request), request)

    def expect_forwarded(
        self,
        url: str,
        *,
        path: str | None = None,
        headers: Mapping[str, str | None] | None = None,
        request_headers: HeaderInput | None = None,
        method: str = "GET",
    ) -> Preview:
        """Assert that `url` is forwarded, with `path` (and query) and these `headers` (a name
        mapped to None must be absent)."""
        found = self.preview(url, method=method, headers=request_headers)
        problem = ""
        if found.upstream is None:
            problem = f"expected {url} to be forwarded, but: {found.to_json() or 'no route'}"
        else:
            if path is not None and found.upstream.target != path:
                problem = f"expected path {path!r}, the backend gets {found.upstream.target!r}"
            for name, value in (headers or {}).items():
                got = found.upstream.get(name.encode("latin-1"))
                if (got and got.decode("latin-1")) != value:
                    problem = f"expected header {name}: {value!r}, the backend gets {got!r}"
        if problem:
            raise AssertionError(f"{problem}\nsteps: {list(found.changes)}")
        return found

    def expect_redirect(self, url: str, location: str, *, status: int | None = None) -> Preview:
        """Assert that `url` is redirected to `location` (with `status`, when given)."""
        found = self.preview(url)
        if (
            found.redirect is None
            or found.redirect[1] != location
            or (status is not None and found.redirect[0] != status)
        ):
            raise AssertionError(f"expected a redirect to {location}, got {found.to_json()}")
        return found

    def expect_answer(
        self, url: str, status: int, *, headers: HeaderInput | None = None
    ) -> Preview:
        """Assert that a step answers `url` by itself with `status` (401, 403, 500...)."""
        found = self.preview(url, headers=headers)
        if found.status is None or found.status[0] != status:
            raise AssertionError(f"expected a step to answer {status}, got {found.to_json()}")
        return found


def _mismatch(found: Route | None, to: Expected, route: str | None) -> str:
    if found is None:
        return "" if to is None else f"expected a route to {to}, but nothing matches"
    if to is None:
        return f"expected no route, but {found.name} matches"
    got = {str(b): b.weight for b in found.backends}
    if isinstance(to, str):
        ok = set(got) == {to}
    elif isinstance(to, Mapping):
        ok = got == dict(to)
    else:
        ok = set(got) == set(to)
    if not ok:
        return f"expected backends {to}, got {got}"
    if route is not None and found.name != route:
        return f"expected route {route!r}, got {found.name!r}"
    return ""

"""Helpers for users' own tests: routing expectations that read one line each.

    routing = Routing.from_files("deploy/")
    routing.expect("shop.example.com/cart", "shop/cart:http")
    routing.expect("shop.example.com/admin", None)          # 404

A failed expectation raises AssertionError with the full explanation of the decision, so the
test report says which rule won and why the others lost.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence

from kroute.manifests import load_paths
from kroute.objects import Manifest, Obj
from kroute.rules.compile import DEFAULT_CLASS, CompileResult, compile_objects
from kroute.rules.explain import Explanation, explain
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

    With `strict` (the default) an object rejected as invalid fails the test at once: a typo
    in a manifest should not pass as "that route is simply missing".
    """

    def __init__(self, result: CompileResult, *, strict: bool = True) -> None:
        if strict and result.errors:
            problems = "\n".join(f"  {e}" for e in result.errors)
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
    ) -> Routing:
        """Compile manifest files and directory trees."""
        return cls.from_objects(
            load_paths(paths),
            strict=strict,
            ingress_class=ingress_class,
            gateway_class=gateway_class,
        )

    @classmethod
    def from_objects(
        cls,
        objects: Iterable[Obj | Manifest],
        *,
        strict: bool = True,
        ingress_class: str = DEFAULT_CLASS,
        gateway_class: str = DEFAULT_CLASS,
    ) -> Routing:
        """Compile objects given as mappings."""
        result = compile_objects(objects, ingress_class=ingress_class, gateway_class=gateway_class)
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

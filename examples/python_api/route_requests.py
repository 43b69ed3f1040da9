"""Build a route table from manifests, route requests, and explain one decision.

python examples/python_api/route_requests.py
"""

from __future__ import annotations

from pathlib import Path

import kroute

MANIFESTS = Path(__file__).resolve().parent.parent / "explain" / "manifests"


def main() -> None:
    result = kroute.compile_files(str(MANIFESTS))
    for error in result.errors:
        print("invalid:", error)

    for host, target in [("test-www.local", "/"), ("test-api.local", "/v1/users"), ("x", "/")]:
        request = kroute.RequestHead.build("GET", host, target)
        route = result.table.match(request)
        where = ", ".join(str(b) for b in route.backends) if route else "404"
        print(f"{request.describe():40} -> {where}")

    request = kroute.RequestHead.build(
        "GET", "checkout.shop.local", "/cart", headers={"X-Canary": "always"}
    )
    print()
    print(kroute.explain(result.table, request).text())


if __name__ == "__main__":
    main()

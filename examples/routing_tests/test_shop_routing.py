"""Routing tests as a user writes them in their own pytest suite: one line per expectation.

pytest examples/routing_tests
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kroute.testing import Routing

MANIFESTS = Path(__file__).resolve().parent.parent / "explain" / "manifests"


@pytest.fixture(scope="module")
def routing() -> Routing:
    return Routing.from_files(MANIFESTS)


def test_www_and_api(routing: Routing) -> None:
    routing.expect("test-www.local/", "default/test-www:80")
    routing.expect("test-www.local/any/page", "default/test-www:80")
    routing.expect("test-api.local/v1/orders?page=2", "default/test-api:http")
    routing.expect("test-api.local/healthz", "default/test-api:http")
    routing.expect("test-api.local/v10", None)


def test_canary_split(routing: Routing) -> None:
    routing.expect(
        "checkout.shop.local/cart",
        {"default/checkout-v1:8080": 90, "default/checkout-v2:8080": 10},
    )
    routing.expect(
        "checkout.shop.local/cart",
        "default/checkout-v2:8080",
        headers={"X-Canary": "always"},
        route="HTTPRoute default/checkout spec.rules[1].matches[0]",
    )


def test_admin_only_from_the_office(routing: Routing) -> None:
    routing.expect("test-www.local/admin", "default/admin:9000", client_ip="10.20.30.40")
    routing.expect("test-www.local/admin", "default/test-www:80", client_ip="203.0.113.9")

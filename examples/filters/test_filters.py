"""The application's filters tested offline, against the manifests that name them."""

from __future__ import annotations

import sys
from pathlib import Path

from kroute.testing import Routing

sys.path.insert(0, str(Path(__file__).resolve().parent))
from own_filters import MANIFESTS, filters

routing = Routing.from_files(MANIFESTS, filters=filters)


def test_the_backend_gets_the_rewritten_path_and_the_tenant() -> None:
    routing.expect_forwarded(
        "api.local/api/orders?page=2", path="/orders?page=2",
        headers={"x-tenant": "acme", "x-gateway": "kroute"},
        request_headers={"Authorization": "Bearer acme.123"},
    )  # fmt: skip


def test_the_async_check_is_listed_as_not_run_offline() -> None:
    found = routing.preview("api.local/api/orders")
    assert found.not_run == ("Filter require-token (spec.rules[0].filters[0])",)

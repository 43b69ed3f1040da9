"""Every example in examples/ runs, and says what it should."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import kroute
from kroute.testing import Routing

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def test_every_example_is_covered_here() -> None:
    covered = {"explain", "python_api", "routing_tests"}
    assert {p.name for p in EXAMPLES.iterdir() if p.is_dir()} == covered


def test_python_api_example() -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "python_api" / "route_requests.py")],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    lines = done.stdout.splitlines()
    assert lines[0].endswith("-> default/test-www:80")
    assert lines[1].endswith("-> default/test-api:http")
    assert lines[2].endswith("-> 404")
    assert "-> HTTPRoute default/checkout spec.rules[1].matches[0]" in done.stdout


def test_routing_tests_example_passes_and_its_failures_explain() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         str(EXAMPLES / "routing_tests")],
        capture_output=True, text=True, timeout=120, check=False, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 passed" in done.stdout
    routing = Routing.from_files(EXAMPLES / "explain" / "manifests")
    with pytest.raises(AssertionError) as info:
        routing.expect("test-api.local/v2", "default/test-api:http")
    message = str(info.value)
    assert "expected a route to default/test-api:http, but nothing matches" in message
    assert "needs path prefix /v1 (element-wise)" in message


def test_strict_routing_fails_on_invalid_objects() -> None:
    bad = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "b"},
           "spec": {"rules": "nope"}}  # fmt: skip
    with pytest.raises(AssertionError, match=r"Ingress default/b: spec\.rules"):
        Routing.from_objects([bad])
    assert len(Routing.from_objects([bad], strict=False).result.errors) == 1


def test_explain_example_manifests_are_all_valid() -> None:
    result = kroute.compile_files(str(EXAMPLES / "explain" / "manifests"))
    assert not result.errors
    assert not result.notes
    assert len(result.table) == 6

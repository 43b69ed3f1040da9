"""`python -m kroute explain`: the stable interface users script against."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "explain"


def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kroute", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )


def test_example_requests_in_json() -> None:
    done = run(
        "explain", "-f", str(EXAMPLE / "manifests"), "--requests", str(EXAMPLE / "requests.jsonl")
    )
    assert done.returncode == 0, done.stderr
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    routes = [a.get("route") for a in answers]
    assert routes == [
        "Ingress default/test-www spec.rules[0].http.paths[0]",
        "Ingress default/test-www spec.rules[0].http.paths[0]",  # legacy Ingress is nginx's
        "Ingress default/test-api spec.rules[0].http.paths[0]",
        "Ingress default/test-api spec.rules[0].http.paths[1]",  # /v1/../healthz
        None,  # /v10 is not under /v1
        "HTTPRoute default/checkout spec.rules[0].matches[0]",
        "HTTPRoute default/checkout spec.rules[1].matches[0]",
        "IngressRoute default/admin spec.routes[0]",
        "Ingress default/test-www spec.rules[0].http.paths[0]",
        None,
    ]
    assert answers[4] == {"matched": False, "status": 404}
    assert answers[0]["backends"] == [
        {"namespace": "default", "name": "test-www", "port": 80, "weight": 1}
    ]
    assert answers[2]["backends"][0]["port"] == "http"
    assert [b["weight"] for b in answers[5]["backends"]] == [90, 10]
    assert done.stderr == ""


def test_text_format_explains_winners_and_losers() -> None:
    line = '{"host": "checkout.shop.local", "path": "/cart", "headers": {"X-Canary": "always"}}\n'
    done = run("explain", "-f", str(EXAMPLE / "manifests"), "--format", "text", stdin=line)
    assert done.returncode == 0
    assert "-> HTTPRoute default/checkout spec.rules[1].matches[0]" in done.stdout
    assert "also matched, ranked lower:" in done.stdout
    assert "1 header and 0 query matches" in done.stdout


def test_request_fields_and_stdin() -> None:
    lines = "\n".join(
        [
            '{"host": "test-www.local"}',
            "",
            '{"method": "POST", "host": "TEST-API.local:8080", "path": "/v1/x?y=1", '
            '"headers": {"A": ["1", "2"]}, "client_ip": "10.0.0.1"}',
        ]
    )
    done = run("explain", "-f", str(EXAMPLE / "manifests"), stdin=lines)
    assert done.returncode == 0
    assert [json.loads(x)["matched"] for x in done.stdout.splitlines()] == [True, True]


def test_bad_request_line_is_named_answered_in_place_and_exits_2() -> None:
    lines = '{"path": "/"}\nnot json\n{"host": "test-www.local", "client_ip": "x"}\n{"host": "test-www.local"}\n'
    done = run("explain", "-f", str(EXAMPLE / "manifests"), stdin=lines)
    assert done.returncode == 2
    out = [json.loads(x) for x in done.stdout.splitlines()]
    assert [("error" in o) for o in out] == [True, True, True, False]
    assert "<stdin>:1: 'host' is required" in out[0]["error"]
    assert "<stdin>:2: not JSON" in done.stderr
    assert "<stdin>:3: client_ip 'x' is not an IP address" in done.stderr


def test_unreadable_manifest_exits_2_naming_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text("a: [\n")
    done = run("explain", "-f", str(bad), stdin="")
    assert done.returncode == 2
    assert str(bad) in done.stderr
    assert "not valid YAML" in done.stderr
    missing = run("explain", "-f", str(tmp_path / "nope"), stdin="")
    assert missing.returncode == 2
    assert "no such file" in missing.stderr
    no_requests = run("explain", "-f", str(EXAMPLE), "--requests", str(tmp_path / "r.jsonl"))
    assert no_requests.returncode == 2
    assert "r.jsonl" in no_requests.stderr


def test_invalid_objects_are_reported_and_do_not_stop_the_run(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: broken}\n"
        "spec: {rules: [{host: x.local, http: {paths: [{path: /, pathType: Fuzzy, "
        "backend: {service: {name: s, port: {number: 80}}}}]}}]}\n"
    )
    done = run("explain", "-f", str(EXAMPLE / "manifests"), "-f", str(tmp_path),
               stdin='{"host": "test-www.local"}\n')  # fmt: skip
    assert done.returncode == 0
    assert json.loads(done.stdout)["matched"] is True
    assert "Ingress default/broken: spec.rules[0].http.paths[0].pathType" in done.stderr
    assert "bad.yaml" in done.stderr


@pytest.mark.parametrize(
    ("option", "value", "host"), [("--ingress-class", "nginx", "test-www.local")]
)
def test_class_options(option: str, value: str, host: str) -> None:
    line = json.dumps({"host": host, "path": "/legacy/x"}) + "\n"
    done = run("explain", "-f", str(EXAMPLE / "manifests"), option, value, stdin=line)
    assert json.loads(done.stdout)["route"] == "Ingress default/legacy spec.rules[0].http.paths[0]"
    gw = run("explain", "-f", str(EXAMPLE / "manifests"), "--gateway-class", "other",
             stdin='{"host": "checkout.shop.local", "path": "/cart"}\n')  # fmt: skip
    assert json.loads(gw.stdout) == {"matched": False, "status": 404}


def test_neither_import_nor_explain_imports_kubernetes() -> None:
    # SEMANTICS.md section 4: importing kubernetes costs about a second; the offline path
    # must never pay it.
    code = (
        "import sys, runpy\n"
        "import kroute\n"
        "assert 'kubernetes' not in sys.modules, 'import kroute'\n"
        "assert 'httpcore' not in sys.modules, 'import kroute: httpcore only with a cluster'\n"
        "assert 'cryptography' not in sys.modules, 'import kroute: cryptography only for TLS'\n"
        "assert 'httpx' not in sys.modules and 'prometheus_client' not in sys.modules\n"
        f"sys.argv = ['kroute', 'explain', '-f', {str(EXAMPLE / 'manifests')!r}]\n"
        "try:\n    runpy.run_module('kroute', run_name='__main__')\n"
        "except SystemExit as exc:\n    assert exc.code == 0, exc.code\n"
        "assert 'kubernetes' not in sys.modules, 'explain'\n"
        "print('clean')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], input='{"host": "a"}\n', capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("clean")


def test_entrypoint_option_explains_one_entry_point(tmp_path: Path) -> None:
    (tmp_path / "routes.yaml").write_text("""
apiVersion: traefik.io/v1alpha1
kind: IngressRoute
metadata: {name: secure, namespace: default}
spec:
  entryPoints: [websecure]
  routes:
  - {match: Host(`s.test`), services: [{name: s, port: 80}]}
""")
    request = '{"host": "s.test"}\n'
    answers = {}
    for option in ((), ("--entrypoint", "web"), ("--entrypoint", "websecure"),
                   ("--entrypoint", "internal=9000")):  # fmt: skip
        done = run("explain", "-f", str(tmp_path), *option, stdin=request)
        assert done.returncode == 0, done.stderr
        answers[option[1:]] = json.loads(done.stdout)["matched"]
    assert answers == {(): True, ("web",): False, ("websecure",): True, ("internal=9000",): False}
    noted = run("explain", "-f", str(tmp_path), "--entrypoint", "internal=9000", stdin=request)
    assert "'websecure' is not an entry point of this gateway (internal)" in noted.stderr
    bad = run("explain", "-f", str(tmp_path), "--entrypoint", "internal=x", stdin=request)
    assert bad.returncode == 2
    assert "'x' is not a port number" in bad.stderr

"""Every example in examples/ runs, and says what it should."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

import kroute
from kroute.testing import Routing

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def test_every_example_is_covered_here() -> None:
    covered = {"explain", "python_api", "routing_tests", "gateway", "deploy", "asgi_embedding",
               "filters"}  # fmt: skip
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


def test_own_filters_example_serves_and_its_offline_tests_pass() -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "filters" / "own_filters.py"), "--once"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    refused, served = done.stdout.splitlines()
    assert refused == "401 401 Unauthorized"  # the async check answered; nothing forwarded
    assert json.loads(served.partition(" ")[2]) == {
        "target": "/orders?page=2",
        "tenant": "acme",
        "gateway": "kroute",
    }
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLES / "filters")],
        capture_output=True, text=True, timeout=120, check=False, cwd=ROOT,
    )  # fmt: skip
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "2 passed" in tests.stdout


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


def test_gateway_demo_tour() -> None:
    """The README's main job, run to the end of its tour (no cluster, no fixed ports)."""
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "gateway" / "demo.py"), "--once",
         "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    out = done.stdout
    lines = out.splitlines()
    www = [line for line in lines if "GET http://test-www.localhost/ -> " in line]
    assert len(www) == 2
    assert all('-> 200 {"service": "test-www"' in line for line in www)
    assert {'"pod": "127.0.0.11"' in line for line in www} == {True, False}  # pods take turns
    # Each request, its answer, and on the next line the route that took it: the seed's
    # Ingresses, an HTTPRoute and an IngressRoute side by side.
    answered = {line.strip(): lines[i + 1].strip() for i, line in enumerate(lines)
                if line.startswith("  GET http://")}  # fmt: skip
    expected = {
        "test-api.localhost/api/users": ("test-api", "Ingress default/test-api spec.rules[0]"),
        "httproute.localhost/api/orders": ("test-api", "HTTPRoute default/test-route spec.rules[0]"),
        "httproute.localhost/": ("test-www", "HTTPRoute default/test-route spec.rules[1]"),
        "ingressroute.localhost/api/users":
            ("test-api", "IngressRoute default/test-ingressroute spec.routes[0]"),
        "ingressroute.localhost/":
            ("test-www", "IngressRoute default/test-ingressroute spec.routes[1]"),
    }  # fmt: skip
    for url, (service, route) in expected.items():
        [(request, routed)] = [
            (k, v) for k, v in answered.items() if k.startswith(f"GET http://{url} ")
        ]
        path = "/" + url.split("/", 1)[1]
        assert f'-> 200 {{"service": "{service}"' in request, request
        assert f'"path": "{path}"' in request, request
        assert routed.startswith(f"routed by {route}"), routed
    for url in ("test-api.localhost/", "nobody.localhost/"):
        assert answered[f"GET http://{url} -> 404 404 Not Found: no route matches"] == (
            "routed by no route"
        )
    assert "127.0.0.12 left rotation; in rotation now: ['127.0.0.11:8081']" in out
    assert "127.0.0.12 recovered and is back" in out
    assert "curl http://test-www.localhost:" in out


def test_gateway_cli_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    (tmp_path / "empty.yaml").write_text("")
    command = [sys.executable, str(EXAMPLES / "gateway" / "gateway.py"), "--manifests",
               str(tmp_path), "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"]  # fmt: skip
    with subprocess.Popen(command, stderr=subprocess.PIPE, text=True) as process:
        try:
            assert process.stderr is not None
            line = process.stderr.readline()
            assert line.startswith("kroute gateway on 127.0.0.1:"), line
            admin_port = int(line.rsplit(":", 1)[1])
            url = f"http://127.0.0.1:{admin_port}/live"
            with urllib.request.urlopen(url, timeout=10) as answer:
                assert answer.read() == b"ok\n"
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=20) == 0
        finally:
            process.kill()


ENTRY_POINT_INGRESS = """
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: internal
  namespace: default
  annotations:
    traefik.ingress.kubernetes.io/router.entrypoints: internal
spec:
  ingressClassName: kroute
  rules:
  - host: internal.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: nothing, port: {number: 80}}}}
"""


def http_status(port: int, host: str) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/", headers={"Host": host})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return error.code


def test_gateway_cli_serves_named_entry_points(tmp_path: Path) -> None:
    """--entrypoint adds an entry point; an Ingress attached to it by Traefik's annotation is
    served there (503: its Service has no endpoint) and not on --listen's `web` (404)."""
    (tmp_path / "ingress.yaml").write_text(ENTRY_POINT_INGRESS)
    command = [sys.executable, str(EXAMPLES / "gateway" / "gateway.py"), "--manifests",
               str(tmp_path), "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0",
               "--entrypoint", "internal=127.0.0.1:0"]  # fmt: skip
    with subprocess.Popen(command, stderr=subprocess.PIPE, text=True) as process:
        try:
            assert process.stderr is not None
            line = process.stderr.readline()
            found = re.fullmatch(r"kroute gateway on 127.0.0.1:(\d+), internal on "
                                 r"127.0.0.1:(\d+), admin on 127.0.0.1:(\d+)\n", line)  # fmt: skip
            assert found is not None, line
            web, internal, admin = map(int, found.groups())
            assert http_status(admin, "admin") == 200  # /ready is not asked: / is the dashboard
            while http_status(internal, "internal.test") == 404:  # until the manifests load
                time.sleep(0.05)
            assert http_status(internal, "internal.test") == 503
            assert http_status(web, "internal.test") == 404
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=20) == 0
        finally:
            process.kill()


def test_gateway_cli_rejects_a_second_web() -> None:
    sys.path.insert(0, str(EXAMPLES / "gateway"))
    try:
        import gateway
    finally:
        sys.path.pop(0)
    with pytest.raises(SystemExit):
        gateway.parse_args(["--manifests", ".", "--entrypoint", "web=127.0.0.1:81"])
    args = gateway.parse_args(["--manifests", ".", "--tls-listen", "127.0.0.1:8443",
                               "--entrypoint", "admin=127.0.0.1:9000,advertised=90",
                               "--advertise", "websecure=443"])  # fmt: skip
    assert [(e.name, e.port, e.tls, e.advertised_port) for e in args.entry_points] == [
        ("web", 8080, False, None),
        ("websecure", 8443, True, 443),
        ("admin", 9000, False, 90),
    ]
    with pytest.raises(SystemExit):  # no --tls-listen: no websecure to advertise
        gateway.parse_args(["--manifests", ".", "--advertise", "websecure=443"])


def test_gateway_cli_status_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    sys.path.insert(0, str(EXAMPLES / "gateway"))
    try:
        import gateway
    finally:
        sys.path.pop(0)
    args = gateway.parse_args(["--kubeconfig", "k", "--publish-address", "192.0.2.1",
                               "--publish-address", "lb.example.com",
                               "--publish-service", "ns/lb", "--leader-elect"])  # fmt: skip
    assert sum(args.publish_address, kroute.PublishedAddresses()).for_ingress() == [
        {"ip": "192.0.2.1"}, {"hostname": "lb.example.com"}]  # fmt: skip
    assert args.publish_service == ("ns", "lb")
    assert args.controller_name == "kroute.dev/gateway-controller"
    timings = (args.leader_elect_lease_duration, args.leader_elect_renew_deadline,
               args.leader_elect_retry_period)  # fmt: skip
    assert timings == (15.0, 10.0, 2.0)  # client-go's
    with pytest.raises(SystemExit):
        gateway.parse_args(["--kubeconfig", "k", "--publish-address", "*.example.com"])
    assert "not an address" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # nothing configured is ignored: status needs a cluster
        gateway.parse_args(["--manifests", ".", "--leader-elect"])
    assert "python -m kroute status" in capsys.readouterr().err
    namespace = tmp_path / "namespace"
    namespace.write_text("kroute-system\n")
    monkeypatch.setattr(gateway, "SERVICE_ACCOUNT_NAMESPACE", str(namespace))
    assert gateway.pod_namespace(in_cluster=True) == "kroute-system"
    assert gateway.pod_namespace(in_cluster=False) == "default"
    namespace.unlink()
    assert gateway.pod_namespace(in_cluster=True) == "default"


def test_gateway_cli_tracing_flags(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    sys.path.insert(0, str(EXAMPLES / "gateway"))
    try:
        import gateway
        import traces
    finally:
        sys.path.pop(0)
    assert traces.tracing(gateway.parse_args(["--manifests", "."])) is None
    with pytest.raises(SystemExit):
        gateway.parse_args(["--manifests", ".", "--tracing", "otlp", "--tracing-sample-ratio", "2"])
    assert "not a ratio from 0 to 1" in capsys.readouterr().err
    args = gateway.parse_args(["--manifests", ".", "--tracing", "otlp",
                               "--tracing-sample-ratio", "0.25"])  # fmt: skip
    monkeypatch.setattr(traces, "EXPORTER", "opentelemetry.exporter.none")
    with pytest.raises(SystemExit, match="pip install opentelemetry-sdk opentelemetry-exporter"):
        traces.tracing(args)  # (a clear error when the exporter is not installed)
    # With an exporter (the SDK's in-memory one standing in for OTLP's):
    monkeypatch.setattr(traces, "EXPORTER", __name__)
    made = traces.tracing(args)
    assert made is not None
    tracing, provider = made
    assert isinstance(tracing, kroute.Tracing)
    assert tracing.sample_ratio == 0.25  # (kroute samples; the provider keeps what it sampled)
    assert "ParentBased{root:AlwaysOnSampler," in provider.sampler.get_description()
    provider.shutdown()


def test_gateway_cli_acme_flags(capsys: pytest.CaptureFixture[str]) -> None:
    sys.path.insert(0, str(EXAMPLES / "gateway"))
    try:
        import gateway
    finally:
        sys.path.pop(0)
    le = "le=https://acme-staging-v02.api.letsencrypt.org/directory,email=you@example.com"
    args = gateway.parse_args(["--kubeconfig", "k", "--tls-listen", "127.0.0.1:8443",
                               "--certresolver", le, "--acme-namespace", "kroute-system"])  # fmt: skip
    (resolver,) = args.certresolver
    assert (resolver.name, resolver.challenge, resolver.entry_point) == ("le", "http-01", "web")
    args = gateway.parse_args(["--manifests", ".", "--tls-listen", ":8443", "--certresolver",
                               le + ",challenge=tls-alpn-01"])  # fmt: skip
    assert args.certresolver[0].entry_point == "websecure"
    for argv, says in [
        (["--manifests", ".", "--certresolver", le], "add --tls-listen"),
        (["--manifests", ".", "--tls-listen", ":8443", "--certresolver", le + ",entrypoint=nope"],
         "entrypoint=nope names no entry point"),
        (["--manifests", ".", "--tls-listen", ":8443", "--certresolver",
          le + ",entrypoint=websecure"], "HTTP-01 is answered over plain HTTP"),
        (["--manifests", ".", "--tls-listen", ":8443", "--certresolver",
          le + ",challenge=tls-alpn-01,entrypoint=web"], "TLS-ALPN-01 is answered over TLS"),
        (["--manifests", ".", "--certresolver", "le=http://ca.test/,email=a@b.c"],
         "is not an https:// URL"),
        (["--kubeconfig", "k", "--tls-listen", ":8443", "--certresolver", le,
          "--acme-storage", "d"], "--acme-storage is for --manifests"),
    ]:  # fmt: skip
        with pytest.raises(SystemExit):
            gateway.parse_args(argv)
        assert says in capsys.readouterr().err


def OTLPSpanExporter() -> Any:  # (stands in for the OTLP exporter's class, above)
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    return InMemorySpanExporter()


def deploy_objects() -> list[dict[str, Any]]:
    return [
        obj
        for path in sorted((EXAMPLES / "deploy").glob("*.yaml"))
        for obj in yaml.safe_load_all(path.read_text())
        if obj
    ]


def test_deploy_manifests_match_the_gateway() -> None:
    sys.path.insert(0, str(EXAMPLES / "gateway"))
    try:
        import gateway
    finally:
        sys.path.pop(0)
    by_kind = {(o["kind"], o["metadata"]["name"]): o for o in deploy_objects()}
    daemonset = by_kind[("DaemonSet", "kroute-gateway")]
    pod = daemonset["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    ports = {p["name"]: p for p in container["ports"]}
    assert ports["http"]["hostPort"] == 80
    assert ports["admin"]["containerPort"] == 8580
    assert "hostPort" not in ports["admin"]  # the admin app is not published on the node
    args = gateway.parse_args(container["args"])
    assert args.in_cluster
    assert args.listen == ("0.0.0.0", ports["http"]["containerPort"])
    assert args.admin == ("0.0.0.0", 8580)
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/live"
    account = by_kind[("ServiceAccount", pod["serviceAccountName"])]
    binding = by_kind[("ClusterRoleBinding", "kroute-gateway")]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"],
                                    "namespace": account["metadata"]["namespace"]}]  # fmt: skip
    role = by_kind[("ClusterRole", binding["roleRef"]["name"])]
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for plural in rule["resources"]:
                granted.setdefault((group, plural), set()).update(rule["verbs"])
    written = {kroute.kinds.INGRESS, kroute.kinds.GATEWAY_CLASS, kroute.kinds.GATEWAY,
               kroute.kinds.HTTP_ROUTE}  # fmt: skip
    # exactly the verbs used: list and watch what it routes, get (read again after a
    # conflict) what it writes status to, and update of that status; nothing else
    assert granted == {
        **{(k.group, k.plural): {"list", "watch"} | ({"get"} if k in written else set())
           for k in gateway.KINDS},
        **{(k.group, f"{k.plural}/status"): {"update"} for k in written},
    }  # fmt: skip
    # status: one replica writes (the Lease, in the gateway's namespace), the Service's address
    assert args.leader_elect
    service = by_kind[("Service", args.publish_service[1])]
    assert service["metadata"]["namespace"] == args.publish_service[0]
    assert service["spec"]["selector"] == daemonset["spec"]["selector"]["matchLabels"]
    lease_binding = by_kind[("RoleBinding", "kroute-gateway-leader")]
    assert lease_binding["subjects"] == binding["subjects"]
    namespace = account["metadata"]["namespace"]
    assert lease_binding["metadata"]["namespace"] == namespace
    lease_role = by_kind[("Role", lease_binding["roleRef"]["name"])]
    assert lease_role["metadata"]["namespace"] == namespace
    assert {(g, r, v, tuple(rule.get("resourceNames", ())))
            for rule in lease_role["rules"] for g in rule["apiGroups"]
            for r in rule["resources"] for v in rule["verbs"]} == {
        ("coordination.k8s.io", "leases", "create", ()),
        ("coordination.k8s.io", "leases", "get", ("kroute-status",)),
        ("coordination.k8s.io", "leases", "update", ("kroute-status",)),
    }  # fmt: skip


def test_deploy_ingresses_route_as_intended() -> None:
    routing = kroute.testing.Routing.from_objects(deploy_objects())
    routing.expect("test-www.example.com/", "default/test-www:http")
    routing.expect("test-api.example.com/api/users", "default/test-api:80")
    routing.expect("test-api.example.com/", None)
    routing.expect("test-route.example.com/api/users", "default/test-api:80")
    routing.expect("test-route.example.com/", "default/test-www:80")
    routing.expect("test-ingressroute.example.com/api/users", "default/test-api:80")
    routing.expect("test-ingressroute.example.com/", "default/test-www:http")
    assert not routing.result.errors
    assert not routing.result.notes


def test_asgi_embedding_example(tmp_path: Path) -> None:
    """The embedding example under uvicorn, with the demo's pods behind it."""
    script = f"""
import sys, json, anyio, uvicorn
sys.path[:0] = [{str(EXAMPLES / "gateway")!r}, {str(EXAMPLES / "asgi_embedding")!r}]
import demo, app, kroute

async def main():
    async with anyio.create_task_group() as group:
        for service, addresses in demo.PODS.items():
            for address in addresses:
                listener = await anyio.create_tcp_listener(local_host=address, local_port=demo.POD_PORT)
                await group.start(kroute.HttpServer(demo.DemoPod(service, address)).serve, listener)
        server = uvicorn.Server(uvicorn.Config(app.app, host="127.0.0.1", port=0, log_level="warning"))
        group.start_soon(server.serve)
        while not server.started:
            await anyio.sleep(0.01)
        while not app.router.ready:
            await anyio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        print(json.dumps([await demo.fetch(port, "x", "/status"),
                          await demo.fetch(port, "test-www.localhost", "/page")], default=bytes.decode))
        server.should_exit = True
        await anyio.sleep(0.5)
        group.cancel_scope.cancel()

anyio.run(main)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=True)  # fmt: skip
    (status_code, status_body), (www_code, www_body) = json.loads(done.stdout)
    assert status_code == 200
    status = json.loads(status_body)
    assert status["gateway_ready"] is True
    assert status["test-api"]["status"] == 200
    assert status["test-api"]["body"]["service"] == "test-api"
    assert status["test-api"]["body"]["path"] == "/api/status"
    assert www_code == 200
    assert json.loads(www_body)["service"] == "test-www"

"""ACME on a real kube-apiserver with Pebble: two replicas of the example gateway, on
examples/deploy's RBAC, with leader election. The leader orders, alone; the certificate is one
Secret both serve; the HTTP-01 token reaches the CA through the other replica (the only one on
the port the CA validates on), which answers from the Secret the leader shares."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest

from kroute.acme.plan import ACME_SELECTOR, MANAGED_LABEL, secret_name
from kroute.watch import kinds
from tests.acmeca import AcmeCA
from tests.kubeserver import Kube, KubeServer
from tests.pods import until
from tests.test_acme_pebble import https, ingress
from tests.test_gateway_real import gateway_args, gateway_kubeconfig

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples" / "gateway"))
import gateway

sys.path.pop(0)
pytestmark = pytest.mark.anyio
HOST = "replicas.example.test"
#: TLS Secrets that Ingresses name are read cluster-wide, which examples/deploy grants only
#: when asked (docs/deployment.md): granted for this test, taken back after it.
TLS_READER = [
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
     "metadata": {"name": "kroute-gateway-tls-test"},
     "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["list", "watch"]}]},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
     "metadata": {"name": "kroute-gateway-tls-test"},
     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                 "name": "kroute-gateway-tls-test"},
     "subjects": [{"kind": "ServiceAccount", "name": "kroute-gateway",
                   "namespace": "kroute-system"}]},
]  # fmt: skip


@pytest.fixture
def tls_reader(api: Kube) -> Iterator[Callable[[], None]]:
    """Grants it when called; takes it back after the test."""

    def grant() -> None:
        for obj in TLS_READER:
            api.apply(obj)

    yield grant
    for obj in reversed(TLS_READER):
        api.delete(obj)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_two_replicas_share_one_certificate_secret_and_one_orders(
    kube: KubeServer, api: Kube, pebble: AcmeCA, tmp_path: Path, tls_reader: Callable[[], None]
) -> None:
    async with anyio.create_task_group() as group:  # (left once both gateways stopped)
        await replicas(group, kube, api, pebble, tmp_path, tls_reader)


async def replicas(
    group: anyio.abc.TaskGroup, kube: KubeServer, api: Kube, pebble: AcmeCA, tmp_path: Path,
    tls_reader: Callable[[], None],
) -> None:  # fmt: skip
    kubeconfig = gateway_kubeconfig(kube, tmp_path)
    tls_reader()
    common = ["--tls-listen", "127.0.0.1:0", "--leader-elect", "--leader-elect-namespace",
              "kroute-system", "--certresolver", pebble.resolver(),
              "--acme-namespace", "kroute-system"]  # fmt: skip
    # B starts first and leads; A alone listens where the CA validates HTTP-01.
    stop = anyio.Event()
    b: gateway.Started = await group.start(gateway.serve, gateway.parse_args(
        gateway_args(kubeconfig, *common, "--identity", "replica-b")), stop)  # fmt: skip
    assert b.acme is not None
    assert b.acme.election is not None
    await until(lambda: b.acme.election.is_leader if b.acme and b.acme.election else False, bool)
    a: gateway.Started = await group.start(gateway.serve, gateway.parse_args(gateway_args(
        kubeconfig, *common, "--identity", "replica-a",
        "--listen", f"127.0.0.1:{pebble.http01_port}")), stop)  # fmt: skip
    assert a.acme is not None
    assert a.tls_port is not None
    assert b.tls_port is not None
    orders = pebble.orders()

    namespace = api.namespace()
    try:
        api.apply({**ingress("shared", HOST), "metadata": {
            **ingress("shared", HOST)["metadata"], "namespace": namespace}})  # fmt: skip
        (cert_a,) = await until(a.acme.certificates, bool)
        (cert_b,) = await until(b.acme.certificates, bool)
        assert cert_a.fingerprint == cert_b.fingerprint
        # The follower's admin API says the same (its own plan, the stored certificate).
        follower: Any = a.acme.to_json()
        assert [c["names"] for c in follower["certificates"]] == [[HOST]]
        assert follower["certificates"][0]["stored"]["fingerprint"] == cert_a.fingerprint
        # One Secret, kubernetes.io/tls, labelled; one order, by the leader only.
        name = secret_name("pebble", [HOST])
        stored = [s for s in api.list(kinds.SECRET) if s["metadata"]["name"] == name]
        assert [s["type"] for s in stored] == ["kubernetes.io/tls"]
        assert stored[0]["metadata"]["namespace"] == "kroute-system"
        assert stored[0]["metadata"]["labels"][MANAGED_LABEL] == ACME_SELECTOR.split("=")[1]
        # (the leader counts its order once it has seen the Secret itself, which may come a
        # moment after the replicas serve it)
        leader, follower_acme = b.acme, a.acme
        await until(lambda: leader.statistics.issued or follower_acme.statistics.issued, bool)
        issued = [b.acme.statistics.issued, a.acme.statistics.issued]
        assert sorted(issued, key=len) == [{}, {"pebble": 1}]  # (B, unless it lost the Lease)
        assert pebble.orders() == orders + 1
        # A answered the CA; when B ordered, A's own table had no token: the shared Secret
        # gave it. Both serve the certificate over HTTPS.
        assert a.acme.http01.answered >= 1
        assert a.acme.http01.own == {}
        root = pebble.root()
        for port in (a.tls_port, b.tls_port):
            status, fingerprint, stream = await https(port, HOST, root)
            await stream.aclose()
            assert fingerprint == cert_a.fingerprint
            assert status in (404, 503)
        # The tokens were withdrawn once validated.
        shared: Any = api.get(kinds.SECRET, "kroute-system", "kroute-acme-challenges")
        assert not shared.get("data")
    finally:
        stop.set()
        for obj in api.list(kinds.INGRESS):
            if obj["metadata"]["namespace"] == namespace:
                api.delete(obj)

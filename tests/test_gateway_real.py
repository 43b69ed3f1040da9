"""The example gateway against a real kube-apiserver, as the DaemonSet in examples/deploy runs it:
with only that ServiceAccount's rights (its ClusterRole and binding applied to the server, RBAC
enforced), on asyncio and trio: the Ingresses, the HTTPRoute and the IngressRoute of
examples/deploy route, and a CRD installed after the gateway started is picked up. Checked
through the admin API and the Router's decisions; the EndpointSlice addresses are 192.0.2.0/24
and nothing is sent to them."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest

import kroute
from kroute.manifests import load_paths
from tests.kubeserver import Kube, KubeApiError, KubeServer, kubeconfig_for
from tests.pods import Client
from tests.test_kube_real import decided, endpoint_slice, eventually, served

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples" / "gateway"))
import gateway

sys.path.pop(0)
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

pytestmark = pytest.mark.anyio


def deploy_objects(name: str) -> list[dict[str, Any]]:
    return [dict(m.obj) for m in load_paths([EXAMPLES / "deploy" / name])]


@pytest.fixture
async def group() -> AsyncIterator[anyio.abc.TaskGroup]:
    async with anyio.create_task_group() as group:
        yield group
        group.cancel_scope.cancel()


def gateway_kubeconfig(kube: KubeServer, tmp_path: Path) -> Path:
    """examples/deploy's ServiceAccount, RBAC and Service applied; a kubeconfig with that
    account's token, as the DaemonSet's pods have."""
    setup = deploy_objects("gateway.yaml")
    with closing(kube.client()) as api:
        for obj in setup:
            if obj["kind"] != "DaemonSet":  # no controllers run here: nothing would start it
                api.apply(obj)
        [account] = [o["metadata"] for o in setup if o["kind"] == "ServiceAccount"]
        token = api.service_account_token(account["namespace"], account["name"])
    with closing(kube.client(token)) as as_gateway, pytest.raises(KubeApiError) as refused:
        as_gateway.list(kroute.kinds.SECRET)  # RBAC is really enforced on this server
    assert refused.value.status == 403
    return kubeconfig_for(kube, token, tmp_path / "kubeconfig")


def gateway_args(kubeconfig: Path, *extra: str) -> list[str]:
    """The DaemonSet's arguments that make sense on loopback (--grace), on `kubeconfig`."""
    [daemonset] = [o for o in deploy_objects("gateway.yaml") if o["kind"] == "DaemonSet"]
    [container] = daemonset["spec"]["template"]["spec"]["containers"]
    args = [a for a in container["args"] if a.startswith("--grace")]  # as deployed, but:
    return [*args, "--kubeconfig", str(kubeconfig),
            "--listen", "127.0.0.1:0", "--advertise", "web=8080",  # the listener's port
            "--admin", "127.0.0.1:0", "--no-gc-freeze", *extra]  # fmt: skip


async def deployed(
    kube: KubeServer, tmp_path: Path, group: anyio.abc.TaskGroup, *extra: str
) -> tuple[kroute.Router, Client]:
    """The gateway started in `group` with the DaemonSet's arguments (and `extra`) on the token
    of examples/deploy's ServiceAccount."""
    args = gateway.parse_args(gateway_args(gateway_kubeconfig(kube, tmp_path), *extra))
    started = await group.start(gateway.serve, args)
    return started.router, Client(started.admin_port)


def apply_routes(api: Kube, skip: str = "") -> None:
    """The seed's Ingresses and Services, with EndpointSlices (no controller makes them here),
    and the same Services through an HTTPRoute and an IngressRoute (routes.yaml); not the
    objects of kind `skip`. The Services' active health checks are left out: they would probe
    192.0.2.0/24."""
    for obj in deploy_objects("ingresses.yaml") + deploy_objects("routes.yaml"):
        if obj["kind"] == "Service":
            obj["metadata"].pop("annotations", None)
        if obj["kind"] not in ("Deployment", skip):
            api.apply(obj)
    api.apply(endpoint_slice("default", "test-www-1", "test-www", "192.0.2.21"))
    api.apply(endpoint_slice("default", "test-api-1", "test-api", "192.0.2.22"))


async def test_example_gateway_with_its_rbac_routes_what_the_cluster_holds(
    kube: KubeServer, tmp_path: Path, group: anyio.abc.TaskGroup
) -> None:
    router, admin = await deployed(kube, tmp_path, group)
    with closing(kube.client()) as api:
        apply_routes(api)

    async def in_rotation() -> dict[str, list[str]]:
        services = await admin.json("admin", "/api/services")
        return {s["service"]: [e["endpoint"] for e in s["endpoints"]]
                for s in services["services"]}  # fmt: skip

    pools = {"default/test-www:http": ["192.0.2.21:8080"],  # the Ingress's, the IngressRoute's
             "default/test-www:80": ["192.0.2.21:8080"],  # the HTTPRoute's
             "default/test-api:80": ["192.0.2.22:8080"]}  # fmt: skip
    with anyio.fail_after(30):  # (pools follow the slices at once, the table after a rebuild)
        while await in_rotation() != pools or (await admin.request("admin", "/ready"))[0] != 200:
            await anyio.sleep(0.05)
    routes = await admin.json("admin", "/api/routes")
    hosts = {r["match"] for r in routes["routes"]}
    for host in ("test-www", "test-api", "test-route", "test-ingressroute"):
        assert any(f"{host}.example.com" in m for m in hosts), hosts
    for host in ("test-route", "test-ingressroute"):  # the Gateway API and Traefik too
        assert decided(router, f"{host}.example.com", "/api/x") == (200, "test-api", "192.0.2.22")
        assert decided(router, f"{host}.example.com") == (200, "test-www", "192.0.2.21")
    sources = await admin.json("admin", "/api/sources")
    for kind in sources["kinds"]:  # every kind listed and watched with the account's rights
        assert kind["synced"], kind
        assert "403" not in (kind["last_error"] or ""), kind
    assert json.dumps(routes["errors"]).count("default/test-") == 0
    await admin.aclose()


async def test_example_gateway_picks_up_a_crd_installed_after_it_started(
    kube: KubeServer,
    tmp_path: Path,
    group: anyio.abc.TaskGroup,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A cluster without the HTTPRoute CRD: the gateway is ready without it, says so once, and
    routes HTTPRoutes once the CRD is installed."""
    api = kube.client()
    crd = api.crd("httproutes.gateway.networking.k8s.io")
    api.delete(crd)
    await eventually(lambda: not served(api, kroute.kinds.HTTP_ROUTE), timeout=60)
    monkeypatch.setattr(gateway, "MISSING_RECHECK", 0.3)
    caplog.set_level(logging.WARNING, logger="kroute.watch")
    router, admin = await deployed(kube, tmp_path, group)
    apply_routes(api, skip="HTTPRoute")
    await eventually(lambda: decided(router, "test-ingressroute.example.com")[0] == 200)
    assert (await admin.request("admin", "/ready"))[0] == 200  # not held back by the CRD
    kind = str(kroute.kinds.HTTP_ROUTE)
    sources = await admin.json("admin", "/api/sources")
    assert [k["missing"] for k in sources["kinds"] if k["kind"] == kind] == [True]

    def rechecks() -> int:
        [stats] = [s for s in router.sources[0].statistics() if s.kind == kind]
        return stats.reconnects

    await eventually(lambda: rechecks() >= 3)  # and still one line:

    def said() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"{kind}:")]

    assert [line.split(";")[0] for line in said()] == [
        f"{kind}: not served (is its CRD installed?): skipped, rechecked every 0.3 s"
    ]
    api.apply(crd)
    await eventually(lambda: served(api, kroute.kinds.HTTP_ROUTE), timeout=60)
    apply_routes(api)
    await eventually(lambda: decided(router, "test-route.example.com", "/api/x")[0] == 200)
    assert said().count(f"{kind}: served now (its CRD is installed): listing and watching it") == 1
    await admin.aclose()
    api.close()

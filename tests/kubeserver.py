"""A real kube-apiserver with etcd (../shared/kube) for tests, and a small client that writes to it.

`up.sh` (see ../shared/kube/README.md) starts the API server on loopback in about 5 s with the
Gateway API and Traefik CRDs; `down.sh` stops it. A missing ../shared/kube fails every test that
needs it (FileNotFoundError from the fixture), never skips it.

How a real server differs from the emulator, and what the tests here must respect: list items
carry no `kind`; EndpointSlice addresses in 127.0.0.0/8 are refused (the tests use 192.0.2.0/24
and check routing through the Router's state, never by sending traffic there); CEL validation
of the Gateway API objects is on; deleted namespaces stay Terminating (a fresh namespace per
test); no controllers run (nothing makes EndpointSlices or writes status).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import ssl
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import httpx

from kroute.watch.kinds import ROUTING_KINDS, Kind

SHARED_KUBE = Path(__file__).resolve().parents[2] / "shared" / "kube"
CRDS = SHARED_KUBE / "crds"

#: Kinds the tests write that kroute does not watch: (group, version, plural, kind, namespaced).
RBAC = "rbac.authorization.k8s.io"
OTHER_KINDS = (
    Kind("", "v1", "serviceaccounts", "ServiceAccount"),
    Kind(RBAC, "v1", "clusterroles", "ClusterRole", namespaced=False),
    Kind(RBAC, "v1", "clusterrolebindings", "ClusterRoleBinding", namespaced=False),
    Kind(RBAC, "v1", "roles", "Role"),
    Kind(RBAC, "v1", "rolebindings", "RoleBinding"),
    Kind("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition",
         namespaced=False),
)  # fmt: skip
KINDS = {(k.api_version, k.kind): k for k in (*ROUTING_KINDS, *OTHER_KINDS)}


def kind_of(obj: dict[str, Any]) -> Kind:
    return KINDS[(obj["apiVersion"], obj["kind"])]


@attrs.frozen
class KubeServer:
    """A running API server: where it is, how to authenticate, and its kubeconfig."""

    url: str
    token: str
    ca_file: str
    kubeconfig: Path
    log: Path

    def client(self, token: str | None = None) -> Kube:
        return Kube(self, token or self.token)

    def restart(self, **env: str) -> None:
        """restart-apiserver.sh: TERM (it stops listening, keeps open watches), KILL after
        KUBE_RESTART_GRACE (2 s), start again on the same port and data; 3-4 s."""
        subprocess.run([SHARED_KUBE / "restart-apiserver.sh", self.kubeconfig],
                       env={**os.environ, **env}, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)  # fmt: skip


@contextlib.contextmanager
def kube_server(workdir: Path, **env: str) -> Iterator[KubeServer]:
    """Start a real API server (up.sh, with `env` as its knobs), stop it afterwards."""
    up = SHARED_KUBE / "up.sh"
    if not up.exists():
        raise FileNotFoundError(f"{up} is missing: the real API server tests need ../shared/kube")
    kubeconfig = workdir / "kubeconfig"
    environ = {**os.environ, "KUBE_OWNER_PID": str(os.getpid()), **env}  # down.sh if we die
    subprocess.run([up, kubeconfig], env=environ, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        state = dict(
            shlex.split(line)[0].split("=", 1)
            for line in Path(f"{kubeconfig}.state.env").read_text().splitlines()
            if line.strip()
        )
        yield KubeServer(state["KUBE_APISERVER_URL"], state["KUBE_TOKEN"], state["KUBE_CA_FILE"],
                         kubeconfig, Path(state["KUBE_APISERVER_LOG"]))  # fmt: skip
    finally:
        subprocess.run([SHARED_KUBE / "down.sh", kubeconfig], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip


class KubeApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class Kube:
    """Writes and reads with plain HTTP (synchronous: the tests' writes are the events)."""

    def __init__(self, server: KubeServer, token: str) -> None:
        verify = ssl.create_default_context(cafile=server.ca_file)
        self.http = httpx.Client(base_url=server.url, verify=verify, timeout=30,
                                 headers={"Authorization": f"Bearer {token}"})  # fmt: skip

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, path: str, **options: Any) -> dict[str, Any]:
        response = self.http.request(method, path, **options)
        if response.status_code >= 400:
            try:
                message = response.json().get("message", response.text)
            except ValueError:
                message = response.text
            raise KubeApiError(response.status_code, message)
        result: dict[str, Any] = response.json()
        return result

    @staticmethod
    def _path(kind: Kind, namespace: str | None, name: str) -> str:
        return f"{kind.path(namespace if kind.namespaced else None)}/{name}"

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create or update (server-side apply, the test as the only field manager)."""
        meta = obj["metadata"]
        path = self._path(kind_of(obj), meta.get("namespace"), meta["name"])
        return self._call("PATCH", path, content=json.dumps(obj),
                          params={"fieldManager": "kroute-tests", "force": "true"},
                          headers={"Content-Type": "application/apply-patch+yaml"})  # fmt: skip

    def replace_status(self, obj: dict[str, Any]) -> dict[str, Any]:
        """PUT `obj` (read before, with its resourceVersion) to its status subresource: another
        controller writing status."""
        meta = obj["metadata"]
        path = self._path(kind_of(obj), meta.get("namespace"), meta["name"]) + "/status"
        return self._call("PUT", path, json=obj)

    def delete(self, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        with contextlib.suppress(KubeApiError):  # already gone is fine
            self._call("DELETE", self._path(kind_of(obj), meta.get("namespace"), meta["name"]))

    def get(self, kind: Kind, namespace: str | None, name: str) -> dict[str, Any]:
        return self._call("GET", self._path(kind, namespace, name))

    def list(self, kind: Kind) -> list[dict[str, Any]]:
        """Every object of `kind`, typed as a watch event would bring it (a real list's items
        carry no kind)."""
        page = self._call("GET", kind.path())
        return [{**item, "kind": kind.kind, "apiVersion": kind.api_version}
                for item in page["items"]]  # fmt: skip

    def namespace(self, prefix: str = "t") -> str:
        """A fresh namespace (deleted ones stay Terminating: never reuse a name)."""
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        return name

    def service_account_token(self, namespace: str, name: str) -> str:
        """A token for a ServiceAccount (TokenRequest): requests as that account, RBAC applies."""
        path = f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token"
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "spec": {"expirationSeconds": 3600}}  # fmt: skip
        return str(self._call("POST", path, json=body)["status"]["token"])

    def crd(self, plural_group: str) -> dict[str, Any]:
        """A CRD as shipped in ../shared/kube/crds (e.g. "ingressroutes.traefik.io"); the Gateway
        API's from the standard channel, which up.sh installs by default."""
        [path] = [p for p in CRDS.glob(f"*/{plural_group}.json")
                  if p.parent.name != "gateway-api-experimental"]  # fmt: skip
        crd: dict[str, Any] = json.loads(path.read_text())
        return crd


def kubeconfig_for(server: KubeServer, token: str, path: Path) -> Path:
    """A kubeconfig that authenticates with `token` (a ServiceAccount's, say)."""
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "real",
        "clusters": [{"name": "real", "cluster": {"server": server.url,
                                                  "certificate-authority": server.ca_file}}],
        "users": [{"name": "me", "user": {"token": token}}],
        "contexts": [{"name": "real", "context": {"cluster": "real", "user": "me"}}],
    }))  # fmt: skip
    return path

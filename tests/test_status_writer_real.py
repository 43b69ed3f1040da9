"""Status write-back against a real kube-apiserver: the example gateway with examples/deploy's
RBAC (its ServiceAccount's token, not the admin's) writes Ingress addresses and Gateway API
conditions through the status subresource, keeps other controllers' entries, withdraws its own,
stays quiet when nothing changes, retries a conflict on a fresh read; two gateway processes with
leader election: one writes, and the other takes over when it is killed.

The only real wait is the quiet period (10 s, once); everything else waits for the state it
expects under a bound."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.abc
import pytest

import kroute
from kroute.gateway.router import Router
from kroute.gateway.status_writer import StatusWriter
from kroute.watch import kinds
from kroute.watch.api import ApiClient
from kroute.watch.cluster import Cluster
from kroute.watch.sources import MemorySource
from tests.kubeserver import Kube, KubeApiError, KubeServer
from tests.pods import until
from tests.test_gateway_real import gateway_args, gateway_kubeconfig
from tests.test_kube_real import ingress, service

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples" / "gateway"))
import gateway

sys.path.pop(0)
pytestmark = pytest.mark.anyio

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CONTROLLER = "kroute.dev/gateway-controller"
OTHER = "example.com/other-controller"
WRITTEN = (kinds.INGRESS, kinds.GATEWAY_CLASS, kinds.GATEWAY, kinds.HTTP_ROUTE)
T = TypeVar("T")


@pytest.fixture
async def group() -> AsyncIterator[anyio.abc.TaskGroup]:
    async with anyio.create_task_group() as group:
        yield group
        group.cancel_scope.cancel()


@pytest.fixture
def fresh(api: Kube) -> Iterator[Callable[[], str]]:
    """Fresh namespaces; what the test put there is deleted afterwards (the namespaces cannot
    be: they stay Terminating), so that later tests' gateways do not serve it."""
    made: list[str] = []

    def namespace() -> str:
        made.append(api.namespace())
        return made[-1]

    yield namespace
    for kind in (kinds.INGRESS, kinds.HTTP_ROUTE, kinds.GATEWAY, kinds.SERVICE):
        for obj in api.list(kind):
            if obj["metadata"]["namespace"] in made:
                api.delete(obj)


Start = Callable[..., Awaitable[StatusWriter]]


@pytest.fixture
def start(kube: KubeServer, tmp_path: Path, group: anyio.abc.TaskGroup) -> Start:
    """Starts the example gateway (with more arguments) in `group`, on examples/deploy's
    ServiceAccount; gives its status writer."""

    async def start_gateway(*extra: str) -> StatusWriter:
        args = gateway.parse_args(gateway_args(gateway_kubeconfig(kube, tmp_path), *extra))
        started: gateway.Started = await group.start(gateway.serve, args)
        assert started.writer is not None
        return started.writer

    return start_gateway


def conditions(entry: dict[str, Any] | None) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in (entry or {}).get("conditions", [])}


def parents(route: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A route's status.parents entries by controllerName (one per controller here)."""
    return {e["controllerName"]: e for e in route.get("status", {}).get("parents", [])}


def mine(route: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return conditions(parents(route).get(CONTROLLER))


def lb(obj: dict[str, Any]) -> list[dict[str, str]]:
    return list(obj.get("status", {}).get("loadBalancer", {}).get("ingress", []))


# -- objects ------------------------------------------------------------------------------------


GATEWAY_CLASS = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
                 "metadata": {"name": "kroute"}, "spec": {"controllerName": CONTROLLER}}  # fmt: skip


def gateway_obj(ns: str, name: str = "gw", cls: str = "kroute") -> dict[str, Any]:
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"gatewayClassName": cls,
                     "listeners": [{"name": "web", "port": 8080, "protocol": "HTTP"}]}}  # fmt: skip


def route(ns: str, name: str, backend: str, parent: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"parentRefs": [parent], "hostnames": [f"{name}.example.com"],
                     "rules": [{"backendRefs": [{"name": backend, "port": 80}]}]}}  # fmt: skip


def apply_objects(api: Kube, ns: str, foreign: str) -> None:
    """In `ns`: Service www, Ingress site, Gateway gw; HTTPRoutes ok (to www) and missing (to a
    Service that does not exist); in `foreign`: a route to gw, which allows only its own
    namespace's routes."""
    api.apply(GATEWAY_CLASS)
    for obj in (service(ns, "www"), ingress(ns, "site", "site.example.com", "www"),
                gateway_obj(ns), route(ns, "ok", "www", {"name": "gw"}),
                route(ns, "missing", "nowhere", {"name": "gw"}),
                route(foreign, "foreign", "www", {"name": "gw", "namespace": ns})):  # fmt: skip
        api.apply(obj)


def add_other_entry(api: Kube, ns: str, name: str) -> None:
    """Another controller writes its own parents entry (read, append, write at that version)."""
    for _ in range(20):
        obj = api.get(kinds.HTTP_ROUTE, ns, name)
        status = obj.setdefault("status", {})
        status.setdefault("parents", []).append({
            "parentRef": {"name": "elsewhere"}, "controllerName": OTHER,
            "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted",
                            "message": "theirs", "lastTransitionTime": "2025-01-01T00:00:00Z"}],
        })  # fmt: skip
        try:
            api.replace_status(obj)
            return
        except KubeApiError as exc:
            if exc.status != 409:  # kroute wrote in between: read again
                raise
    raise AssertionError("could not write the other controller's entry")


async def settled_statuses(api: Kube, ns: str, foreign: str) -> None:
    """The statuses of apply_objects' objects, as kroute writes them."""
    site = await until(lambda: api.get(kinds.INGRESS, ns, "site"), lambda o: bool(lb(o)))
    assert lb(site) == [{"ip": "192.0.2.50"}, {"hostname": "lb.example.com"}]
    cls = await until(lambda: api.get(kinds.GATEWAY_CLASS, None, "kroute"),
                      lambda o: "conditions" in o.get("status", {}))  # fmt: skip
    assert conditions(cls["status"])["Accepted"] == ("True", "Accepted")
    gw = await until(lambda: api.get(kinds.GATEWAY, ns, "gw"),
                     lambda o: [e.get("attachedRoutes") for e in o.get("status", {})
                                .get("listeners", [])] == [2])  # fmt: skip
    assert conditions(gw["status"])["Accepted"] == ("True", "Accepted")
    assert conditions(gw["status"])["Programmed"] == ("True", "Programmed")
    assert gw["status"]["addresses"] == [{"type": "IPAddress", "value": "192.0.2.50"},
                                         {"type": "Hostname", "value": "lb.example.com"}]  # fmt: skip
    ok = await until(lambda: api.get(kinds.HTTP_ROUTE, ns, "ok"), lambda o: bool(mine(o)))
    assert mine(ok) == {"Accepted": ("True", "Accepted"), "ResolvedRefs": ("True", "ResolvedRefs")}
    missing = await until(lambda: api.get(kinds.HTTP_ROUTE, ns, "missing"), lambda o: bool(mine(o)))
    assert mine(missing)["Accepted"] == ("True", "Accepted")
    assert mine(missing)["ResolvedRefs"] == ("False", "BackendNotFound")
    far = await until(
        lambda: api.get(kinds.HTTP_ROUTE, foreign, "foreign"), lambda o: bool(mine(o))
    )
    assert mine(far)["Accepted"] == ("False", "NotAllowedByListeners")
    [entry] = far["status"]["parents"]
    assert entry["parentRef"]["name"] == "gw"
    assert entry["parentRef"]["namespace"] == ns
    assert all(c["observedGeneration"] == far["metadata"]["generation"]
               for c in entry["conditions"])  # fmt: skip


PUBLISHED = ("--publish-address", "192.0.2.50", "--publish-address", "lb.example.com")


# -- the tests ----------------------------------------------------------------------------------


async def test_statuses_written_kept_and_withdrawn_with_the_rbac_of_examples_deploy(
    api: Kube, fresh: Callable[[], str], start: Start
) -> None:
    ns, foreign = fresh(), fresh()
    apply_objects(api, ns, foreign)
    await start(*PUBLISHED)
    await settled_statuses(api, ns, foreign)

    # another controller's entry is kept when kroute's own changes (the backend goes missing)
    add_other_entry(api, ns, "ok")
    api.apply(route(ns, "ok", "nowhere", {"name": "gw"}))
    ok = await until(lambda: api.get(kinds.HTTP_ROUTE, ns, "ok"),
                     lambda o: mine(o).get("ResolvedRefs") == ("False", "BackendNotFound"))  # fmt: skip
    assert conditions(parents(ok)[OTHER]) == {"Accepted": ("True", "Accepted")}
    assert mine(ok)["Accepted"] == ("True", "Accepted")

    # the route moves to a Gateway of another class: kroute's entry goes, the other's stays
    api.apply(gateway_obj(ns, "theirs", cls="someone-else"))
    api.apply(route(ns, "ok", "www", {"name": "theirs"}))
    ok = await until(lambda: api.get(kinds.HTTP_ROUTE, ns, "ok"), lambda o: not mine(o))
    assert list(parents(ok)) == [OTHER]
    await until(lambda: api.get(kinds.GATEWAY, ns, "gw"),
                lambda o: o["status"]["listeners"][0]["attachedRoutes"] == 1)  # fmt: skip
    theirs = api.get(kinds.GATEWAY, ns, "theirs")  # not kroute's: as the CRD defaults it
    assert {c["reason"] for c in theirs["status"]["conditions"]} == {"Pending"}

    # the Ingress goes to another class: its addresses go
    site = ingress(ns, "site", "site.example.com", "www")
    site["spec"]["ingressClassName"] = "someone-else"
    api.apply(site)
    await until(lambda: api.get(kinds.INGRESS, ns, "site"), lambda o: not lb(o))

    # the Gateway goes to another class: kroute's conditions go back to the CRD's Pending, its
    # listeners' entries and addresses go (nobody else wrote there meanwhile)
    api.apply(gateway_obj(ns, "gw", cls="someone-else"))
    gw = await until(lambda: api.get(kinds.GATEWAY, ns, "gw"),
                     lambda o: "listeners" not in o.get("status", {}))  # fmt: skip
    assert conditions(gw["status"]) == {"Accepted": ("Unknown", "Pending"),
                                        "Programmed": ("Unknown", "Pending")}  # fmt: skip
    assert "addresses" not in gw["status"]


async def test_addresses_of_the_published_service_followed(
    api: Kube, fresh: Callable[[], str], start: Start
) -> None:
    ns = fresh()
    balancer = {**service(ns, "lb"), "spec": {**service(ns, "lb")["spec"], "type": "LoadBalancer"}}
    api.apply(balancer)

    def publish(*entries: dict[str, str]) -> None:  # what a load-balancer controller does
        obj = api.get(kinds.SERVICE, ns, "lb")
        obj["status"] = {"loadBalancer": {"ingress": list(entries)}}
        api.replace_status(obj)

    publish({"ip": "192.0.2.70"})
    api.apply(service(ns, "www"))
    api.apply(ingress(ns, "site", "site.example.com", "www"))
    await start("--publish-service", f"{ns}/lb")
    await until(
        lambda: lb(api.get(kinds.INGRESS, ns, "site")), lambda v: v == [{"ip": "192.0.2.70"}]
    )
    publish({"hostname": "lb2.example.com"})  # the Service's addresses change: the Ingress's too
    await until(lambda: lb(api.get(kinds.INGRESS, ns, "site")),
                lambda v: v == [{"hostname": "lb2.example.com"}])  # fmt: skip


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the one real wait: once
async def test_nothing_written_while_nothing_changes(
    api: Kube, fresh: Callable[[], str], start: Start
) -> None:
    """10 s of events that change no status (labels on a Namespace: the table is rebuilt and
    status planned each time): no status's resourceVersion moves, no write is made."""
    ns, foreign = fresh(), fresh()
    apply_objects(api, ns, foreign)
    writer = await start(*PUBLISHED)
    await settled_statuses(api, ns, foreign)
    await until(lambda: writer.settled, bool)

    def versions() -> dict[tuple[str, str, str], str]:
        return {(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]):
                o["metadata"]["resourceVersion"] for kind in WRITTEN for o in api.list(kind)}  # fmt: skip

    before, stats = versions(), writer.statistics()
    rebuilds = writer.router.statistics().rebuilds
    deadline = anyio.current_time() + 10.0
    tick = 0
    while anyio.current_time() < deadline:
        tick += 1
        api.apply({"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": ns, "labels": {"tick": str(tick)}}})  # fmt: skip
        await anyio.sleep(0.25)
    await until(lambda: writer.settled, bool)
    assert versions() == before
    after = writer.statistics()
    assert after.writes == stats.writes
    assert after.requests == stats.requests
    assert after.rounds > stats.rounds  # the events were planned on, and nothing written
    assert writer.router.statistics().rebuilds > rebuilds


async def test_a_conflict_is_retried_on_a_fresh_read(
    api: Kube, fresh: Callable[[], str], kube: KubeServer
) -> None:
    """The writer plans on a stale copy (someone else wrote the route's status since): its
    write fails with 409, it reads the route again, merges into what is there, writes."""
    ns = fresh()
    api.apply(GATEWAY_CLASS)
    for obj in (service(ns, "www"), gateway_obj(ns), route(ns, "ok", "www", {"name": "gw"})):
        api.apply(obj)
    stale = [api.get(kinds.GATEWAY_CLASS, None, "kroute"), api.get(kinds.SERVICE, ns, "www"),
             api.get(kinds.GATEWAY, ns, "gw"), api.get(kinds.HTTP_ROUTE, ns, "ok")]  # fmt: skip
    add_other_entry(api, ns, "ok")  # meanwhile
    router = Router([MemorySource(objects=stale)], entry_points=[kroute.EntryPoint("web", 8080)])
    async with ApiClient(Cluster.from_kubeconfig(str(kube.kubeconfig))) as client:
        writer = StatusWriter(
            router, client, addresses=kroute.PublishedAddresses.parse(["192.0.2.9"])
        )
        assert await writer.write_round() == 0
    ok = api.get(kinds.HTTP_ROUTE, ns, "ok")
    assert list(parents(ok)) == [OTHER, CONTROLLER]
    assert mine(ok)["Accepted"] == ("True", "Accepted")
    stats = writer.statistics()
    assert stats.conflicts >= 1
    assert stats.requests == stats.writes + 2 * stats.conflicts  # refused write, read again


# -- two gateway processes, one Lease --------------------------------------------------------

#: The gateway processes import this checkout's kroute, whatever is installed.
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(
    [str(EXAMPLES.parent), *filter(None, [os.environ.get("PYTHONPATH")])])}  # fmt: skip
TIMING = {"--leader-elect-lease-duration": 3.0, "--leader-elect-renew-deadline": 2.0,
         "--leader-elect-retry-period": 0.5}  # fmt: skip


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the gateways are processes
async def test_two_gateway_processes_one_writer_and_takeover(
    kube: KubeServer, api: Kube, fresh: Callable[[], str], tmp_path: Path
) -> None:
    kubeconfig = gateway_kubeconfig(kube, tmp_path)
    ns = fresh()
    api.apply(service(ns, "www"))
    timing = [f"{flag}={value}" for flag, value in TIMING.items()]
    processes: dict[str, subprocess.Popen[bytes]] = {}
    logs = {}
    try:
        for identity in ("a", "b"):
            logs[identity] = open(tmp_path / f"{identity}.log", "wb")  # noqa: SIM115
            processes[identity] = subprocess.Popen(
                [sys.executable, str(EXAMPLES / "gateway" / "gateway.py"),
                 *gateway_args(kubeconfig, "--publish-address", "192.0.2.60", "--leader-elect",
                               "--leader-elect-namespace", "kroute-system", "--identity",
                               identity, *timing)],
                stdout=logs[identity], stderr=subprocess.STDOUT, env=ENV,
            )  # fmt: skip

        def holder() -> str:
            try:
                lease = api.get(kinds.LEASE, "kroute-system", "kroute-status")
            except KubeApiError:
                return ""
            return str(lease["spec"].get("holderIdentity") or "")

        leader = await until(holder, lambda h: h in processes, timeout=60)
        api.apply(ingress(ns, "first", "first.example.com", "www"))
        await until(lambda: lb(api.get(kinds.INGRESS, ns, "first")), bool)
        assert holder() == leader  # one holder all along
        assert all(p.poll() is None for p in processes.values())

        processes[leader].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        processes[leader].wait()
        api.apply(ingress(ns, "second", "second.example.com", "www"))
        [other] = [i for i in processes if i != leader]
        bound = TIMING["--leader-elect-lease-duration"] + 10.0
        written = await until(lambda: lb(api.get(kinds.INGRESS, ns, "second")), bool,
                              timeout=bound)  # fmt: skip
        assert written == [{"ip": "192.0.2.60"}]
        assert time.monotonic() - killed < bound
        assert holder() == other
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for identity, process in processes.items():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            logs[identity].close()

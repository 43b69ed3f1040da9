"""ApiClient and LeaderElection against a real kube-apiserver with etcd (../shared/kube).

What only a real server shows: optimistic concurrency (409 on a stale resourceVersion and on
a create of an existing object), the status subresource ignoring the spec, server-side apply's
field managers, Lease validation. Elections use short durations (lease 3 s, renew 2 s, retry
0.5 s) and wait for events (leadership gained, leader work cancelled) under `fail_after`
bounds derived from those durations.
"""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
import pytest

from kroute.watch.api import ApiClient, ApiUnreachable, Conflict, NotFound
from kroute.watch.cluster import Cluster
from kroute.watch.kinds import INGRESS, LEASE
from kroute.watch.leader import LeaderElection
from kroute.watch.lease import JITTER_FACTOR
from tests.kubeserver import Kube, KubeServer

pytestmark = pytest.mark.anyio

FAST: dict[str, Any] = {"lease_duration": 3.0, "renew_deadline": 2.0, "retry_period": 0.5}
#: a takeover after a holder dies: its term by the successor's clock, plus one (jittered) retry
#: period to notice, plus room for a loaded machine
TAKEOVER = FAST["lease_duration"] + FAST["retry_period"] * (1 + JITTER_FACTOR) + 3.0


@pytest.fixture
async def client(kube: KubeServer) -> AsyncIterator[ApiClient]:
    async with ApiClient(Cluster.from_kubeconfig(str(kube.kubeconfig))) as api_client:
        yield api_client


def lease(ns: str, name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}  # fmt: skip


# -- ApiClient ----------------------------------------------------------------------------------


async def test_create_get_replace_and_conflicts(client: ApiClient, api: Kube) -> None:
    ns = api.namespace()
    created = await client.create(LEASE, lease(ns, "l", holderIdentity="a"))
    assert created["spec"]["holderIdentity"] == "a"
    got = await client.get(LEASE, ns, "l")
    assert got["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
    got["spec"]["holderIdentity"] = "b"
    replaced = await client.replace(LEASE, got)
    assert replaced["spec"]["holderIdentity"] == "b"
    got["spec"]["holderIdentity"] = "c"  # still at the first resourceVersion: stale
    with pytest.raises(Conflict, match=f"^Lease {ns}/l: HTTP 409: Conflict: ") as stale:
        await client.replace(LEASE, got)
    assert (await client.get(LEASE, ns, "l"))["spec"]["holderIdentity"] == "b"
    with pytest.raises(Conflict, match=f"^Lease {ns}/l: HTTP 409: AlreadyExists: "):
        await client.create(LEASE, lease(ns, "l"))
    with pytest.raises(NotFound, match=f"^Lease {ns}/none: HTTP 404: NotFound: "):
        await client.get(LEASE, ns, "none")
    with pytest.raises(ValueError, match="needs a resourceVersion"):
        await client.replace(LEASE, lease(ns, "l"))
    token = api.http.headers["Authorization"].split()[-1]
    assert token not in str(stale.value)
    assert client.cluster.base_url not in str(stale.value)


async def test_merge_patch_and_apply(client: ApiClient, api: Kube) -> None:
    ns = api.namespace()
    await client.create(LEASE, lease(ns, "l", holderIdentity="a", leaseTransitions=1))
    patched = await client.patch(LEASE, ns, "l", {"spec": {"holderIdentity": None}})
    assert patched["spec"] == {"leaseTransitions": 1}
    applied = await client.apply(LEASE, lease(ns, "l", holderIdentity="k"), field_manager="kroute")
    assert applied["spec"]["holderIdentity"] == "k"
    with pytest.raises(Conflict, match=r'conflict with "kroute": \.spec\.holderIdentity'):
        await client.apply(LEASE, lease(ns, "l", holderIdentity="o"), field_manager="other")
    forced = await client.apply(LEASE, lease(ns, "l", holderIdentity="o"), field_manager="other",
                             force=True)  # fmt: skip
    assert forced["spec"]["holderIdentity"] == "o"


def ingress(ns: str, name: str) -> dict[str, Any]:
    backend = {"service": {"name": "web", "port": {"number": 80}}}
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"ingressClassName": "kroute", "defaultBackend": backend}}  # fmt: skip


async def test_status_subresource(client: ApiClient, api: Kube) -> None:
    """Status writes change the status only (a spec in them is ignored), at a resourceVersion
    or by server-side apply with kroute's field manager, and never through the main resource."""
    ns = api.namespace()
    created = await client.create(INGRESS, ingress(ns, "site"))
    published = {"loadBalancer": {"ingress": [{"ip": "192.0.2.7"}]}}
    patched = await client.patch(INGRESS, ns, "site", {"status": published,
                              "spec": {"ingressClassName": "other"}}, subresource="status")  # fmt: skip
    assert patched["status"] == published
    assert patched["spec"]["ingressClassName"] == "kroute"

    stale = {**created, "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.8"}]}}}
    with pytest.raises(Conflict, match=f"^Ingress {ns}/site status: HTTP 409"):
        await client.replace(INGRESS, stale, subresource="status")
    fresh = await client.get(INGRESS, ns, "site", subresource="status")
    replaced = await client.replace(
        INGRESS, {**fresh, "status": stale["status"]}, subresource="status"
    )
    assert replaced["status"] == stale["status"]

    hostname = {"loadBalancer": {"ingress": [{"hostname": "lb.example"}]}}
    applied = await client.apply(INGRESS, {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                                        "metadata": {"name": "site", "namespace": ns},
                                        "status": hostname},
                              field_manager="kroute", force=True, subresource="status")  # fmt: skip
    assert applied["status"] == hostname
    managers = {(m["manager"], m.get("subresource")) for m in applied["metadata"]["managedFields"]}
    assert ("kroute", "status") in managers

    main = await client.patch(INGRESS, ns, "site", {"status": published})  # not the subresource
    assert main["status"] == hostname


async def test_an_unreachable_server_is_named_not_leaked(kube: KubeServer) -> None:
    cluster = Cluster.from_kubeconfig(str(kube.kubeconfig))
    cluster.base_url = "https://127.0.0.1:9"  # discard: nothing listens
    async with ApiClient(cluster) as client:
        with pytest.raises(ApiUnreachable, match=r"^Lease ns/l: no answer \(\w+\)$"):
            await client.get(LEASE, "ns", "l")


# -- LeaderElection -------------------------------------------------------------------------


class Candidate:
    """A LeaderElection running in its own cancel scope (cancelling it is the process dying,
    or stopping cleanly with `release_on_cancel`), with leader work that records itself."""

    def __init__(self, election: LeaderElection, log: list[str]) -> None:
        self.election = election
        self.log = log
        self.scope = anyio.CancelScope()
        self.working = anyio.Event()
        self.stopped = anyio.Event()

    async def run(self) -> None:
        with self.scope:
            async with anyio.create_task_group() as group:
                group.start_soon(self.election.run)
                group.start_soon(self.election.run_as_leader, self.work)

    async def work(self) -> None:
        me = self.election.identity
        self.log.append(f"+{me}")
        names = {entry[1:] for entry in self.log}
        leading = [n for n in names if self.log.count(f"+{n}") > self.log.count(f"-{n}")]
        assert leading == [me], f"two leaders at once: {leading}"
        self.working.set()
        try:
            await anyio.sleep_forever()
        finally:
            self.log.append(f"-{me}")
            self.stopped.set()


async def two_candidates(
    client: ApiClient, group: anyio.abc.TaskGroup, ns: str, **options: Any
) -> tuple[Candidate, Candidate, list[str]]:
    """Two candidates for one Lease; returns (leader, the other, log) once one leads."""
    log: list[str] = []
    a, b = (Candidate(LeaderElection(client, namespace=ns, identity=name, **{**FAST, **options}),
                      log) for name in ("a", "b"))  # fmt: skip
    group.start_soon(a.run)
    group.start_soon(b.run)
    winner = await first(a.working, b.working)
    leader, other = (a, b) if winner == 0 else (b, a)
    assert leader.election.is_leader
    assert not other.election.is_leader
    return leader, other, log


async def first(*events: anyio.Event) -> int:
    """The index of the first of `events` to be set (within the time a takeover may take)."""
    done: list[int] = []

    async def wait(index: int, event: anyio.Event) -> None:
        await event.wait()
        done.append(index)
        group.cancel_scope.cancel()

    with anyio.fail_after(TAKEOVER):
        async with anyio.create_task_group() as group:
            for index, event in enumerate(events):
                group.start_soon(wait, index, event)
    return done[0]


def holder(api: Kube, ns: str) -> str:
    return str(api.get(LEASE, ns, "kroute-status")["spec"].get("holderIdentity", ""))


async def test_exactly_one_holder_and_takeover_after_a_kill(client: ApiClient, api: Kube) -> None:
    ns = api.namespace()
    async with anyio.create_task_group() as group:
        leader, other, log = await two_candidates(client, group, ns, release_on_cancel=False)
        assert await anyio.to_thread.run_sync(holder, api, ns) == leader.election.identity
        leader.scope.cancel()  # killed: no release
        await first(other.working)
        assert log == [f"+{leader.election.identity}", f"-{leader.election.identity}",
                       f"+{other.election.identity}"]  # fmt: skip
        assert await anyio.to_thread.run_sync(holder, api, ns) == other.election.identity
        lease = await client.get(LEASE, ns, "kroute-status")
        assert lease["spec"]["leaseTransitions"] == 1
        group.cancel_scope.cancel()


async def test_a_clean_stop_releases_for_an_immediate_takeover(
    client: ApiClient, api: Kube
) -> None:
    """A released Lease is taken at the successor's next round, long before the 30 s term."""
    ns = api.namespace()
    async with anyio.create_task_group() as group:
        leader, other, _ = await two_candidates(client, group, ns, lease_duration=30.0)
        leader.scope.cancel()
        with anyio.fail_after(FAST["retry_period"] * (1 + JITTER_FACTOR) + 5.0):
            await other.working.wait()
        lease = await client.get(LEASE, ns, "kroute-status")
        assert lease["spec"]["holderIdentity"] == other.election.identity
        assert lease["spec"]["leaseTransitions"] == 1  # one change of holder: a release is none
        group.cancel_scope.cancel()
    assert (await client.get(LEASE, ns, "kroute-status"))["spec"].get("holderIdentity") is None


async def test_a_holder_whose_lease_is_overwritten_stops_at_once(
    client: ApiClient, api: Kube
) -> None:
    ns = api.namespace()
    async with anyio.create_task_group() as group:
        leader, other, log = await two_candidates(client, group, ns)
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        taken = {"holderIdentity": "intruder", "renewTime": now, "acquireTime": now}
        await client.patch(LEASE, ns, "kroute-status", {"spec": taken})
        with anyio.fail_after(FAST["renew_deadline"] + 3.0):
            await leader.stopped.wait()
        assert not leader.election.is_leader
        assert leader.election.holder == "intruder"
        assert not other.working.is_set()
        assert log[-1] == f"-{leader.election.identity}"
        group.cancel_scope.cancel()


async def test_a_holder_that_cannot_renew_stops_at_its_renew_deadline(
    kube: KubeServer, api: Kube
) -> None:
    """The API server becomes unreachable for the holder: its work is cancelled when the renew
    deadline passes, by the event loop's clock, while its requests still fail. Once the server
    answers again, the Lease (still naming it, nobody else wrote) is taken back and the work
    starts again."""
    ns = api.namespace()
    cluster = Cluster.from_kubeconfig(str(kube.kubeconfig))
    reachable = cluster.base_url
    async with ApiClient(cluster) as client, anyio.create_task_group() as group:
        me = Candidate(LeaderElection(client, namespace=ns, identity="alone", **FAST), [])
        group.start_soon(me.run)
        await first(me.working)
        cluster.base_url = "https://127.0.0.1:9"
        with anyio.fail_after(FAST["renew_deadline"] + 3.0):
            await me.stopped.wait()
        assert not me.election.is_leader
        me.working = anyio.Event()
        cluster.base_url = reachable
        await first(me.working)
        assert me.log == ["+alone", "-alone", "+alone"]
        lease = await client.get(LEASE, ns, "kroute-status")
        assert lease["spec"]["leaseTransitions"] == 0
        group.cancel_scope.cancel()

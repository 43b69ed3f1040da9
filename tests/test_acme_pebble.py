"""ACME against a real CA: Pebble (../shared/acme) validates HTTP-01 for real against the
gateway on 127.0.0.1, refuses 5% of nonces and reuses half of the authorizations, as a real CA
may. Every wait here waits for a state (a certificate stored, a failure recorded) under a
bound; Pebble's own pauses (Retry-After 3 and 5 s) are what takes the time."""

from __future__ import annotations

import datetime
import hashlib
import json
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.abc
import pytest
from anyio.streams.tls import TLSAttribute

from kroute.acme.client import Polling
from kroute.acme.manager import AcmeCertificates
from kroute.acme.resolvers import Resolver
from kroute.acme.schedule import RenewalPolicy
from kroute.acme.store import MemoryStore
from kroute.gateway.router import Router
from kroute.tls.contexts import TlsCertificates, TlsContexts
from kroute.transport.conformance import Backend
from kroute.watch.sources import MemorySource
from tests.acmeca import AcmeCA
from tests.builders import httproute, to
from tests.fronts import echo_gateway
from tests.pods import Client, endpoint_slice, service, start_front, start_pods, until

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples" / "gateway"))
import gateway

sys.path.pop(0)
T = TypeVar("T")
ANNOTATION = "traefik.ingress.kubernetes.io/router.tls.certresolver"


def ingress(name: str, host: str, resolver: str = "pebble") -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": name, "namespace": "default",
                         "annotations": {ANNOTATION: resolver}},
            "spec": {"ingressClassName": "kroute", "rules": [{"host": host, "http": {"paths": [
                {"path": "/", "pathType": "Prefix", "backend": {
                    "service": {"name": "web", "port": {"number": 80}}}}]}}]}}  # fmt: skip


async def https(
    port: int, host: str, root: bytes, *, stream: Any = None, path: str = "/"
) -> tuple[int, str, Any]:
    """(status, leaf fingerprint, the open stream) of GET `path` with SNI and Host `host`, the
    chain verified against Pebble's root and the name checked."""
    if stream is None:
        context = ssl.create_default_context(cadata=root.decode())
        stream = await anyio.connect_tcp("127.0.0.1", port, tls=True, ssl_context=context,
                                         tls_hostname=host, tls_standard_compatible=False)  # fmt: skip
    data = b""
    try:
        await stream.send(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        with anyio.fail_after(10):
            while b"\r\n\r\n" not in data or not _complete(data):
                data += await stream.receive()
    except BaseException:
        await anyio.aclose_forcefully(stream)
        raise
    der = stream.extra(TLSAttribute.ssl_object).getpeercert(binary_form=True)
    return int(data.split(b" ", 2)[1]), hashlib.sha256(der).hexdigest(), stream


def _complete(data: bytes) -> bool:
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.lower().split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return True


# -- HTTP-01 answered by every front, before any route ---------------------------------------------


@pytest.mark.anyio
async def test_every_front_answers_http01_before_any_route(every_front: str) -> None:
    routes = [httproute("all", [{"backendRefs": [to("web")]}], hostnames=["app.example.test"])]
    async with echo_gateway(routes, every_front) as (front, _, router):
        acme = AcmeCertificates(router, [Resolver.parse("pebble=https://ca.test/dir,"
                                                        "email=a@example.com")], MemoryStore())  # fmt: skip
        assert router.challenges is acme.http01
        acme.http01.add("token-1", "token-1.thumbprint")
        status, _, body = await front.request("app.example.test",
                                              "/.well-known/acme-challenge/token-1")  # fmt: skip
        assert (status, body) == (200, b"token-1.thumbprint")
        # Any other token or method is routed as usual: the backend answers (its 404 is
        # empty, the gateway's own has a page), and so is any other path.
        for method, target in [("GET", "/.well-known/acme-challenge/other"),
                               ("POST", "/.well-known/acme-challenge/token-1")]:  # fmt: skip
            status, _, body = await front.request("app.example.test", target, method=method)
            assert (status, body) == (404, b"")
        status, _, body = await front.request("app.example.test", "/echo")
        assert status == 200
        assert json.loads(body)["target"] == "/echo"
        assert acme.http01.answered == 1


# -- the example gateway: an Ingress gets a certificate; a restart reuses it -----------------------


@pytest.fixture
async def group() -> AsyncIterator[anyio.abc.TaskGroup]:
    async with anyio.create_task_group() as group:
        yield group
        group.cancel_scope.cancel()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_orders_started_together_share_one_account_registered_once(pebble: AcmeCA) -> None:
    """Each order is a task of its own, and they start together: they must share one account,
    its key made and stored once. (Two registrations with one key at once made Pebble answer
    one of them serverInternal, "Error saving account", and that order waited five minutes.)"""
    store = MemoryStore()
    acme = AcmeCertificates(Router([MemorySource()]), [Resolver.parse(pebble.resolver())], store)
    resolver = acme.resolvers["pebble"]
    clients = []

    async def connect() -> None:
        clients.append(await acme._client(resolver))

    async with anyio.create_task_group() as group:
        for _ in range(4):
            group.start_soon(connect)
    assert len(clients) == 4
    assert all(client is clients[0] for client in clients)
    assert clients[0].account is not None
    assert len(store.secrets()) == 1  # (the account key's Secret)
    clients[0].close()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_an_ingress_gets_a_certificate_and_a_restart_reuses_it(
    pebble: AcmeCA, tmp_path: Path, group: anyio.abc.TaskGroup
) -> None:
    _, pod_port = await start_pods(group, "web", ["127.0.0.121"])
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "app.json").write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": [
        ingress("app", "app.example.test"), ingress("blocked", "blocked-domain.example"),
        service("web"), endpoint_slice("web", pod_port, [("127.0.0.121", "ready")])]}))  # fmt: skip
    args = gateway.parse_args([
        "--manifests", str(manifests), "--listen", f"127.0.0.1:{pebble.http01_port}",
        "--tls-listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--no-gc-freeze",
        "--certresolver", pebble.resolver(), "--acme-storage", str(tmp_path / "acme"),
    ])  # fmt: skip
    root, orders = pebble.root(), pebble.orders()
    stop = anyio.Event()
    async with anyio.create_task_group() as first:
        started: gateway.Started = await first.start(gateway.serve, args, stop)
        acme = started.acme
        assert acme is not None
        assert started.tls_port is not None
        await until(acme.certificates, bool)
        status, fingerprint, stream = await https(started.tls_port, "app.example.test", root)
        await stream.aclose()
        assert status == 200
        # Reported: the certificate (issuer, resolver, expiry), and the name that never
        # validates (Pebble blocks it: rejectedIdentifier), tried once.
        await until(acme.to_json, lambda s: s["certificates"][1]["permanent"])  # type: ignore[index]
        admin = Client(started.admin_port)
        report = await admin.json("admin", "/api/acme")
        _, page = await admin.request("admin", "/")  # (the dashboard shows them: api/acme)
        _, metrics = await admin.request("admin", "/metrics")
        await admin.aclose()
        for line in ['kroute_acme_orders_total{resolver="pebble"} 2.0',
                     'kroute_acme_order_failures_total{resolver="pebble"} 1.0',
                     'kroute_acme_certificates_issued_total{resolver="pebble"} 1.0']:  # fmt: skip
            assert line in metrics.decode()
        (days,) = [line for line in metrics.decode().splitlines()
                   if line.startswith("kroute_acme_certificate_expiry_days{")]  # fmt: skip
        (held,) = acme.held().values()  # (Pebble picks a profile when none is asked: 6 or 90 days)
        left = held.certificate.not_after - datetime.datetime.now(datetime.UTC)
        assert abs(float(days.rsplit(" ", 1)[1]) - left / datetime.timedelta(days=1)) < 0.01
        assert b'id="acme-certificates"' in page
        assert b"api/acme" in page
        app, blocked = report["certificates"]
        assert app["names"] == ["app.example.test"]
        assert app["resolver"] == "pebble"
        assert app["stored"]["issuer"].startswith("CN=Pebble Intermediate CA")
        assert app["stored"]["fingerprint"] == fingerprint
        assert app["last_error"] is None
        assert blocked["names"] == ["blocked-domain.example"]
        assert blocked["stored"] is None
        assert "forbidden by policy" in blocked["last_error"]
        assert blocked["permanent"]
        assert blocked["failures"] == 1
        assert acme.statistics.attempts == {"pebble": 2}
        assert pebble.orders() == orders + 1  # (the blocked name's order is refused)
        stop.set()  # (the gateway drains and ends, giving the ports back)

    # Restarted on the same storage: the stored certificate is served, nothing is ordered for
    # it (the blocked name is tried once more: a restart forgets what failed).
    again: gateway.Started = await group.start(gateway.serve, args, anyio.Event())
    assert again.acme is not None
    assert again.tls_port is not None
    await until(lambda: again.router.ready, bool)  # (the manifests read again)
    status, served, stream = await https(again.tls_port, "app.example.test", root)
    await stream.aclose()
    assert (status, served) == (200, fingerprint)
    restarted = again.acme
    await until(restarted.to_json, lambda s: s["certificates"][1]["failures"] == 1)  # type: ignore[index]
    assert restarted.statistics.attempts == {"pebble": 1}
    assert pebble.orders() == orders + 1


# -- failures back off and are reported; renewal swaps without a failed request -------------------


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_failing_validation_is_retried_with_backoff_until_it_validates(
    pebble: AcmeCA, group: anyio.abc.TaskGroup
) -> None:
    source = MemorySource(objects=[ingress("fails", "fails.example.test")])
    router = Router([source])
    policy = RenewalPolicy(retry_initial=1.0, retry_factor=2.0, retry_cap=4.0, jitter=0.0)
    acme = AcmeCertificates(router, [Resolver.parse(pebble.resolver())], MemoryStore(),
                            policy=policy, polling=Polling(timeout=60))  # fmt: skip
    # The CA reaches a gateway that knows nothing of the challenges: 404, "unauthorized".
    elsewhere = Router([MemorySource(objects=[])])
    await start_front(group, elsewhere, "fast", port=pebble.http01_port)
    group.start_soon(acme.run)
    seen = []
    for failures in (1, 2, 3):
        attempts = await until(lambda: acme.attempts.get(("pebble", ("fails.example.test",))),
                               lambda a, n=failures: a is not None and a.failures == n)  # type: ignore[misc]  # fmt: skip
        assert attempts is not None
        assert attempts.retry_at is not None
        assert "unauthorized" in str(attempts.last_error) or "404" in str(attempts.last_error)
        seen.append(attempts.retry_at)
        assert acme.statistics.attempts["pebble"] == failures  # one order per backoff, no loop
    entries: Any = acme.to_json()["certificates"]
    (entry,) = entries
    assert entry["failures"] == 3
    assert entry["last_error"]
    # Fixed (the gateway answers now): the next attempt validates, the error is cleared.
    elsewhere.challenges = acme.http01
    await until(acme.certificates, bool)
    assert acme.attempts == {}
    assert acme.statistics.failures["pebble"] >= 3
    assert seen == sorted(seen)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_renewal_of_a_short_lived_certificate_drops_no_request(
    pebble: AcmeCA, group: anyio.abc.TaskGroup
) -> None:
    backend = Backend("127.0.0.122")
    await group.start(backend.serve)
    source = MemorySource(objects=[
        ingress("short", "short.example.test"), service("web"),
        endpoint_slice("web", backend.port, [("127.0.0.122", "ready")])])  # fmt: skip
    router = Router([source])
    offset = datetime.timedelta()
    clock = lambda: datetime.datetime.now(datetime.UTC) + offset  # noqa: E731
    acme = AcmeCertificates(router, [Resolver.parse(pebble.resolver(profile="shortlived"))],
                            MemoryStore(), clock=clock)  # fmt: skip
    contexts = TlsContexts()
    TlsCertificates([source], contexts, providers=[acme])
    await start_front(group, router, "fast", port=pebble.http01_port)
    port = await start_front(group, router, "fast", tls=contexts.server)
    group.start_soon(acme.run)
    root = pebble.root()
    (held,) = await until(acme.certificates, bool)
    (stored,) = acme.held().values()
    lifetime = held.not_after - stored.not_before
    assert round(lifetime / datetime.timedelta(days=1)) == 6  # the shortlived profile
    _, first, kept = await https(port, "short.example.test", root, path="/echo")

    failed: list[BaseException] = []
    served: set[str] = set()
    done, finished = anyio.Event(), anyio.Event()

    async def clients() -> None:  # new connections, one after another, through the switch
        while not done.is_set():
            try:
                status, fingerprint, stream = await https(port, "short.example.test", root,
                                                          path="/echo")  # fmt: skip
                await stream.aclose()
                served.add(fingerprint)
                if status != 200:
                    failed.append(AssertionError(status))
            except Exception as exc:
                failed.append(exc)
        finished.set()

    group.start_soon(clients)
    offset = datetime.timedelta(days=5)  # past the renewal time (ARI's window, or 2 days left)
    acme.refresh()
    renewed = await until(acme.certificates, lambda c: bool(c) and c[0].fingerprint != first)
    await until(lambda: served, lambda s: renewed[0].fingerprint in s)
    done.set()
    await finished.wait()
    assert failed == []
    # The connection opened before the switch keeps its certificate and goes on working.
    status, still, _ = await https(port, "short.example.test", root, stream=kept, path="/echo")
    assert (status, still) == (200, first)
    await kept.aclose()
    assert acme.statistics.issued["pebble"] == 2


# -- TLS-ALPN-01: answered by the TLS front ---------------------------------------------------------


@pytest.mark.anyio
async def test_tls_alpn_01_through_the_example_gateways_tls_front(
    pebble: AcmeCA, tmp_path: Path, group: anyio.abc.TaskGroup, front: str, anyio_backend: str
) -> None:
    host = f"alpn-{front}-{anyio_backend}.example.test"
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "app.json").write_text(json.dumps(ingress("alpn", host)))
    args = gateway.parse_args([
        "--manifests", str(manifests), "--listen", "127.0.0.1:0", "--front", front,
        "--tls-listen", f"127.0.0.1:{pebble.tlsalpn01_port}", "--admin", "127.0.0.1:0",
        "--no-gc-freeze", "--certresolver", pebble.resolver(challenge="tls-alpn-01"),
    ])  # fmt: skip
    started: gateway.Started = await group.start(gateway.serve, args, anyio.Event())
    acme = started.acme
    assert acme is not None
    assert started.tls_port == pebble.tlsalpn01_port
    (cert,) = await until(acme.certificates, bool)
    assert acme.http01.answered == 0  # (validated over TLS, not HTTP)
    status, fingerprint, stream = await https(pebble.tlsalpn01_port, host, pebble.root())
    await stream.aclose()
    assert fingerprint == cert.fingerprint
    assert status == 503  # (the route has no Service: the certificate is what is tested)

"""TLS termination: certificates from Secrets (made at test time with trustme), selected by SNI,
reloaded without a restart, bad Secrets isolated; over real TLS connections on both fronts."""

from __future__ import annotations

import base64
import contextlib
import json
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import attrs
import pytest
import trustme
from anyio.streams.tls import TLSAttribute

from kroute.gateway.access import AccessLog
from kroute.gateway.admin import certificates_json
from kroute.gateway.metrics import Metrics
from kroute.gateway.router import Router
from kroute.objects import FieldError, ObjectRef
from kroute.tls.certs import Certificate, certificate_from_secret, certificates_from_objects
from kroute.tls.contexts import TlsCertificates, TlsContexts
from kroute.watch.sources import MemorySource
from tests.builders import gateway, ingress
from tests.pods import Client, endpoint_slice, service, start_front, start_pods

CA = trustme.CA()


def secret(name: str, *hosts: str, namespace: str = "default", key_of: str | None = None) -> dict[str, Any]:  # fmt: skip
    """A kubernetes.io/tls Secret for `hosts` (with the key of another certificate: `key_of`)."""
    issued = CA.issue_cert(*hosts)
    chain = b"".join(blob.bytes() for blob in issued.cert_chain_pems)
    key = (CA.issue_cert(key_of) if key_of else issued).private_key_pem.bytes()
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": name, "namespace": namespace},
            "data": {"tls.crt": base64.b64encode(chain).decode(),
                     "tls.key": base64.b64encode(key).decode()}}  # fmt: skip


def tls_ingress(name: str, host: str, secret_name: str, *, tls_hosts: list[str] | None = None) -> dict[str, Any]:  # fmt: skip
    obj = ingress(name, [(host, [("/", "Prefix", "www")])])
    obj["spec"]["tls"] = [{"hosts": tls_hosts or [host], "secretName": secret_name}]
    return obj


# -- pure: reading Secrets, choosing certificates ---------------------------------------------


def test_a_secret_gives_its_names_and_validity() -> None:
    cert = certificate_from_secret(secret("s", "www.test", "*.apps.test"))
    assert cert.names == ("www.test", "*.apps.test")
    assert cert.covers("WWW.test.")
    assert cert.covers("a.apps.test")
    assert not cert.covers("a.b.apps.test")
    assert not cert.covers("apps.test")
    assert cert.not_after.year >= 2026
    assert str(cert.secret) == "Secret default/s"


@pytest.mark.parametrize(("change", "field"), [
    (lambda s: s.update(type="Opaque"), "type"),
    (lambda s: s["data"].update({"tls.crt": "%%%"}), "data[tls.crt]"),
    (lambda s: s["data"].update({"tls.crt": base64.b64encode(b"nope").decode()}), "data[tls.crt]"),
    (lambda s: s["data"].pop("tls.key"), "data[tls.key]"),
])  # fmt: skip
def test_unusable_secrets_name_the_field(change: Any, field: str) -> None:
    bad = secret("s", "www.test")
    change(bad)
    with pytest.raises(FieldError) as info:
        certificate_from_secret(bad)
    assert info.value.field == field


def test_a_key_that_does_not_match_is_refused() -> None:
    with pytest.raises(FieldError, match="does not match the certificate"):
        certificate_from_secret(secret("s", "www.test", key_of="other.test"))


def test_selection_exact_wildcard_default_and_problems_reported_alone() -> None:
    objects = [
        tls_ingress("www", "www.test", "www-tls"),
        tls_ingress("apps", "a.apps.test", "apps-tls"),
        tls_ingress("gone", "gone.test", "missing-tls"),
        tls_ingress("bad", "bad.test", "bad-tls"),
        tls_ingress("wrong-host", "other.test", "www-tls", tls_hosts=["other.test"]),
        {**tls_ingress("theirs", "theirs.test", "theirs-tls"), "spec": {
            **tls_ingress("theirs", "theirs.test", "theirs-tls")["spec"],
            "ingressClassName": "nginx"}},
        secret("www-tls", "www.test"), secret("apps-tls", "*.apps.test"),
        secret("bad-tls", "bad.test", key_of="x.test"), secret("theirs-tls", "theirs.test"),
        secret("fallback", "default.test"), secret("unused", "unused.test"),
    ]  # fmt: skip
    certs = certificates_from_objects(objects, default_secret=("default", "fallback"))
    assert certs.select("www.test").names == ("www.test",)  # type: ignore[union-attr]
    assert certs.select("x.apps.test").names == ("*.apps.test",)  # type: ignore[union-attr]
    assert certs.select("x.y.apps.test").names == ("default.test",)  # type: ignore[union-attr]
    assert certs.select(None).names == ("default.test",)  # type: ignore[union-attr]
    assert certs.select("theirs.test").names == ("default.test",)  # type: ignore[union-attr]
    assert certs.select("unused.test").names == ("default.test",)  # type: ignore[union-attr]
    errors = {str(e) for e in certs.errors}
    assert "Ingress default/gone: tls: Secret default/missing-tls not found" in errors
    assert any(e.startswith("Secret default/bad-tls: data[tls.key]") for e in errors)
    assert len(errors) == 2
    assert certs.notes == ("Ingress default/wrong-host: TLS host other.test is not covered by "
                           "Secret default/www-tls",)  # fmt: skip


def test_gateway_https_listeners_name_their_certificates() -> None:
    listeners = [
        {"name": "https", "protocol": "HTTPS", "port": 443, "hostname": "gw.test",
         "tls": {"certificateRefs": [{"name": "gw-tls"}]}},
        {"name": "other-ns", "protocol": "HTTPS", "port": 443,
         "tls": {"certificateRefs": [{"name": "x", "namespace": "elsewhere"}]}},
        {"name": "passthrough", "protocol": "TLS", "port": 8443,
         "tls": {"mode": "Passthrough"}},
    ]  # fmt: skip
    certs = certificates_from_objects([gateway(listeners=listeners), secret("gw-tls", "gw.test")])
    assert certs.select("gw.test").secret.name == "gw-tls"  # type: ignore[union-attr]
    (error,) = certs.errors
    assert "RefNotPermitted" in str(error)
    assert "ReferenceGrant" in str(error)
    assert "listeners[1]" in error.field


def grant(namespace: str, from_kind: str, from_namespace: str, name: str | None) -> dict[str, Any]:
    to: dict[str, Any] = {"group": "", "kind": "Secret"}
    if name is not None:
        to["name"] = name
    return {"apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "ReferenceGrant",
            "metadata": {"name": "g", "namespace": namespace},
            "spec": {"from": [{"group": "gateway.networking.k8s.io", "kind": from_kind,
                               "namespace": from_namespace}], "to": [to]}}  # fmt: skip


@pytest.mark.parametrize(("grants", "allowed"), [
    ([grant("certs", "Gateway", "default", "shared-tls")], True),
    ([grant("certs", "Gateway", "default", None)], True),  # every Secret in the namespace
    ([grant("certs", "Gateway", "default", "another")], False),
    ([grant("certs", "HTTPRoute", "default", "shared-tls")], False),  # for routes, not Gateways
    ([grant("certs", "Gateway", "team-b", "shared-tls")], False),  # for another namespace
    ([grant("default", "Gateway", "default", "shared-tls")], False),  # not in the Secret's
    ([], False),
])  # fmt: skip
def test_certificate_refs_to_another_namespace_need_a_reference_grant(
    grants: list[dict[str, Any]], allowed: bool
) -> None:
    # Gateway API GatewayTLSConfig.certificateRefs: a reference to another namespace is
    # invalid unless a ReferenceGrant in the target namespace allows it (RefNotPermitted).
    listeners = [{"name": "https", "protocol": "HTTPS", "port": 443, "hostname": "shared.test",
                  "tls": {"certificateRefs": [{"name": "shared-tls", "namespace": "certs"}]}}]  # fmt: skip
    objects = [gateway(listeners=listeners), secret("shared-tls", "shared.test", namespace="certs"),
               *grants]  # fmt: skip
    certs = certificates_from_objects(objects)
    if allowed:
        assert certs.errors == ()
        assert certs.select("shared.test").secret == ObjectRef("Secret", "certs", "shared-tls")  # type: ignore[union-attr]
    else:
        (error,) = certs.errors
        assert "RefNotPermitted" in str(error)
        assert certs.select("shared.test") is None


# -- over real TLS connections -------------------------------------------------------------------


async def https(port: int, server_name: str | None, path: str = "/", *, stream: Any = None) -> tuple[dict[str, Any], str, Any]:  # fmt: skip
    """(echoed request, certificate names, the stream) for one request over TLS."""
    if stream is None:
        context = ssl.create_default_context()
        CA.configure_trust(context)
        context.check_hostname = False  # the chain is verified; the names are asserted below
        stream = await anyio.connect_tcp("127.0.0.1", port, tls=True, ssl_context=context,
                                         tls_hostname=server_name, tls_standard_compatible=False)  # fmt: skip
    host = "www.test"  # the route; the server name only picks the certificate
    await stream.send(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    data = b""
    with anyio.fail_after(5):
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _length(data):
            data += await stream.receive()
    names = ",".join(v for k, v in stream.extra(TLSAttribute.peer_certificate)["subjectAltName"])
    return json.loads(data.split(b"\r\n\r\n", 1)[1]), names, stream


def _length(data: bytes) -> int:
    head = data.split(b"\r\n\r\n", 1)[0].lower()
    for line in head.split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 0


@pytest.fixture
async def served(front: str) -> AsyncIterator[tuple[int, MemorySource, TlsCertificates, int]]:
    async with anyio.create_task_group() as group:
        _, pod_port = await start_pods(group, "www", ["127.0.0.111"])
        source = MemorySource(objects=[
            tls_ingress("www", "www.test", "www-tls"), tls_ingress("apps", "a.apps.test", "apps-tls"),
            service("www"), endpoint_slice("www", pod_port, [("127.0.0.111", "ready")]),
            secret("www-tls", "www.test"), secret("apps-tls", "*.apps.test"),
            secret("fallback", "default.test"), secret("bad-tls", "bad.test", key_of="x.test"),
            tls_ingress("bad", "bad.test", "bad-tls"),
            {**tls_ingress("secure", "secure.test", "www-tls"), "metadata": {
                "name": "secure", "namespace": "default",
                "annotations": {"kroute.dev/ssl-redirect": "true"}}},
        ])  # fmt: skip
        router = Router([source])
        contexts = TlsContexts()
        certificates = TlsCertificates([source], contexts, default_secret=("default", "fallback"))
        port = await start_front(group, router, front, tls=contexts.server,
                                 hsts="max-age=31536000")  # fmt: skip
        plain = await start_front(group, router, front, hsts="max-age=31536000")
        yield port, source, certificates, plain
        if router.transport is not None:
            await router.transport.aclose()
        group.cancel_scope.cancel()


@pytest.mark.anyio
async def test_sni_picks_exact_wildcard_and_default(served: Any) -> None:
    port, _, certificates, _ = served
    answer, names, stream = await https(port, "www.test")
    assert names == "www.test"
    assert answer["headers"]["x-forwarded-proto"] == "https"
    await stream.aclose()
    for server_name, expected in [("a.apps.test", "*.apps.test"), ("nobody.test", "default.test"),
                                  (None, "default.test"), ("bad.test", "default.test")]:  # fmt: skip
        _, names, stream = await https(port, server_name)
        assert names == expected, server_name
        await stream.aclose()
    # The bad Secret is reported; nothing else suffers from it.
    (error,) = certificates.contexts.certificates.errors
    assert str(error).startswith("Secret default/bad-tls: data[tls.key]")


@pytest.mark.anyio
async def test_secret_update_switches_new_connections_and_keeps_open_ones(served: Any) -> None:
    port, source, certificates, _ = served
    _, _, before = await https(port, "www.test")
    old = before.extra(TLSAttribute.peer_certificate)["serialNumber"]
    source.apply(secret("www-tls", "www.test"))  # a renewed certificate
    assert certificates.reloads == 2
    _, _, after = await https(port, "www.test")
    assert after.extra(TLSAttribute.peer_certificate)["serialNumber"] != old
    answer, _, _ = await https(
        port, "www.test", "/again", stream=before
    )  # still open, still served
    assert answer["target"] == "/again"
    assert before.extra(TLSAttribute.peer_certificate)["serialNumber"] == old
    for stream in (before, after):
        await stream.aclose()
    # The default certificate (no SNI) is reloaded the same way.
    _, _, plain = await https(port, None)
    old_default = plain.extra(TLSAttribute.peer_certificate)["serialNumber"]
    await plain.aclose()
    source.apply(secret("fallback", "default.test"))
    _, names, plain = await https(port, None)
    assert names == "default.test"
    assert plain.extra(TLSAttribute.peer_certificate)["serialNumber"] != old_default
    await plain.aclose()


@pytest.mark.anyio
async def test_a_handshake_flood_does_not_stall_other_connections(served: Any) -> None:
    port, _, _, _ = served
    floods = []
    for i in range(40):
        flood = await anyio.connect_tcp("127.0.0.1", port)
        await flood.send(
            b"\x16\x03\x01\x02\x00" + bytes([i]) * 50 if i % 2 else b"GET / HTTP/1.1\r\n"
        )
        floods.append(flood)  # garbage, or half a ClientHello, left hanging
    with anyio.fail_after(5):
        for _ in range(5):
            answer, names, stream = await https(port, "www.test")
            assert names == "www.test"
            assert answer["target"] == "/"
            await stream.aclose()
    for flood in floods:
        await flood.aclose()


async def head_of(stream: Any, request: bytes) -> bytes:
    """Send one request (with Connection: close) and return the response head, lower case."""
    await stream.send(request)
    data = b""
    with anyio.fail_after(5), contextlib.suppress(anyio.EndOfStream):
        while True:
            data += await stream.receive()
    return data.split(b"\r\n\r\n")[0].lower()


@pytest.mark.anyio
async def test_ssl_redirect_and_hsts(served: Any) -> None:
    """An Ingress with kroute.dev/ssl-redirect sends plain HTTP to https with 308; over HTTPS
    it forwards, and HTTPS answers carry Strict-Transport-Security (plain ones never do)."""
    port, _, _, plain = served
    async with await anyio.connect_tcp("127.0.0.1", plain) as stream:
        head = await head_of(stream, b"GET /a/./b?q=1 HTTP/1.1\r\nHost: secure.test:8080\r\n"
                                     b"Connection: close\r\n\r\n")  # fmt: skip
    assert head.startswith(b"http/1.1 308")
    assert b"location: https://secure.test/a/b?q=1" in head
    assert b"strict-transport-security" not in head
    context = ssl.create_default_context()
    CA.configure_trust(context)
    context.check_hostname = False
    async with await anyio.connect_tcp("127.0.0.1", port, tls=True, ssl_context=context,
                                       tls_hostname="www.test", tls_standard_compatible=False) as tls:  # fmt: skip
        head = await head_of(tls, b"GET /x HTTP/1.1\r\nHost: secure.test\r\nConnection: close\r\n\r\n")  # fmt: skip
    assert head.startswith(b"http/1.1 200")
    assert b"strict-transport-security: max-age=31536000" in head


class FakeAcme:
    """A CertificateProvider as an ACME client would be: certificates it obtained itself."""

    def __init__(self, *hosts: str) -> None:
        self.hosts = hosts
        self.listeners: list[Any] = []
        self.current = [self.obtain()]

    def obtain(self) -> Certificate:
        cert = certificate_from_secret(secret("acme", *self.hosts))
        return attrs.evolve(cert, secret=ObjectRef("Order", "acme", "-".join(self.hosts)))

    def certificates(self) -> list[Certificate]:
        return self.current

    def subscribe(self, listener: Any) -> None:
        self.listeners.append(listener)

    def renew(self) -> None:
        self.current = [self.obtain()]
        for listener in self.listeners:
            listener()


def test_providers_add_certificates_and_admin_and_metrics_show_them() -> None:
    acme = FakeAcme("acme.test")
    source = MemorySource(objects=[tls_ingress("www", "www.test", "www-tls"),
                                   secret("www-tls", "www.test"), secret("fallback", "d.test")])  # fmt: skip
    tls = TlsCertificates([source], TlsContexts(), providers=[acme],
                          default_secret=("default", "fallback"))  # fmt: skip
    served = tls.contexts.certificates
    assert served.select("acme.test") == acme.current[0]
    first = acme.current[0].fingerprint
    acme.renew()
    assert tls.contexts.certificates.select("acme.test").fingerprint != first  # type: ignore[union-attr]
    state = certificates_json(tls)
    assert {c["secret"] for c in state["certificates"]} == {
        "Secret default/www-tls",
        "Order acme/acme.test",
        "Secret default/fallback",
    }
    assert state["default"]["names"] == ["d.test"]
    router = Router([source])
    text = Metrics(router, tls=tls).render()[0].decode()
    assert 'kroute_tls_cert_not_after{secret="Secret default/www-tls",subject="' in text
    assert certificates_json(None) == {"tls": False, "certificates": [], "errors": [], "notes": []}


@pytest.mark.anyio
async def test_example_gateway_terminates_tls_from_manifest_secrets(tmp_path: Path) -> None:
    """The example gateway with --tls-listen: certificates from the Secrets in the manifests,
    a renewed Secret file served on new connections, the state on the admin API."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples" / "gateway"))
    try:
        import gateway as example
    finally:
        sys.path.pop(0)
    async with anyio.create_task_group() as group:
        _, pod_port = await start_pods(group, "www", ["127.0.0.121"])
        objects = [tls_ingress("www", "www.test", "www-tls"), service("www"),
                   endpoint_slice("www", pod_port, [("127.0.0.121", "ready")]),
                   secret("fallback", "default.test")]  # fmt: skip
        (tmp_path / "objects.json").write_text(json.dumps(objects))
        (tmp_path / "secret.json").write_text(json.dumps(secret("www-tls", "www.test")))
        args = example.parse_args([
            "--manifests", str(tmp_path), "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0",
            "--tls-listen", "127.0.0.1:0", "--default-certificate", "default/fallback",
            "--hsts", "max-age=60", "--no-gc-freeze"])  # fmt: skip
        started = await group.start(example.serve, args)
        assert started.tls_port is not None
        with anyio.fail_after(10):
            while not started.router.ready:
                await anyio.sleep(0.02)
        answer, names, stream = await https(started.tls_port, "www.test")
        assert names == "www.test"
        assert answer["headers"]["x-forwarded-proto"] == "https"
        serial = stream.extra(TLSAttribute.peer_certificate)["serialNumber"]
        await stream.aclose()
        _, names, stream = await https(started.tls_port, None)
        assert names == "default.test"
        await stream.aclose()
        (tmp_path / "secret.json").write_text(json.dumps(secret("www-tls", "www.test")))

        async def renewed() -> bool:
            _, _, stream = await https(started.tls_port, "www.test")
            await stream.aclose()
            return bool(stream.extra(TLSAttribute.peer_certificate)["serialNumber"] != serial)

        with anyio.fail_after(10):
            while not await renewed():
                await anyio.sleep(0.1)
        admin = Client(started.admin_port)
        state = await admin.json("localhost", "/api/certificates")
        assert {c["secret"] for c in state["certificates"]} == {"Secret default/www-tls",
                                                                "Secret default/fallback"}  # fmt: skip
        await admin.aclose()
        group.cancel_scope.cancel()


def test_a_new_reference_grant_puts_the_certificate_in_service() -> None:
    listeners = [{"name": "https", "protocol": "HTTPS", "port": 443, "hostname": "shared.test",
                  "tls": {"certificateRefs": [{"name": "shared-tls", "namespace": "certs"}]}}]  # fmt: skip
    source = MemorySource(objects=[gateway(listeners=listeners),
                                   secret("shared-tls", "shared.test", namespace="certs")])  # fmt: skip
    tls = TlsCertificates([source], TlsContexts())
    assert tls.contexts.certificates.select("shared.test") is None
    source.apply(grant("certs", "Gateway", "default", "shared-tls"))  # a change of its own kind
    assert tls.contexts.certificates.select("shared.test") is not None


@pytest.mark.anyio
async def test_the_access_log_names_the_tls_version_and_cipher(front: str, tmp_path: Path) -> None:
    """Issue 22: TLSVersion and TLSCipher in the JSON line (FastGateway reads them as the
    request ends, on the serving loop; its writer makes the line)."""
    async with anyio.create_task_group() as group:
        _, pod_port = await start_pods(group, "www", ["127.0.0.111"])
        source = MemorySource(objects=[
            tls_ingress("www", "www.test", "www-tls"), service("www"),
            endpoint_slice("www", pod_port, [("127.0.0.111", "ready")]),
            secret("www-tls", "www.test")])  # fmt: skip
        router = Router([source])
        contexts = TlsContexts()
        TlsCertificates([source], contexts)
        with AccessLog(tmp_path / "access.log") as log:
            router.observers.append(log)
            port = await start_front(group, router, front, tls=contexts.server)
            _, _, stream = await https(port, "www.test")
            await stream.aclose()
            with anyio.fail_after(5):
                while not log.statistics().seen:
                    await anyio.sleep(0.01)
            assert await anyio.to_thread.run_sync(log.drain)
        (line,) = [json.loads(text) for text in (tmp_path / "access.log").read_text().splitlines()]
        assert line["RequestScheme"] == "https"
        assert line["TLSVersion"] == "1.3"
        assert line["TLSCipher"].startswith("TLS_")
        if router.transport is not None:
            await router.transport.aclose()
        group.cancel_scope.cancel()

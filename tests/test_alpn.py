"""TLS-ALPN-01 (RFC 8737): the validation certificate, the ClientHello reader (hostile input),
and the responder in both TLS fronts over real loopback connections: validators get the
validation certificate, everyone else the normal one, at the same name, at the same time."""

from __future__ import annotations

import datetime
import functools
import hashlib
import ssl
from collections.abc import AsyncIterator, Sequence

import anyio
import anyio.abc
import anyio.to_thread
import pytest
from anyio.streams.tls import TLSAttribute, TLSStream
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kroute.gateway.fast import FastGateway
from kroute.gateway.router import Router
from kroute.streams import Wrapping
from kroute.tls.alpn.certificate import ACME_IDENTIFIER, validation_certificate
from kroute.tls.alpn.challenges import ACME_TLS_1, REFUSED, checked_domain
from kroute.tls.alpn.hello import (
    MAX_INPUT,
    ClientHello,
    Incomplete,
    Malformed,
    parse_client_hello,
)
from kroute.tls.contexts import TlsCertificates, TlsContexts
from kroute.watch.sources import MemorySource
from tests.pods import endpoint_slice, service, start_front, start_pods
from tests.test_tls import CA, secret, tls_ingress

NOW = datetime.datetime(2026, 12, 6, tzinfo=datetime.UTC)
KEY = ec.generate_private_key(ec.SECP256R1())
KEY_AUTHORIZATION = (
    "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
)


# -- the validation certificate -------------------------------------------------------------------


def check_validation_certificate(der: bytes, domain: str, key_authorization: str) -> None:
    """RFC 8737 section 3, as a validator checks it."""
    cert = x509.load_der_x509_certificate(der)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.value.get_values_for_type(x509.DNSName) == [domain]
    assert len(list(san.value)) == 1  # exactly one name, a dNSName
    acme = cert.extensions.get_extension_for_oid(ACME_IDENTIFIER)
    assert acme.critical
    assert isinstance(acme.value, x509.UnrecognizedExtension)
    digest = hashlib.sha256(key_authorization.encode()).digest()
    assert acme.value.value == b"\x04\x20" + digest  # DER OCTET STRING (SIZE (32))
    assert cert.issuer == cert.subject  # self-signed, and the signature is its own
    public = cert.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert cert.signature_hash_algorithm is not None
    public.verify(cert.signature, cert.tbs_certificate_bytes,
                  ec.ECDSA(cert.signature_hash_algorithm))  # fmt: skip


def test_the_validation_certificate_is_rfc_8737s() -> None:
    made = validation_certificate("WWW.Example.test", KEY_AUTHORIZATION, key=KEY, now=NOW)
    assert made.domain == "www.example.test"
    cert = x509.load_pem_x509_certificate(made.chain)
    check_validation_certificate(cert.public_bytes(serialization.Encoding.DER),
                                 "www.example.test", KEY_AUTHORIZATION)  # fmt: skip
    assert cert.not_valid_before_utc <= NOW < cert.not_valid_after_utc
    assert cert.signature_hash_algorithm is not None
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    # The same input, the same certificate contents (the signature aside): nothing hidden.
    again = validation_certificate("www.example.test", KEY_AUTHORIZATION, key=KEY, now=NOW)
    assert x509.load_pem_x509_certificate(again.chain).tbs_certificate_bytes == (
        cert.tbs_certificate_bytes
    )


@pytest.mark.parametrize(("domain", "why"), [
    ("*.example.test", "wildcard"),
    ("192.0.2.1", "IP address"),
    ("2001:db8::1", "IP address"),
    ("under_score.test", "not a DNS name"),
    ("a" * 64 + ".test", "longer than 63"),
    ("", "not a DNS name"),
])  # fmt: skip
def test_names_tls_alpn_01_cannot_validate_are_refused(domain: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        checked_domain(domain)


# -- the ClientHello, as OpenSSL writes it and as an attacker does ------------------------------


def client_hello(server_name: str | None, alpn: list[str]) -> bytes:
    """The ClientHello the ssl module (OpenSSL) sends."""
    context = ssl.create_default_context()
    if alpn:
        context.set_alpn_protocols(alpn)
    tls = context.wrap_bio(ssl.MemoryBIO(), outgoing := ssl.MemoryBIO(),
                           server_hostname=server_name)  # fmt: skip
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def split_records(hello: bytes, sizes: list[int]) -> bytes:
    """The same handshake message in several records (RFC 8446 section 5.1)."""
    body, out = hello[5:], b""
    for size in sizes:
        if not body:
            break
        part, body = body[:size], body[size:]
        out += hello[:3] + len(part).to_bytes(2, "big") + part
    return out + (hello[:3] + len(body).to_bytes(2, "big") + body if body else b"")


#: Names the ssl module sends as SNI (not IP addresses: it sends none for those).
NAMES = st.from_regex(r"[a-z]([a-z0-9-]{0,20}[a-z0-9])?(\.[a-z0-9]{1,10}){0,3}", fullmatch=True)
PROTOCOLS = st.lists(st.sampled_from(["h2", "http/1.1", ACME_TLS_1, "x" * 200]),
                     max_size=4, unique=True)  # fmt: skip


@given(name=st.none() | NAMES, alpn=PROTOCOLS, sizes=st.lists(st.integers(1, 600), max_size=3))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_real_client_hellos_give_their_name_and_protocols(
    name: str | None, alpn: list[str], sizes: list[int]
) -> None:
    raw = split_records(client_hello(name, alpn), sizes)
    assert parse_client_hello(raw) == ClientHello(name, tuple(p.encode() for p in alpn))
    # Every prefix asks for more, and more than it has; never for more than MAX_INPUT.
    for cut in {0, 1, 4, 5, 6, 9, len(raw) // 2, len(raw) - 1}:
        answer = parse_client_hello(raw[:cut])
        assert isinstance(answer, Incomplete), cut
        assert cut < answer.needed <= MAX_INPUT


@given(st.binary(max_size=3000))
@settings(max_examples=300)
def test_any_bytes_give_an_answer(data: bytes) -> None:
    answer = parse_client_hello(data)
    assert isinstance(answer, ClientHello | Incomplete | Malformed)
    if isinstance(answer, Incomplete):
        assert len(data) < answer.needed <= MAX_INPUT


@given(alpn=PROTOCOLS, flips=st.lists(st.tuples(st.integers(0, 2000), st.integers(1, 255)),
                                      min_size=1, max_size=4))  # fmt: skip
@settings(max_examples=300, deadline=None)
def test_corrupted_client_hellos_give_an_answer(
    alpn: list[str], flips: list[tuple[int, int]]
) -> None:
    """Bytes changed anywhere (lengths included): an answer, never an exception."""
    raw = bytearray(client_hello("www.example.test", alpn))
    for at, mask in flips:
        raw[at % len(raw)] ^= mask
    answer = parse_client_hello(bytes(raw))
    assert isinstance(answer, ClientHello | Incomplete | Malformed)


def hello_with(extensions: bytes) -> bytes:
    body = b"\x03\x03" + bytes(32) + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00"
    body += len(extensions).to_bytes(2, "big") + extensions
    message = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + len(message).to_bytes(2, "big") + message


def sni(*entries: bytes) -> bytes:
    names = b"".join(b"\x00" + len(e).to_bytes(2, "big") + e for e in entries)
    content = len(names).to_bytes(2, "big") + names
    return b"\x00\x00" + len(content).to_bytes(2, "big") + content


def alpn_extension(*names: bytes) -> bytes:
    listed = b"".join(len(n).to_bytes(1, "big") + n for n in names)
    content = len(listed).to_bytes(2, "big") + listed
    return b"\x00\x10" + len(content).to_bytes(2, "big") + content


@pytest.mark.parametrize(("raw", "expected"), [
    (hello_with(sni(b"A.Test") + alpn_extension(b"acme-tls/1")), ClientHello("a.test", (b"acme-tls/1",))),
    (hello_with(b""), ClientHello(None, ())),
    (hello_with(sni(b"a.test") + sni(b"b.test")), "extension 0 twice"),
    (hello_with(sni(b"a.test", b"b.test")), "more than one server name"),
    (hello_with(sni(b"a\x00.test")), "not an ASCII host name"),
    (hello_with(sni(b"\xc3\xa9.test")), "not an ASCII host name"),
    (hello_with(alpn_extension(b"")), "empty ALPN protocol name"),
    (hello_with(alpn_extension()), "malformed ALPN list"),
    (b"GET / HTTP/1.1\r\n\r\n", "not a TLS handshake record"),
    (b"\x80\x2e\x01\x03\x01", "not a TLS handshake record"),  # SSLv2 hello
    (b"\x16\x03\x01\x00\x04\x02\x00\x00\x00", "not a ClientHello"),
    (b"\x16\x03\x01\x00\x04\x01\x01\x00\x00", "a ClientHello of 65540 bytes"),
    (b"\x16\x03\x01\x00\x00", "record length 0"),
])  # fmt: skip
def test_hand_made_client_hellos(raw: bytes, expected: ClientHello | str) -> None:
    answer = parse_client_hello(raw)
    if isinstance(expected, str):
        assert isinstance(answer, Malformed)
        assert expected in answer.reason
    else:
        assert answer == expected


def test_what_each_hello_gets() -> None:
    contexts = TlsContexts()
    challenges = contexts.challenges
    changes: list[tuple[str, ...]] = []
    challenges.subscribe(lambda: changes.append(challenges.domains))
    challenges.add("A.test.", KEY_AUTHORIZATION)
    assert "a.test" in challenges
    assert "A.TEST." in challenges
    validation = challenges.context_for("a.test")
    assert validation is not None
    acme = ClientHello("a.test", (b"h2", b"acme-tls/1"))
    assert challenges.answer(acme) is validation
    assert challenges.answer(ClientHello("b.test", (b"acme-tls/1",))) is REFUSED
    assert challenges.answer(ClientHello(None, (b"acme-tls/1",))) is REFUSED
    assert challenges.answer(ClientHello("a.test", (b"h2", b"http/1.1"))) is None
    assert challenges.answer(ClientHello("a.test", ())) is None
    assert challenges.answer(Malformed("x")) is None  # the ssl module's to refuse
    challenges.remove("a.test")
    challenges.remove("a.test")  # nothing pending: nothing happens
    assert not challenges
    assert changes == [("a.test",), ()]


# -- over real connections, on both fronts ----------------------------------------------------


@pytest.fixture
async def served(front: str) -> AsyncIterator[tuple[int, TlsContexts]]:
    """www.test (its normal certificate from a Secret) served on `front` with the responder."""
    async with anyio.create_task_group() as group:
        _, pod_port = await start_pods(group, "www", ["127.0.0.111"])
        source = MemorySource(objects=[
            tls_ingress("www", "www.test", "www-tls"), secret("www-tls", "www.test"),
            service("www"), endpoint_slice("www", pod_port, [("127.0.0.111", "ready")]),
        ])  # fmt: skip
        router = Router([source])
        contexts = TlsContexts()
        TlsCertificates([source], contexts)
        port = await start_front(group, router, front, tls=contexts.server,
                                 challenges=contexts.challenges)  # fmt: skip
        yield port, contexts
        if router.transport is not None:
            await router.transport.aclose()
        group.cancel_scope.cancel()


def client_context(alpn: list[str], *, verify: bool) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if verify:
        CA.configure_trust(context)
    else:  # what a validator does: the certificate is self-signed, its contents are checked
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if alpn:
        context.set_alpn_protocols(alpn)
    return context


class FirstWriteSplit(Wrapping):
    """A stream whose first write (the ClientHello) arrives in two parts: the server has read
    the first when the second is sent."""

    split = True

    async def send(self, item: bytes) -> None:
        if self.split:
            self.split = False
            await self.stream.send(item[:7])
            await anyio.wait_all_tasks_blocked()
            item = item[7:]
        await self.stream.send(item)


async def handshake(
    port: int, server_name: str, alpn: list[str], *, verify: bool = False, split: bool = False
) -> TLSStream:
    tcp: anyio.abc.ByteStream = await anyio.connect_tcp("127.0.0.1", port)
    try:
        with anyio.fail_after(5):
            return await TLSStream.wrap(
                FirstWriteSplit(tcp) if split else tcp, hostname=server_name,
                ssl_context=client_context(alpn, verify=verify), standard_compatible=False,
            )  # fmt: skip
    except BaseException:
        await tcp.aclose()
        raise


async def get(stream: TLSStream) -> bytes:
    """One request's answer, or what arrives before the server closes."""
    await stream.send(b"GET /x HTTP/1.1\r\nHost: www.test\r\nConnection: close\r\n\r\n")
    data = b""
    with anyio.fail_after(5):
        try:
            while True:
                data += await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return data


def peer_der(stream: TLSStream) -> bytes:
    der = stream.extra(TLSAttribute.ssl_object).getpeercert(binary_form=True)
    assert der is not None
    return der


async def validates(port: int, *, split: bool = False) -> None:
    """A validator for www.test gets the validation certificate, acme-tls/1, and no HTTP."""
    validator = await handshake(port, "www.test", [ACME_TLS_1], split=split)
    assert validator.extra(TLSAttribute.alpn_protocol) == ACME_TLS_1
    check_validation_certificate(peer_der(validator), "www.test", KEY_AUTHORIZATION)
    assert await get(validator) == b""  # closed after the handshake
    await validator.aclose()


async def browses(port: int, alpn: Sequence[str] = ("http/1.1",), *, split: bool = False) -> None:
    """A client of www.test gets the normal (CA-issued) certificate and its request served."""
    browser = await handshake(port, "www.test", list(alpn), verify=True, split=split)
    assert browser.extra(TLSAttribute.alpn_protocol) == ("http/1.1" if alpn else None)
    answer = await get(browser)
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert b'"target": "/x"' in answer  # served by the pod
    await browser.aclose()


@pytest.mark.anyio
async def test_validators_get_the_validation_certificate_and_browsers_the_normal_one(
    served: tuple[int, TlsContexts],
) -> None:
    port, contexts = served
    await browses(port)  # before: as always
    contexts.challenges.add("www.test", KEY_AUTHORIZATION)
    for split in (False, True):
        await validates(port, split=split)
        for alpn in (["h2", "http/1.1"], ["http/1.1"], []):  # browsers, curl, others
            await browses(port, alpn, split=split)


@pytest.mark.anyio
async def test_a_challenge_added_on_another_thread_is_answered_when_add_returns(
    served: tuple[int, TlsContexts],
) -> None:
    """ACME issuance runs off the event loop: add() there returns once the fronts answer."""
    port, contexts = served
    for _ in range(3):
        await anyio.to_thread.run_sync(contexts.challenges.add, "www.test", KEY_AUTHORIZATION)
        await validates(port)
        await anyio.to_thread.run_sync(contexts.challenges.remove, "www.test")


@pytest.mark.anyio
async def test_acme_tls_1_without_a_challenge_for_the_name_gets_no_certificate(
    served: tuple[int, TlsContexts],
) -> None:
    port, contexts = served
    contexts.challenges.add("other.test", KEY_AUTHORIZATION)
    with pytest.raises(ssl.SSLError, match="no application protocol"):
        await handshake(port, "www.test", [ACME_TLS_1])


@pytest.mark.anyio
async def test_remove_ends_the_challenge(served: tuple[int, TlsContexts]) -> None:
    """After remove() the name is served as before any challenge: a validator gets neither the
    validation certificate nor acme-tls/1 (the ssl module then negotiates no protocol)."""
    port, contexts = served
    challenges = contexts.challenges
    for _ in range(2):  # FastGateway switches to peeking and back, twice
        challenges.add("www.test", KEY_AUTHORIZATION)
        await validates(port)
        challenges.remove("www.test")
        after = await handshake(port, "www.test", [ACME_TLS_1], verify=True)
        assert after.extra(TLSAttribute.alpn_protocol) is None
        cert = x509.load_der_x509_certificate(peer_der(after))
        with pytest.raises(x509.ExtensionNotFound):
            cert.extensions.get_extension_for_oid(ACME_IDENTIFIER)
        await after.aclose()
        await browses(port)


@pytest.mark.anyio
async def test_garbage_and_half_client_hellos_do_not_stall_a_challenge(
    served: tuple[int, TlsContexts],
) -> None:
    port, contexts = served
    contexts.challenges.add("www.test", KEY_AUTHORIZATION)
    hello = client_hello("www.test", [ACME_TLS_1])
    floods = []
    for i in range(30):
        flood = await anyio.connect_tcp("127.0.0.1", port)
        await flood.send([b"GET / HTTP/1.1\r\n", hello[: 3 + i], b"\x16\x03\x01\xff\xff"][i % 3])
        floods.append(flood)  # left hanging
    await validates(port)
    await browses(port)
    for flood in floods:
        await flood.aclose()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("pending", [False, True])
@pytest.mark.anyio
async def test_fast_gateway_shuts_down_with_the_responder(pending: bool) -> None:
    """Shutdown closes what is listening, asyncio's server or the peeking accept loop."""
    contexts = TlsContexts()
    gateway = FastGateway(Router([MemorySource()]), scheme="https")
    async with anyio.create_task_group() as group:
        serving = functools.partial(gateway.serve, tls=contexts.server,
                                    challenges=contexts.challenges)  # fmt: skip
        port = await group.start(serving, "127.0.0.1", 0)
        if pending:
            contexts.challenges.add("www.test", KEY_AUTHORIZATION)
        await gateway.shutdown(grace=1)
    with pytest.raises(OSError, match="connection attempts failed"):  # refused
        await anyio.connect_tcp("127.0.0.1", port)
    contexts.challenges.remove("www.test")  # nobody listens to the registry any more

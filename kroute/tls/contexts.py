"""TlsContexts: ssl contexts for a CertificateSet, picked by SNI, swapped as certificates change,
and the TLS-ALPN-01 challenges pending (`kroute.tls.alpn`); TlsCertificates: keeps a TlsContexts
current from sources.

One server context is what listeners get (anyio's TLSListener for HttpServer, `ssl=` for
FastGateway): TLS 1.2 or newer by default, the ssl module's secure default ciphers unless told
otherwise, ALPN `http/1.1`, and an `sni_callback` that hands each handshake the context of the
certificate its server name selects (exact name, wildcard, default; `certs.py`). A context is
built once per certificate (by fingerprint) and reused; `update()` swaps the mapping in one
assignment, so new handshakes see new certificates while open connections keep theirs. The
default certificate, which clients that send no server name get, is loaded into the server
context itself (OpenSSL applies a newly loaded certificate to new connections only).
"""

from __future__ import annotations

import datetime
import logging
import os
import ssl
import tempfile
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric import ec

from kroute.tls.alpn.certificate import validation_certificate
from kroute.tls.alpn.challenges import ACME_TLS_1, AlpnChallenges
from kroute.tls.certs import Certificate, CertificateSet, certificates_from_objects
from kroute.watch import kinds
from kroute.watch.sources import Source
from kroute.watch.store import Change

_log = logging.getLogger(__name__)

#: What certificate selection reads.
TLS_KINDS = frozenset({
    kinds.SECRET, kinds.INGRESS, kinds.INGRESS_CLASS, kinds.GATEWAY, kinds.REFERENCE_GRANT,
    kinds.INGRESS_ROUTE,
})  # fmt: skip


class TlsContexts:
    """The server context and the per-certificate contexts behind it (see the module docstring)."""

    def __init__(
        self,
        *,
        minimum_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2,
        ciphers: str | None = None,
        alpn: Sequence[str] = ("http/1.1",),
    ) -> None:
        self.minimum_version = minimum_version
        self.ciphers = ciphers
        self.alpn = list(alpn)
        self.server = self._context()
        self.server.sni_callback = self._select
        self.certificates = CertificateSet()
        #: Certificates that parsed but OpenSSL refused, with the reason.
        self.problems: tuple[str, ...] = ()
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._default: str | None = None
        #: TLS-ALPN-01 challenges (RFC 8737) the TLS fronts answer: ACME issuance adds and
        #: removes them; give it to `HandshakeListener` and `FastGateway.serve`.
        self.challenges = AlpnChallenges(self._validation)

    def _context(self, alpn: Sequence[str] | None = None) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = self.minimum_version
        if self.ciphers is not None:
            context.set_ciphers(self.ciphers)
        context.set_alpn_protocols(self.alpn if alpn is None else alpn)
        return context

    def _validation(self, domain: str, key_authorization: str) -> ssl.SSLContext:
        """The context of one TLS-ALPN-01 challenge: a new key, its validation certificate
        (RFC 8737 section 3), ALPN acme-tls/1 only."""
        now = datetime.datetime.now(datetime.UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        made = validation_certificate(domain, key_authorization, key=key, now=now)
        context = self._context([ACME_TLS_1])
        _load(context, made.chain, made.key)
        return context

    def update(self, certificates: CertificateSet) -> None:
        """Serve `certificates` from the next handshake on."""
        contexts: dict[str, ssl.SSLContext] = {}
        problems = []
        for cert in certificates.certificates:
            context = self._contexts.get(cert.fingerprint)
            if context is None:
                try:
                    context = self._context()
                    _load(context, cert.chain, cert.key)
                except (ssl.SSLError, OSError) as exc:
                    problems.append(f"Secret {cert.secret.namespace}/{cert.secret.name}: {exc}")
                    continue
            contexts[cert.fingerprint] = context
        default = certificates.default
        if default is None or default.fingerprint not in contexts:
            self._default = None  # unknown names are refused (no-SNI clients: see docs/tls.md)
        elif default.fingerprint != self._default:
            _load(self.server, default.chain, default.key)
            self._default = default.fingerprint
        _log_changes(self.certificates, certificates, self.problems, problems)
        self._contexts = contexts  # the swap
        self.certificates = certificates
        self.problems = tuple(problems)

    def _select(self, connection: ssl.SSLObject, server_name: str | None, _: Any) -> int | None:
        cert = self.certificates.select(server_name)
        context = self._contexts.get(cert.fingerprint) if cert is not None else None
        if context is None:
            if self._default is not None:
                return None  # the server context's certificate: the default
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        connection.context = context
        return None


def _log_changes(
    before: CertificateSet, after: CertificateSet, problems: Sequence[str], now: Sequence[str]
) -> None:
    """Log the certificates a reload starts or stops serving (by Secret and subject) and the
    problems it meets for the first time: a reload that changes nothing says nothing."""
    old = {cert.fingerprint: cert for cert in before.certificates}
    new = {cert.fingerprint: cert for cert in after.certificates}
    for fingerprint in new.keys() - old.keys():
        cert = new[fingerprint]
        _log.info("TLS: serving %s from %s (expires %s)", cert.subject, cert.secret,
                  cert.not_after.date())  # fmt: skip
    for fingerprint in old.keys() - new.keys():
        cert = old[fingerprint]
        _log.info("TLS: no longer serving %s from %s", cert.subject, cert.secret)
    for problem in set(now) - set(problems):
        _log.warning("TLS: certificate not served: %s", problem)


def _load(context: ssl.SSLContext, chain_pem: bytes, key_pem: bytes) -> None:
    """load_cert_chain reads files only: the PEM goes through a private temporary directory."""
    with tempfile.TemporaryDirectory(prefix="kroute-tls-") as directory:
        os.chmod(directory, 0o700)
        chain, key = os.path.join(directory, "tls.crt"), os.path.join(directory, "tls.key")
        for path, data in ((chain, chain_pem), (key, key_pem)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as file:
                file.write(data)
        context.load_cert_chain(chain, key)


class CertificateProvider(Protocol):
    """Certificates from somewhere other than Secrets (the seam for ACME): what it holds now, and
    a way to say that changed."""

    def certificates(self) -> Sequence[Certificate]: ...

    def subscribe(self, listener: Callable[[], None]) -> None: ...


class TlsCertificates:
    """Keeps `contexts` serving the certificates that `sources` name, and those `providers`
    hold, as Secrets, Ingresses, Gateways and providers change (a change is in effect before the
    source's next event)."""

    def __init__(
        self,
        sources: Sequence[Source],
        contexts: TlsContexts,
        *,
        ingress_class: str = "kroute",
        gateway_class: str = "kroute",
        default_secret: tuple[str, str] | None = None,
        providers: Sequence[CertificateProvider] = (),
    ) -> None:
        self.sources = list(sources)
        self.providers = list(providers)
        self.contexts = contexts
        self.ingress_class = ingress_class
        self.gateway_class = gateway_class
        self.default_secret = default_secret
        self.reloads = 0
        for source in self.sources:
            source.subscribe(self._changed)
        for provider in self.providers:
            provider.subscribe(self.reload)
        self.reload()

    def reload(self) -> None:
        objects = [
            obj
            for source in self.sources
            for kind in TLS_KINDS
            if kind in source.stores
            for obj in source.stores[kind].snapshot().values()
        ]
        self.contexts.update(certificates_from_objects(
            objects, ingress_class=self.ingress_class, gateway_class=self.gateway_class,
            default_secret=self.default_secret,
            extra=[cert for provider in self.providers for cert in provider.certificates()],
        ))  # fmt: skip
        self.reloads += 1

    def _changed(self, kind: kinds.Kind, changes: Sequence[Change]) -> None:
        if kind in TLS_KINDS:
            self.reload()

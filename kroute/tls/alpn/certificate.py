"""The TLS-ALPN-01 validation certificate (RFC 8737 section 3), pure: values in, PEM out."""

from __future__ import annotations

import datetime
import hashlib

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ObjectIdentifier

from kroute.tls.alpn.challenges import checked_domain

#: id-pe-acmeIdentifier (RFC 8737 section 6.1).
ACME_IDENTIFIER = ObjectIdentifier("1.3.6.1.5.5.7.1.31")
#: How long a validation certificate says it is valid (validators do not check; RFC 8737
#: asks nothing of the validity period).
_VALIDITY = datetime.timedelta(days=7)


@attrs.frozen
class ValidationCertificate:
    """A TLS-ALPN-01 validation certificate and its key, PEM (what an SSLContext loads)."""

    domain: str
    chain: bytes = attrs.field(repr=False)
    key: bytes = attrs.field(repr=False)


def validation_certificate(
    domain: str,
    key_authorization: str,
    *,
    key: ec.EllipticCurvePrivateKey,
    now: datetime.datetime,
) -> ValidationCertificate:
    """The self-signed validation certificate of RFC 8737 section 3 for `domain`: exactly one
    subjectAltName, the dNSName `domain`, and the critical acmeIdentifier extension whose value
    is the DER OCTET STRING of SHA-256(`key_authorization`). `key` signs it and is its key;
    `now` starts its validity. ValueError names a domain that cannot have one."""
    name = checked_domain(domain)
    digest = hashlib.sha256(key_authorization.encode("ascii")).digest()
    # Authorization ::= OCTET STRING (SIZE (32)): tag 4, length 32, the digest (section 6.1).
    authorization = b"\x04\x20" + digest
    subject = x509.Name([])  # nothing but the SAN names it (RFC 5280 section 4.2.1.6)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(int.from_bytes(digest[:8], "big") >> 1 | 1)  # positive, from the input
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        # An empty subject makes the subjectAltName critical (RFC 5280 section 4.2.1.6).
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=True)
        .add_extension(x509.UnrecognizedExtension(ACME_IDENTIFIER, authorization), critical=True)
        .sign(key, hashes.SHA256())
    )
    return ValidationCertificate(
        domain=name,
        chain=certificate.public_bytes(serialization.Encoding.PEM),
        key=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )

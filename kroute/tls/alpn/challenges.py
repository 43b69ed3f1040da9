"""The TLS-ALPN-01 challenges pending (`AlpnChallenges`), and what a ClientHello gets from them
(`AlpnChallenges.answer`). No cryptography here: the validation certificates are made by
whoever builds the registry (`TlsContexts`, with `certificate.validation_certificate`)."""

from __future__ import annotations

import ipaddress
import ssl
import threading
from collections.abc import Callable, Mapping

from kroute.objects import FieldError
from kroute.rules.hostnames import check_hostname
from kroute.tls.alpn.hello import ClientHello, Parsed

#: The ALPN protocol of TLS-ALPN-01 validation (RFC 8737 section 6.2).
ACME_TLS_1 = "acme-tls/1"
_ACME_TLS_1 = ACME_TLS_1.encode()


def checked_domain(domain: str) -> str:
    """`domain` lower-cased, or ValueError: TLS-ALPN-01 validates DNS names only, never
    wildcards (their authorizations are validated by DNS-01, RFC 8555 section 7.1.3), and IP
    addresses (RFC 8738 section 6) are not supported here."""
    bare = domain.rstrip(".")
    try:
        ipaddress.ip_address(bare)
    except ValueError:
        pass
    else:
        raise ValueError(f"TLS-ALPN-01 for IP address {domain!r} is not supported (RFC 8738)")
    if bare.startswith("*."):
        raise ValueError(f"TLS-ALPN-01 cannot validate the wildcard {domain!r}")
    try:
        return check_hostname(bare, "domain")
    except FieldError as exc:
        raise ValueError(f"TLS-ALPN-01 domain: {exc.reason}") from None


class Refused:
    """`AlpnChallenges.answer`: `acme-tls/1` for a name with no challenge pending."""


REFUSED = Refused()


class AlpnChallenges:
    """The TLS-ALPN-01 challenges pending, by domain, each with the SSLContext that serves its
    validation certificate: `context(domain, key_authorization)` makes it (TlsContexts' makes
    a key, the certificate, and a context with its settings and ALPN acme-tls/1 only).

    `add` and `remove` may be called from any thread (ACME issuance runs off the event loop):
    the mapping is replaced whole, never changed in place, so the fronts read it without a
    lock. Listeners (`subscribe`) are called after each change, on the caller's thread."""

    def __init__(self, context: Callable[[str, str], ssl.SSLContext]) -> None:
        self._context = context
        self._pending: Mapping[str, ssl.SSLContext] = {}
        self._lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []

    def add(self, domain: str, key_authorization: str) -> None:
        """Answer TLS-ALPN-01 for `domain` with `key_authorization` from now on (replacing a
        challenge already pending for it). Call before telling the CA the challenge is ready.
        ValueError for a domain TLS-ALPN-01 cannot validate (`checked_domain`)."""
        name = checked_domain(domain)
        context = self._context(name, key_authorization)
        with self._lock:
            self._pending = {**self._pending, name: context}
        self._changed()

    def remove(self, domain: str) -> None:
        """Stop answering for `domain` (nothing happens if nothing is pending for it)."""
        name = domain.lower().rstrip(".")
        with self._lock:
            if name not in self._pending:
                return
            self._pending = {d: c for d, c in self._pending.items() if d != name}
        self._changed()

    def context_for(self, server_name: str | None) -> ssl.SSLContext | None:
        """The validation context of a pending name, else None."""
        return self._pending.get(server_name) if server_name else None

    def answer(self, hello: Parsed) -> ssl.SSLContext | Refused | None:
        """What a connection that sent `hello` gets: a validation context, REFUSED (an alert),
        or None: the normal contexts, as without challenges (also for hellos kroute does not
        read, which the ssl module then refuses or serves as it always does)."""
        if not isinstance(hello, ClientHello) or _ACME_TLS_1 not in hello.alpn:
            return None
        return self.context_for(hello.server_name) or REFUSED

    @property
    def domains(self) -> tuple[str, ...]:
        return tuple(sorted(self._pending))

    def __bool__(self) -> bool:
        return bool(self._pending)

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, domain: object) -> bool:
        return isinstance(domain, str) and domain.lower().rstrip(".") in self._pending

    def subscribe(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def unsubscribe(self, listener: Callable[[], None]) -> None:
        self._listeners.remove(listener)

    def _changed(self) -> None:
        for listener in list(self._listeners):
            listener()

"""The ACME protocol (RFC 8555), on certbot's `acme` package, off the event loop.

certbot's `acme` is the reference client, kept by the EFF with Let's Encrypt; it speaks JWS,
nonces, accounts, orders and finalization. Its calls block (requests), so each runs in a worker
thread (`anyio.to_thread`), one HTTP exchange or two at a time, and the waiting between them
(polling an authorization, the order) is done here on the event loop, where it can be cancelled
the moment leadership ends:

- **badNonce** (section 6.5: a server may refuse any nonce; Pebble refuses 5%): `acme` retries
  once with the fresh nonce; a second refusal in a row is retried here, up to `NONCE_RETRIES`.
- **Authorization reuse** (section 7.1.3): an order whose authorization is already valid (the
  same account proved the name recently) has no challenge to answer.
- **Polling** waits `first_poll` after answering (validation is usually done by then), then as
  each answer's `Retry-After` says (section 8.2), within `max_poll`, until `timeout`.
- **Account**: its key is the account (section 7.3): registering with a key that already has
  an account answers with that account, so a key kept in a Secret is one account for every
  replica and every restart.
"""

from __future__ import annotations

import datetime
import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

import anyio
import anyio.to_thread
import attrs

from kroute.errors import ConfigError

try:
    import requests
    from acme import challenges, crypto_util, errors, messages
    from acme import client as acme_client
except ImportError:  # pragma: no cover (the test environment has the extra)
    raise ConfigError("ACME certificates need certbot's acme: pip install 'kroute[acme]'") from None
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from josepy.jwa import ES256, ES384, RS256, JWASignature
from josepy.jwk import JWK, JWKEC, JWKRSA

from kroute.acme import tlsalpn
from kroute.acme.resolvers import HTTP_01, Resolver

_log = logging.getLogger(__name__)
_T = TypeVar("_T")
NONCE_RETRIES = 5
ERROR_PREFIX = "urn:ietf:params:acme:error:"


class AcmeFailure(Exception):
    """An order that did not give a certificate: `problem` is the RFC 8555 error type (after
    `urn:ietf:params:acme:error:`; None when the failure is not the server's verdict, such as
    an unreachable server), `detail` what to tell the user."""

    def __init__(self, problem: str | None, detail: str, retry_after: float | None = None):
        super().__init__(f"{problem}: {detail}" if problem else detail)
        self.problem = problem
        self.detail = detail
        self.retry_after = retry_after


class Responder(Protocol):
    """Where challenges are answered: HTTP-01 tokens (`kroute.acme.http01`, shared through a
    Secret), TLS-ALPN-01 validation certificates (`kroute.tls.alpn`)."""

    async def present(self, challenge: str, domain: str, token: str, key_auth: str) -> None: ...

    async def cleanup(self, challenge: str, domain: str, token: str) -> None: ...


@attrs.frozen
class Polling:
    first_poll: float = 0.5
    max_poll: float = 10.0
    timeout: float = 120.0


def new_key(key_type: str) -> bytes:
    """A new private key (PEM, PKCS#8) of a resolver's `keytype`."""
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    if key_type.startswith("EC"):
        key = ec.generate_private_key(ec.SECP256R1() if key_type == "EC256" else ec.SECP384R1())
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[3:]))
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())  # fmt: skip


def _jwk(pem: bytes) -> tuple[JWK, JWASignature]:
    key = serialization.load_pem_private_key(pem, password=None)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        alg = ES384 if key.curve.key_size == 384 else ES256
        return JWKEC(key=key), alg
    if isinstance(key, rsa.RSAPrivateKey):
        return JWKRSA(key=key), RS256
    raise ValueError("an ACME account key is an EC or RSA private key")


def failure_of(exc: BaseException) -> AcmeFailure:
    """What an `acme` or network exception means for the order (module docstring)."""
    if isinstance(exc, AcmeFailure):
        return exc
    if isinstance(exc, messages.Error):
        return AcmeFailure(exc.code, exc.detail or str(exc))
    if isinstance(exc, errors.ValidationError):
        for authzr in exc.failed_authzrs:
            for challb in authzr.body.challenges:
                if challb.error is not None:
                    return _challenge_failure(authzr.body.identifier.value, challb.error)
        return AcmeFailure(None, "validation failed")
    if isinstance(exc, errors.IssuanceError):
        return failure_of(exc.error)
    if isinstance(exc, errors.TimeoutError):
        return AcmeFailure(None, "the ACME server did not finish in time")
    if isinstance(exc, requests.RequestException):
        return AcmeFailure(None, f"the ACME server is unreachable ({type(exc).__name__})")
    return AcmeFailure(None, f"{type(exc).__name__}: {exc}")


def _challenge_failure(domain: str, error: messages.Error) -> AcmeFailure:
    return AcmeFailure(error.code, f"{domain}: {error.detail or error.typ}")


class AcmeClient:
    """One resolver's account at its ACME server (module docstring). `connect` first."""

    def __init__(self, resolver: Resolver, account_key: bytes, *, polling: Polling = Polling()):
        self.resolver = resolver
        self.polling = polling
        self._key, alg = _jwk(account_key)
        verify: Any = resolver.ca_bundle or True  # (requests' `verify`: a bundle path or a flag)
        self._net = acme_client.ClientNetwork(self._key, alg=alg, verify_ssl=verify,
                                              user_agent="kroute")  # fmt: skip
        self._client: acme_client.ClientV2 | None = None
        #: The account's URL, once registered or found.
        self.account: str | None = None

    async def connect(self) -> None:
        """Read the directory; register the account, or find the key's account."""
        directory = await self._call(acme_client.ClientV2.get_directory,
                                     self.resolver.directory, self._net)  # fmt: skip
        client = acme_client.ClientV2(directory, self._net)
        registration = messages.NewRegistration.from_data(
            email=self.resolver.email, terms_of_service_agreed=True
        )
        try:
            account = await self._call(client.new_account, registration)
        except errors.ConflictError as exists:  # (this key's account: section 7.3.1)
            found = messages.RegistrationResource(uri=exists.location, body=messages.Registration())
            self._net.account = found
            account = found
        self.account = account.uri
        self._client = client

    def close(self) -> None:
        """Close the connections to the ACME server (requests' pool: left to the garbage
        collector, its sockets would be finalized in no particular order)."""
        self._net.session.close()

    @property
    def offers_renewal_info(self) -> bool:
        if self._client is None:
            return False
        try:
            return bool(self._client.directory["renewalInfo"])
        except KeyError:
            return False

    async def renewal_time(self, chain: bytes) -> datetime.datetime | None:
        """A time in the server's suggested renewal window for the certificate (RFC 9773,
        drawn by `acme`), None when the server offers no renewal information."""
        client = self._ready()
        if not self.offers_renewal_info:
            return None
        try:
            when, _ = await self._call(client.renewal_time, chain)
        except errors.ARIError as exc:
            _log.info("ACME %s: no renewal information: %s", self.resolver.name, exc)
            return None
        if when is None:
            return None
        return when if when.tzinfo else when.replace(tzinfo=datetime.UTC)

    async def order(self, names: Sequence[str], key: bytes, responder: Responder) -> str:
        """A certificate for `names` with private key `key` (PEM): the full chain (PEM).
        AcmeFailure when the server says no or does not answer in time."""
        client = self._ready()
        try:
            with anyio.fail_after(self.polling.timeout):
                csr = crypto_util.make_csr(key, list(names))
                order = await self._call(client.new_order, csr, self.resolver.profile)
                presented: list[tuple[str, str]] = []
                try:
                    await self._authorize(client, order, responder, presented)
                finally:
                    with anyio.CancelScope(shield=True):
                        for domain, token in presented:
                            await responder.cleanup(self.resolver.challenge, domain, token)
                deadline = datetime.datetime.now() + datetime.timedelta(
                    seconds=self.polling.timeout
                )
                done = await self._call(client.finalize_order, order, deadline)
        except TimeoutError:
            raise AcmeFailure(None, "the ACME server did not finish in time") from None
        except (errors.Error, messages.Error, requests.RequestException) as exc:
            raise failure_of(exc) from None
        return str(done.fullchain_pem)

    async def _authorize(
        self,
        client: acme_client.ClientV2,
        order: messages.OrderResource,
        responder: Responder,
        presented: list[tuple[str, str]],
    ) -> None:
        """Answer each pending authorization's challenge, then wait for all to be valid."""
        wanted = challenges.HTTP01 if self.resolver.challenge == HTTP_01 else tlsalpn.CHALLENGE
        pending = []
        for authzr in order.authorizations:
            if authzr.body.status == messages.STATUS_VALID:
                continue  # reused: nothing to prove (section 7.1.3)
            domain = authzr.body.identifier.value
            found = [c for c in authzr.body.challenges if isinstance(c.chall, wanted)]
            if not found:
                raise AcmeFailure(None, f"{domain}: the server offers no "
                                  f"{self.resolver.challenge} challenge")  # fmt: skip
            challb = found[0]
            token = challb.chall.encode("token")
            key_auth = challb.chall.key_authorization(self._key)
            await responder.present(self.resolver.challenge, domain, token, key_auth)
            presented.append((domain, token))
            pending.append((authzr, challb))
        for _, challb in pending:
            await self._call(client.answer_challenge, challb, challb.chall.response(self._key))
        for authzr, _ in pending:
            await self._wait_valid(client, authzr)

    async def _wait_valid(
        self, client: acme_client.ClientV2, authzr: messages.AuthorizationResource
    ) -> None:
        delay = self.polling.first_poll
        while True:
            await anyio.sleep(delay)
            authzr, response = await self._call(client.poll, authzr)
            status = authzr.body.status
            if status == messages.STATUS_VALID:
                return
            if status != messages.STATUS_PENDING:
                domain = authzr.body.identifier.value
                for challb in authzr.body.challenges:
                    if challb.error is not None:
                        raise _challenge_failure(domain, challb.error)
                raise AcmeFailure(None, f"{domain}: authorization {status}")
            after = acme_client.ClientV2.retry_after(response, 1)
            seconds = (after - datetime.datetime.now()).total_seconds()
            delay = min(max(seconds, 0.1), self.polling.max_poll)

    def _ready(self) -> acme_client.ClientV2:
        if self._client is None:
            raise RuntimeError(f"ACME {self.resolver.name}: connect() first")
        return self._client

    async def _call(self, function: Callable[..., _T], *args: Any) -> _T:
        """`function(*args)` in a worker thread, again on a refused nonce (module docstring)."""
        for attempt in range(NONCE_RETRIES):
            try:
                return await anyio.to_thread.run_sync(functools.partial(function, *args))
            except messages.Error as exc:
                if exc.code != "badNonce" or attempt == NONCE_RETRIES - 1:
                    raise
                _log.debug("ACME %s: badNonce, again", self.resolver.name)
        raise AssertionError("unreachable")

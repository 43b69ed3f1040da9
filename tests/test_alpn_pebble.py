"""TLS-ALPN-01 against a real ACME CA: Pebble (../shared/acme) validates a name through kroute's
TLS front on each loop, the ACME side played by certbot's `acme` package (in a worker thread,
as issuance runs off the event loop)."""

from __future__ import annotations

import datetime
import functools
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import pytest
from acme import challenges, client, crypto_util, messages
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from josepy.b64 import b64encode
from josepy.jwk import JWKRSA

from kroute.gateway.router import Router
from kroute.tls.alpn.challenges import AlpnChallenges
from kroute.tls.contexts import TlsContexts
from kroute.watch.sources import MemorySource
from tests.pods import start_front

T = TypeVar("T")


class _Ready(challenges.KeyAuthorizationChallengeResponse):
    """The answer to a challenge: `{}` (RFC 8555 section 7.5.1; its key authorization is not
    sent, and without one `acme` would send an empty body: a POST-as-GET, which answers
    nothing). Not registered: certbot's `acme` no longer has TLS-ALPN-01 classes, so these
    challenges parse as unrecognized ones."""

    typ = "tls-alpn-01"


def retried(call: Callable[..., T], *args: Any) -> T:
    """`call` again when Pebble refuses a nonce (5% of requests, RFC 8555 section 6.5); `acme`
    retries once by itself, and twice in a row happens."""
    for _ in range(5):
        try:
            return call(*args)
        except messages.Error as error:
            if error.code != "badNonce":
                raise
    return call(*args)


def validate(ca: dict[str, str], domain: str, responder: AlpnChallenges) -> messages.Authorization:
    """Order `domain` with a new account, answer its TLS-ALPN-01 challenge through `responder`,
    and poll the authorization until Pebble has decided (blocking: run in a thread)."""
    account = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key = JWKRSA(key=account)
    # verify_ssl goes to requests' `verify`, which takes a CA bundle (acme's hint says bool).
    net = client.ClientNetwork(key, user_agent="kroute-tests",
                               verify_ssl=ca["ACME_CA_CERT"])  # type: ignore[arg-type]  # fmt: skip
    acme = client.ClientV2(client.ClientV2.get_directory(ca["ACME_DIRECTORY_URL"], net), net)
    # A new account per order: Pebble reuses a valid authorization of the same account half
    # the time (PEBBLE_AUTHZREUSE), which would leave no challenge to answer.
    retried(acme.new_account, messages.NewRegistration.from_data(terms_of_service_agreed=True))
    certificate_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = certificate_key.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())  # fmt: skip
    order = retried(acme.new_order, crypto_util.make_csr(pem, [domain]))
    (authorization,) = order.authorizations
    assert authorization.body.status == messages.STATUS_PENDING
    (challenge,) = [c for c in authorization.body.challenges
                    if c.chall.to_partial_json()["type"] == "tls-alpn-01"]  # fmt: skip
    token = challenge.chall.to_partial_json()["token"]
    key_authorization = f"{token}.{b64encode(key.thumbprint()).decode()}"  # RFC 8555 8.1
    responder.add(domain, key_authorization)
    try:
        # (Not acme's answer_challenge: it wants a Link "up" header, which Pebble does not send.)
        answer = functools.partial(acme.net.post, new_nonce_url=acme.directory["newNonce"])
        retried(answer, challenge.uri, _Ready(key_authorization=key_authorization))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            authorization, response = retried(acme.poll, authorization)
            if authorization.body.status in (messages.STATUS_VALID, messages.STATUS_INVALID):
                return authorization.body
            wait = acme.retry_after(response, default=1) - datetime.datetime.now()
            time.sleep(max(wait.total_seconds(), 0.1))  # Pebble's Retry-After (3 s)
        raise TimeoutError(f"{domain}: still {authorization.body.status} after 60 s")
    finally:
        responder.remove(domain)


@pytest.mark.anyio
async def test_pebble_validates_a_name_through_the_tls_front(
    front: str, acme_ca: dict[str, str]
) -> None:
    contexts = TlsContexts()
    domain = f"alpn-{uuid.uuid4().hex[:12]}.example.test"
    async with anyio.create_task_group() as group:
        await start_front(group, Router([MemorySource()]), front, tls=contexts.server,
                          challenges=contexts.challenges,
                          port=int(acme_ca["ACME_TLSALPN01_PORT"]))  # fmt: skip
        authorization = await anyio.to_thread.run_sync(validate, acme_ca, domain,
                                                       contexts.challenges)  # fmt: skip
        group.cancel_scope.cancel()
    errors = [c.error for c in authorization.challenges if c.error is not None]
    assert authorization.status == messages.STATUS_VALID, errors
    assert not contexts.challenges

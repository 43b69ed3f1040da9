"""AcmeCertificates: the certificates the routes ask resolvers for, ordered, stored, renewed and
served; every replica serves them, only the leader orders.

Every replica:
- serves the certificates the store holds (a `CertificateProvider` for `TlsCertificates`: a
  new or renewed Secret is served from the next handshake on, open connections keep theirs);
- answers challenges, its own and those the leader shares through the store
  (`kroute.acme.responder`), so the CA may reach any replica: HTTP-01 before any route
  (`Router.challenges`), TLS-ALPN-01 in the TLS fronts' handshake (`alpn`, the registry of
  `TlsContexts.challenges`).

The leader (`while_leading`: the Lease holder, or the only process) runs the loop: once the
sources have synced (a replica that starts must see the stored certificates before deciding
that one is missing), plan what the routes ask for (`kroute.acme.plan`), decide per
certificate (`kroute.acme.schedule.next_step`): order the missing ones and those due for
renewal, concurrently, wait for the earliest due time or the next change, again. A failure is
recorded per certificate (the last ACME error, shown by the admin API) and retried after its
backoff; a permanent one is not retried.
"""

from __future__ import annotations

import datetime
import logging
import random
from collections.abc import Callable, Sequence
from typing import Any

import anyio
import anyio.abc
import attrs
from cryptography import x509

from kroute.acme.client import AcmeClient, AcmeFailure, Polling, failure_of, new_key
from kroute.acme.http01 import Http01Challenges
from kroute.acme.plan import RESOLVER_LABEL, CertificateRequest, Plan, plan_certificates
from kroute.acme.resolvers import HTTP_01, TLS_ALPN_01, Resolver
from kroute.acme.responder import AlpnRegistry, SharedChallenges
from kroute.acme.schedule import Action, Attempts, RenewalPolicy, next_step, renewal_time
from kroute.acme.store import NAMES_ANNOTATION, Store, account_secret_name, secret, secret_data
from kroute.gateway.router import ROUTING_KINDS, Router
from kroute.objects import FieldError, labels_of
from kroute.tls.certs import Certificate, certificate_from_secret
from kroute.watch.leader import LeaderElection, while_leading
from kroute.watch.sources import stored

_log = logging.getLogger(__name__)
#: The longest the loop sleeps without a change (a due time computed earlier is re-checked).
MAX_SLEEP = 3600.0
#: How many orders run at once.
CONCURRENT_ORDERS = 4
#: How long an order waits for its certificate to come back through the store's watch.
READ_BACK = 10.0


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@attrs.frozen
class Held:
    """A stored certificate as the loop and the admin API see it."""

    certificate: Certificate
    resolver: str
    issuer: str
    not_before: datetime.datetime

    def to_json(self) -> dict[str, object]:
        return {**self.certificate.to_json(), "resolver": self.resolver, "issuer": self.issuer,
                "not_before": self.not_before.isoformat()}  # fmt: skip


@attrs.define
class AcmeStatistics:
    """Counts since start, per resolver: orders started, failed, certificates issued."""

    attempts: dict[str, int] = attrs.field(factory=dict)
    failures: dict[str, int] = attrs.field(factory=dict)
    issued: dict[str, int] = attrs.field(factory=dict)


class AcmeCertificates:
    """See the module docstring. `resolvers` by name; `store` where Secrets are kept; with
    `election`, only its leader orders. Run `run()` beside `router.run()`."""

    def __init__(
        self,
        router: Router,
        resolvers: Sequence[Resolver],
        store: Store,
        *,
        election: LeaderElection | None = None,
        alpn: AlpnRegistry | None = None,
        policy: RenewalPolicy = RenewalPolicy(),
        polling: Polling = Polling(),
        clock: Callable[[], datetime.datetime] = utc_now,
        rng: random.Random | None = None,
    ) -> None:
        self.router = router
        self.resolvers = {r.name: r for r in resolvers}
        if len(self.resolvers) < len(resolvers):
            raise ValueError("certificate resolver names must be unique")
        if alpn is None and any(r.challenge == TLS_ALPN_01 for r in resolvers):
            raise ValueError("a tls-alpn-01 resolver needs the TLS fronts' ALPN responder")
        self.store = store
        self.election = election
        self.alpn = alpn
        self.policy = policy
        self.polling = polling
        self.clock = clock
        self.rng = rng or random.Random()
        self.http01 = Http01Challenges()
        if any(r.challenge == HTTP_01 for r in resolvers):
            router.challenges = self.http01
        #: What this leader answers, shared with every replica through the store.
        self.challenges = SharedChallenges(store, self.http01, alpn)
        self.statistics = AcmeStatistics()
        #: Per certificate (resolver, names): its failures in a row.
        self.attempts: dict[tuple[str, tuple[str, ...]], Attempts] = {}
        self._last = Plan()  # the last round's plan: its errors are logged once
        self._held: dict[str, Held] = {}  # by Secret name
        self._renew_at: dict[str, datetime.datetime] = {}  # by fingerprint (ARI asked once)
        self._clients: dict[str, AcmeClient] = {}
        #: Held while an account is found or registered: orders start together, one task
        #: each, and two registrations with one key at once are what a CA may refuse (Pebble
        #: answers one serverInternal), or the second finds the key's Secret not read yet.
        self._connecting = anyio.Lock()
        self._ordering: set[str] = set()  # Secret names with an order in flight
        self._listeners: list[Callable[[], None]] = []
        self._wake = anyio.Event()
        self._read()
        store.subscribe(self._stored)
        for source in router.sources:
            source.subscribe(self._routing)

    # -- every replica: serving --------------------------------------------------------------

    def certificates(self) -> Sequence[Certificate]:
        """What the store holds (CertificateProvider)."""
        return [held.certificate for held in self._held.values()]

    def subscribe(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def held(self) -> dict[str, Held]:
        return dict(self._held)

    def _stored(self) -> None:
        before = {name: held.certificate.fingerprint for name, held in self._held.items()}
        self._read()
        if before != {name: held.certificate.fingerprint for name, held in self._held.items()}:
            for listener in self._listeners:
                listener()
        self._wake.set()

    def _read(self) -> None:
        secrets = self.store.secrets()
        held: dict[str, Held] = {}
        for name, obj in secrets.items():
            if obj.get("type") != "kubernetes.io/tls":
                continue
            found = self._held.get(name)
            try:
                cert = certificate_from_secret(obj)
            except FieldError as exc:
                _log.warning("ACME: Secret %s/%s not served: %s: %s", self.store.namespace, name,
                             exc.field, exc.reason)  # fmt: skip
                continue
            if found is not None and found.certificate.fingerprint == cert.fingerprint:
                held[name] = found
                continue
            leaf = x509.load_pem_x509_certificate(cert.chain)
            resolver = labels_of(obj).get(RESOLVER_LABEL, "")
            held[name] = Held(cert, resolver, leaf.issuer.rfc4514_string(),
                              leaf.not_valid_before_utc)  # fmt: skip
        self._held = held
        self.challenges.follow(secrets)

    def _routing(self, kind: Any, _: object) -> None:
        if kind in ROUTING_KINDS:
            self._wake.set()

    def refresh(self) -> None:
        """Look at every certificate again now (the loop otherwise sleeps until the next one is
        due or something changes): after the clock it was given jumped, say. Backoffs stand."""
        self._wake.set()

    # -- the admin API and metrics -------------------------------------------------------

    def register(self, registry: Any) -> None:
        """Export the ACME series (`kroute.acme.metrics`) in a prometheus-client registry
        (`Metrics.registry`)."""
        from kroute.acme.metrics import AcmeCollector

        registry.register(AcmeCollector(self))

    def to_json(self) -> dict[str, object]:
        """Each certificate the routes ask for: its names, resolver, Secret, what is stored
        (issuer, validity), when it renews, the last ACME error; and what cannot be asked."""
        plan = self.planned()  # (a follower's too: planning is cheap and pure)
        out = []
        for request in plan.requests:
            held = self._held.get(request.secret_name)
            attempts = self.attempts.get((request.resolver, request.names), Attempts())
            renew = None if held is None else self._renew_at.get(held.certificate.fingerprint)
            out.append({
                **request.to_json(), "stored": None if held is None else held.to_json(),
                "renew_at": None if renew is None else renew.isoformat(),
                "ordering": request.secret_name in self._ordering, **attempts.to_json(),
            })  # fmt: skip
        return {
            "resolvers": [r.to_json() for r in self.resolvers.values()],
            "certificates": out,
            "errors": [str(e) for e in plan.errors],
            "leading": self.election is None or self.election.is_leader,
        }

    def planned(self) -> Plan:
        """What the routes ask for now (`kroute.acme.plan`)."""
        objects = [obj for kind in ROUTING_KINDS for obj in stored(self.router.sources, kind)]
        return plan_certificates(
            objects, self.resolvers, ingress_class=self.router.ingress_class,
            gateway_class=self.router.gateway_class,
        )  # fmt: skip

    # -- the leader's loop ------------------------------------------------------------------

    async def run(self) -> None:
        """Order and renew while leading (always, without an election), until cancelled."""
        await while_leading(self.election, self._lead)

    async def _lead(self) -> None:
        for source in self.router.sources:
            await source.wait_synced()
        await self.store.wait_synced()
        self._read()
        try:
            await self._loop()
        finally:  # (leadership ended, or the gateway stops: a new term connects anew)
            for client in self._clients.values():
                client.close()
            self._clients.clear()

    async def _loop(self) -> None:
        async with anyio.create_task_group() as group:
            limit = anyio.Semaphore(CONCURRENT_ORDERS)
            while True:
                self._wake = anyio.Event()
                wake_at = await self._round(group, limit)
                delay = MAX_SLEEP
                if wake_at is not None:
                    delay = min(delay, max((wake_at - self.clock()).total_seconds(), 0.0))
                with anyio.move_on_after(delay):
                    await self._wake.wait()

    async def _round(
        self, group: anyio.abc.TaskGroup, limit: anyio.Semaphore
    ) -> datetime.datetime | None:
        """One look at everything: start the orders due; the earliest time to look again."""
        plan = self.planned()
        for error in set(plan.errors) - set(self._last.errors):
            _log.warning("ACME: no certificate: %s", error)
        self._last = plan
        wanted = {(r.resolver, r.names) for r in plan.requests}
        self.attempts = {k: v for k, v in self.attempts.items() if k in wanted}
        earliest: datetime.datetime | None = None
        for request in plan.requests:
            if request.secret_name in self._ordering:
                continue
            renew_at = await self._renewal(request)
            attempts = self.attempts.get((request.resolver, request.names), Attempts())
            step = next_step(self.clock(), renew_at, attempts)
            if step.action in (Action.ISSUE, Action.RENEW):
                self._ordering.add(request.secret_name)
                group.start_soon(self._order, request, step.action, limit)
            elif step.action is Action.WAIT and step.at is not None:
                earliest = step.at if earliest is None else min(earliest, step.at)
        return earliest

    async def _renewal(self, request: CertificateRequest) -> datetime.datetime | None:
        """When the stored certificate for `request` renews (None: none stored for these
        names): the server's renewal window where it has one (asked once per certificate),
        else a third of its lifetime before it ends."""
        held = self._held.get(request.secret_name)
        if held is None or not all(held.certificate.covers(n) for n in request.names):
            return None
        fingerprint = held.certificate.fingerprint
        if fingerprint not in self._renew_at:
            window = None
            try:
                client = await self._client(self.resolvers[request.resolver])
                suggested = await client.renewal_time(held.certificate.chain)
                if suggested is not None:
                    window = (suggested, suggested)
            except AcmeFailure as exc:
                _log.info("ACME %s: renewal information not read: %s", request.resolver, exc)
            self._renew_at[fingerprint] = renewal_time(
                held.not_before, held.certificate.not_after, self.policy, window=window,
                draw=self.rng.random(),
            )  # fmt: skip
        return self._renew_at[fingerprint]

    async def _order(
        self, request: CertificateRequest, action: Action, limit: anyio.Semaphore
    ) -> None:
        key = (request.resolver, request.names)
        resolver = self.resolvers[request.resolver]
        stats = self.statistics
        try:
            async with limit:
                stats.attempts[resolver.name] = stats.attempts.get(resolver.name, 0) + 1
                _log.info("ACME %s: %s %s", resolver.name,
                          "renewing" if action is Action.RENEW else "ordering",
                          ", ".join(request.names))  # fmt: skip
                try:
                    client = await self._client(resolver)
                    private_key = new_key(resolver.key_type)
                    chain = await client.order(request.names, private_key, self.challenges)
                except AcmeFailure as exc:
                    stats.failures[resolver.name] = stats.failures.get(resolver.name, 0) + 1
                    previous = self.attempts.get(key, Attempts())
                    attempts = previous.failed(self.clock(), exc.problem, exc.detail, self.policy,
                                               self.rng.random(), exc.retry_after)  # fmt: skip
                    self.attempts[key] = attempts
                    when = "not again" if attempts.permanent else f"again at {attempts.retry_at}"
                    _log.warning("ACME %s: %s: %s (%s)", resolver.name, ", ".join(request.names),
                                 exc, when)  # fmt: skip
                    return
                await self.store.write(secret(
                    self.store.namespace, request.secret_name,
                    {"tls.crt": chain.encode(), "tls.key": private_key}, resolver=resolver.name,
                    tls=True, annotations={NAMES_ANNOTATION: ",".join(request.names)},
                ))  # fmt: skip
                stats.issued[resolver.name] = stats.issued.get(resolver.name, 0) + 1
                self.attempts.pop(key, None)
                _log.info("ACME %s: stored %s in Secret %s/%s", resolver.name,
                          ", ".join(request.names), self.store.namespace,
                          request.secret_name)  # fmt: skip
                # Not done until the store reads it back (a watch lags the write): the next
                # round would find nothing stored and order again.
                with anyio.move_on_after(READ_BACK):
                    while not self._holds(request.secret_name, chain.encode()):
                        await anyio.sleep(0.05)
        finally:
            self._ordering.discard(request.secret_name)
            self._wake.set()

    def _holds(self, name: str, chain: bytes) -> bool:
        held = self._held.get(name)
        return held is not None and held.certificate.chain == chain

    async def _client(self, resolver: Resolver) -> AcmeClient:
        """The resolver's account, its key read from the store or made and stored (once, for
        every order that asks at the same time)."""
        client = self._clients.get(resolver.name)
        if client is not None:
            return client
        async with self._connecting:
            client = self._clients.get(resolver.name)  # (connected while this one waited)
            return client if client is not None else await self._connect(resolver)

    async def _connect(self, resolver: Resolver) -> AcmeClient:
        name = account_secret_name(resolver.name)
        found = self.store.secrets().get(name)
        key = None if found is None else secret_data(found, "tls.key")
        if key is None:
            key = new_key("EC256")
            made = secret(self.store.namespace, name, {"tls.key": key}, resolver=resolver.name)
            if not await self.store.create(made):
                raise AcmeFailure(None, f"Secret {self.store.namespace}/{name} exists but was "
                                  "not read yet; trying again later")  # fmt: skip
        client = AcmeClient(resolver, key, polling=self.polling)
        try:
            await client.connect()
        except AcmeFailure:
            raise
        except Exception as exc:  # (the directory or the account: acme's or the network's)
            raise failure_of(exc) from None
        _log.info("ACME %s: account %s", resolver.name, client.account)
        self._clients[resolver.name] = client
        return client

"""Challenges answered by every replica while only the leader orders: HTTP-01 tokens
(`kroute.acme.http01`, asked by the Router) and TLS-ALPN-01 names (the TLS fronts' registry,
`TlsContexts.challenges`).

The CA's validation reaches whichever node it reaches, not necessarily the leader. So the
leader writes what it is answering into one Secret (`CHALLENGES_SECRET`: each HTTP-01 token a
data key, its key authorization the value; each TLS-ALPN-01 name under `tls-alpn-01.NAME`), and
waits until its own watch reads it back before the CA is told to validate; every replica takes
the Secret's entries into its own responders as its watch brings them (`follow`). HTTP-01 tokens
never contain a dot (base64url, RFC 8555 section 8.3), so the two kinds of keys cannot collide.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import anyio
import anyio.to_thread

from kroute.acme.http01 import Http01Challenges
from kroute.acme.resolvers import TLS_ALPN_01
from kroute.acme.store import Store, secret, secret_data
from kroute.objects import Obj

CHALLENGES_SECRET = "kroute-acme-challenges"
ALPN_PREFIX = "tls-alpn-01."
#: How long the leader waits to see its write come back through the watch.
SHARE_WAIT = 10.0


class AlpnRegistry(Protocol):
    """The TLS-ALPN-01 responder of the TLS fronts (`kroute.tls.alpn.AlpnChallenges`)."""

    def add(self, domain: str, key_authorization: str) -> None: ...

    def remove(self, domain: str) -> None: ...


class SharedChallenges:
    """The leader's challenges, published through `store`; everyone's, answered (module
    docstring). The `Responder` AcmeClient orders with."""

    def __init__(self, store: Store, http01: Http01Challenges, alpn: AlpnRegistry | None):
        self.store = store
        self.http01 = http01
        self.alpn = alpn
        self._alpn_own: dict[str, str] = {}
        self._alpn_shared: dict[str, str] = {}  # added to `alpn` from the Secret
        self._lock = anyio.Lock()

    async def present(self, challenge: str, domain: str, token: str, key_auth: str) -> None:
        if challenge == TLS_ALPN_01:
            assert self.alpn is not None
            self._alpn_own[domain] = key_auth
            # (in a thread: a front may switch how it accepts before `add` returns)
            await anyio.to_thread.run_sync(self.alpn.add, domain, key_auth)
        else:
            self.http01.add(token, key_auth)
        await self._publish()

    async def cleanup(self, challenge: str, domain: str, token: str) -> None:
        if challenge == TLS_ALPN_01:
            assert self.alpn is not None
            self._alpn_own.pop(domain, None)
            await anyio.to_thread.run_sync(self.alpn.remove, domain)
        else:
            self.http01.remove(token)
        await self._publish()

    def follow(self, secrets: Mapping[str, Obj]) -> None:
        """Answer what the leader's Secret holds now (called as the store changes)."""
        shared = secrets.get(CHALLENGES_SECRET)
        entries: dict[str, str] = {}
        for key in (shared or {}).get("data") or {}:
            value = secret_data(shared or {}, key)
            if value is not None:
                entries[key] = value.decode("ascii", "replace")
        self.http01.share({k: v for k, v in entries.items() if not k.startswith(ALPN_PREFIX)})
        if self.alpn is None:
            return
        alpn = {k[len(ALPN_PREFIX) :]: v for k, v in entries.items() if k.startswith(ALPN_PREFIX)}
        for domain, key_auth in alpn.items():
            if domain not in self._alpn_own and self._alpn_shared.get(domain) != key_auth:
                self.alpn.add(domain, key_auth)
        for domain in self._alpn_shared.keys() - alpn.keys() - self._alpn_own.keys():
            self.alpn.remove(domain)
        self._alpn_shared = {d: k for d, k in alpn.items() if d not in self._alpn_own}

    def _entries(self) -> dict[str, str]:
        own = self.http01.own
        own.update({ALPN_PREFIX + d: k for d, k in self._alpn_own.items()})
        return own

    async def _publish(self) -> None:
        """Write this leader's pending challenges, then wait (a little) until the store reads
        them back, so that the CA, told next, finds them on every replica."""
        async with self._lock:
            entries = self._entries()
            await self.store.write(secret(
                self.store.namespace, CHALLENGES_SECRET,
                {key: value.encode() for key, value in entries.items()}, resolver=None,
            ))  # fmt: skip
            with anyio.move_on_after(SHARE_WAIT):
                while not _holds(self.store.secrets().get(CHALLENGES_SECRET), entries):
                    await anyio.sleep(0.05)


def _holds(obj: Obj | None, entries: Mapping[str, str]) -> bool:
    if obj is None:
        return not entries
    return set(obj.get("data") or {}) == set(entries)

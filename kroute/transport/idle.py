"""Idle keep-alive connections per endpoint, reused most-recent-first.

One definition for the two places that keep callback-driven connections to endpoints: the
asyncio engine of `PooledTransport` (`kroute.transport.protocols`) and FastGateway's
(`kroute.gateway.fast.endpoint`). The stack is LIFO so that the warm connections stay warm and the
cold ones expire; it is bounded (the least recently used is closed when it overflows), and a
connection idle for `keepalive_expiry` seconds or closed by its endpoint is never handed out.
Pure bookkeeping: time comes in as `now`, closing is the connection's own `close()`.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, Protocol, TypeVar


class IdleConnection(Protocol):
    """What the stack needs of a connection."""

    idle_since: float
    closed: bool

    def close(self) -> None: ...


K = TypeVar("K", bound=Hashable)
C = TypeVar("C", bound=IdleConnection)


class IdleConnections(Generic[K, C]):
    """Idle connections per endpoint key: a bounded stack each."""

    def __init__(self, max_idle: int, keepalive_expiry: float) -> None:
        self.max_idle = max_idle
        self.keepalive_expiry = keepalive_expiry
        self.idle: dict[K, list[C]] = {}

    def checkout(self, key: K, now: float) -> C | None:
        """The most recently used live connection to `key` (expired ones are closed)."""
        stack = self.idle.get(key)
        while stack:
            conn = stack.pop()
            if now - conn.idle_since < self.keepalive_expiry and not conn.closed:
                return conn
            conn.close()
        return None

    def give_back(self, key: K, conn: C, now: float) -> None:
        stack = self.idle.setdefault(key, [])
        if len(stack) >= self.max_idle:
            stack.pop(0).close()
        conn.idle_since = now
        stack.append(conn)

    def forget(self, key: K, conn: C) -> None:
        """Drop a connection that closed while idle."""
        stack = self.idle.get(key)
        if stack and conn in stack:
            stack.remove(conn)

    def stack(self, key: K) -> list[C]:
        """The idle connections to `key`, least recently used first (for inspection)."""
        return list(self.idle.get(key, ()))

    def close(self) -> None:
        for stack in self.idle.values():
            for conn in stack:
                conn.close()
        self.idle.clear()

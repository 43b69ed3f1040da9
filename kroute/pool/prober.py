"""Active health probes on anyio: the I/O shell around `EndpointHealth.probe`.

One task per endpoint of every watched pool. A new endpoint is probed at once (a pod that joins
is checked before it has been in rotation long); the endpoints present when probing starts are
spread over one interval rather than probed all together. Each probe opens a connection, sends
one request with `Connection: close`, reads the status line and closes: no pooling, no body, a
hard timeout around the whole exchange (as kubelet's HTTP probes do).
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable

import anyio
import anyio.abc

from kroute.pool.endpoints import EndpointKey
from kroute.pool.health import ActiveHealth
from kroute.pool.pool import Pool

#: Probes one endpoint: (address, port, settings) -> (healthy?, what happened).
Probe = Callable[[str, int, ActiveHealth], Awaitable[tuple[bool, str]]]

#: Longest status line read before a response counts as malformed.
MAX_STATUS_LINE = 4096


async def http_probe(address: str, port: int, config: ActiveHealth) -> tuple[bool, str]:
    """One probe: (healthy?, what happened) for a person to read."""
    host = config.host or (f"[{address}]" if ":" in address else address)
    lines = [f"{config.method} {config.path} HTTP/1.1", f"Host: {host}",
             "User-Agent: kroute-probe", "Connection: close"]  # fmt: skip
    lines += [f"{name}: {value}" for name, value in config.headers]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    received = b""
    try:
        with anyio.fail_after(config.timeout):
            async with await anyio.connect_tcp(address, port) as stream:
                await stream.send(request)
                while b"\r\n" not in received and len(received) < MAX_STATUS_LINE:
                    received += await stream.receive(MAX_STATUS_LINE)
    except TimeoutError:
        return False, f"no answer within {config.timeout:g}s"
    except anyio.EndOfStream:
        return False, "connection closed before a status line"
    except (OSError, anyio.BrokenResourceError) as exc:
        return False, f"connection failed: {exc.strerror or exc}" if isinstance(
            exc, OSError
        ) else "connection broken"
    parts = received.split(b"\r\n", 1)[0].split(b" ", 2)
    if (len(parts) < 2 or not parts[0].startswith(b"HTTP/1.")
            or not (parts[1].isascii() and parts[1].isdigit())):  # fmt: skip
        return False, "malformed status line"
    status = int(parts[1])
    return config.healthy_status(status), f"HTTP {status}"


class ActiveProber:
    """Probes the endpoints of pools that have active health configured, until cancelled.

    `probe` is the function that probes one endpoint (`http_probe` by default): tests and users
    may pass their own.
    """

    def __init__(
        self,
        *,
        rng: random.Random | None = None,
        probe: Probe | None = None,
    ) -> None:
        self._rng = rng or random.Random()
        self._probe = probe or http_probe
        self._pools: list[Pool] = []
        self._subscribed: set[int] = set()
        self._scopes: dict[tuple[int, EndpointKey], anyio.CancelScope] = {}
        self._group: anyio.abc.TaskGroup | None = None

    def watch(self, pool: Pool) -> None:
        """Probe `pool`'s endpoints (now and as they change), if it has active health."""
        if pool.health.active is None:
            return
        self._pools.append(pool)
        if id(pool) not in self._subscribed:
            self._subscribed.add(id(pool))
            pool.subscribe(lambda added, removed: self._changed(pool, added, removed))
        if self._group is not None:
            self._start_all(pool, spread=True)

    def unwatch(self, pool: Pool) -> None:
        """Stop probing `pool` (it left the configuration)."""
        if pool not in self._pools:
            return
        self._pools.remove(pool)
        for key in [key for key in self._scopes if key[0] == id(pool)]:
            self._scopes.pop(key).cancel()

    def _changed(
        self, pool: Pool, added: tuple[EndpointKey, ...], removed: tuple[EndpointKey, ...]
    ) -> None:
        if pool not in self._pools:
            return
        for key in removed:
            scope = self._scopes.pop((id(pool), key), None)
            if scope is not None:
                scope.cancel()
        if self._group is not None:
            for key in added:
                self._start(pool, key, delay=0.0)

    def _start_all(self, pool: Pool, *, spread: bool) -> None:
        assert pool.health.active is not None
        for endpoint in pool.endpoints():
            delay = self._rng.uniform(0, pool.health.active.interval) if spread else 0.0
            self._start(pool, endpoint.key, delay=delay)

    def _start(self, pool: Pool, key: EndpointKey, *, delay: float) -> None:
        assert self._group is not None
        if (id(pool), key) in self._scopes:
            return
        scope = anyio.CancelScope()
        self._scopes[(id(pool), key)] = scope
        self._group.start_soon(self._loop, pool, key, delay, scope)

    async def _loop(
        self, pool: Pool, key: EndpointKey, delay: float, scope: anyio.CancelScope
    ) -> None:
        config = pool.health.active
        assert config is not None
        with scope:
            await anyio.sleep(delay)
            address, port = key
            while True:
                started = anyio.current_time()
                ok, detail = await self._probe(address, config.port or port, config)
                pool.probed(key, ok, detail, now=anyio.current_time())
                await anyio.sleep(max(0.0, config.interval - (anyio.current_time() - started)))

    async def run(self) -> None:
        """Probe until cancelled; cancelling leaves no task behind."""
        async with anyio.create_task_group() as group:
            self._group = group
            try:
                for pool in self._pools:
                    self._start_all(pool, spread=True)
                await anyio.sleep_forever()
            finally:
                self._group = None
                self._scopes.clear()

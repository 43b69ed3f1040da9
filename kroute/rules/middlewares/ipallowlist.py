"""Traefik's ipAllowList middleware (and ipWhiteList, its v2 name, which Traefik v3 still reads
but deprecates) as a step (Traefik v3 docs, "HTTP Middlewares" > IPAllowList; traefik
`pkg/middlewares/ipallowlist`).

The client IP, found by the `ipStrategy` (`kroute.rules.middlewares.sources`: by default the
connection's peer, X-Forwarded-For only when the strategy says so), must be in one of the
`sourceRange` IPs or CIDRs (v4 and v6); otherwise the request is answered `rejectStatusCode`
(403 by default) with its reason phrase as the body, and never forwarded. An IP the strategy
cannot find (fewer X-Forwarded-For entries than `depth`) is refused.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import attrs

from kroute.objects import FieldError, Network, as_int, as_map, in_networks
from kroute.pipeline.steps import Answer, Step, UpstreamRequest
from kroute.rules.middlewares.paths import options_of
from kroute.rules.middlewares.sources import IPStrategy, ip_strategy, networks

#: Client addresses an IPAllowList step remembers its answer for (then it starts afresh).
REMEMBERED = 4096


@attrs.frozen
class IPAllowList(Step):
    """Without an ipStrategy that reads X-Forwarded-For, the answer depends on the peer's
    address alone (`by_client`): a front that plans a chain asks `admit` per request without
    running the other steps (`kroute.pipeline.steps.run_gates`)."""

    allowed: tuple[Network, ...] = attrs.field(kw_only=True)
    strategy: IPStrategy = attrs.field(kw_only=True)
    status: int = attrs.field(default=403, kw_only=True)
    #: The answer for each address seen lately (the peer's, or the one the strategy found):
    #: parsing an address and testing the ranges costs more than the rest of the step, and a
    #: client sends many requests (bounded by REMEMBERED, whatever the number of clients).
    _seen: dict[str, Answer | None] = attrs.field(factory=dict, init=False, eq=False,
                                                  repr=False)  # fmt: skip

    @property
    def touches(self) -> frozenset[bytes]:
        return frozenset({b"x-forwarded-for"} if self.strategy.reads_forwarded else ())

    @property
    def by_client(self) -> bool:
        return not self.strategy.reads_forwarded

    def request(self, request: UpstreamRequest) -> Answer | None:
        if not self.strategy.reads_forwarded:
            return self.admit(request.client)
        found = self.strategy.ip(request)
        try:
            return self._seen[found]
        except KeyError:
            return self._remember(found, found)

    def admit(self, client: str) -> Answer | None:
        try:
            return self._seen[client]
        except KeyError:
            return self._remember(client, self.strategy.subnet(client))

    def _remember(self, key: str, ip: str) -> Answer | None:
        answer = None
        if not ip or not in_networks(ip, self.allowed):
            try:
                reason = HTTPStatus(self.status).phrase
            except ValueError:
                reason = "Forbidden"
            answer = Answer(self.status, f"client IP {ip or '(none found)'} is not in "
                            "sourceRange", body=reason.encode(), step=self.label)  # fmt: skip
        if len(self._seen) >= REMEMBERED:
            self._seen.clear()
        self._seen[key] = answer
        return answer


def ip_allow_list(spec: Any, field: str) -> Step:
    options = options_of(spec, field, ("sourceRange", "ipStrategy", "rejectStatusCode"))
    allowed = networks(options.get("sourceRange"), f"{field}.sourceRange")
    if not allowed:
        raise FieldError(f"{field}.sourceRange", "empty: no client could pass (Traefik refuses "
                         "it too)")  # fmt: skip
    strategy = IPStrategy()
    if options.get("ipStrategy") is not None:
        where = f"{field}.ipStrategy"
        strategy = ip_strategy(as_map(options["ipStrategy"], where), where)
    status = as_int(options.get("rejectStatusCode"), f"{field}.rejectStatusCode", default=0,
                    low=0, high=599) or 403  # fmt: skip
    if status < 100:
        raise FieldError(f"{field}.rejectStatusCode", f"{status} is not an HTTP status")
    return IPAllowList(field, allowed=allowed, strategy=strategy, status=status)

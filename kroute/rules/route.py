"""A compiled route: one alternative of one rule of one object, with its place in the order.

Compilers turn objects into routes; the table orders them by `precedence` and indexes them. A
Traefik rule with `||` becomes several routes with the same name, one per alternative; a Gateway
API rule becomes one route per (hostname, match) pair, since the spec ranks those separately.
"""

from __future__ import annotations

import enum
from typing import Any

import attrs

from kroute.objects import BackendRef, ObjectRef
from kroute.pipeline.steps import EMPTY, Chain
from kroute.rules.conditions import Conjunction
from kroute.rules.entrypoints import Attachment
from kroute.rules.policy import RoutePolicy
from kroute.rules.redirect import Redirect


class Family(enum.IntEnum):
    """Route families, in the order a request meets them (docs/rules.md, "Across families").

    No spec orders Ingress, HTTPRoute and IngressRoute against each other, so the table
    keeps each family's own order and never interleaves them: IngressRoutes first (their explicit
    priorities are the operator's override), then HTTPRoutes, then Ingress rules, and the Ingress
    `defaultBackend`, which by definition takes only what matched no rule, last of all.
    """

    INGRESSROUTE = 0
    HTTPROUTE = 1
    INGRESS = 2
    DEFAULT_BACKEND = 3


@attrs.frozen
class Route:
    """One routable alternative.

    - `source` and `field` name the object and the rule ("spec.rules[0].http.paths[1]");
    - `conditions` must all hold (an empty tuple matches every request);
    - `backends` say where the traffic goes; empty means the route answers 500 (Gateway API:
      a rule whose backends are all invalid);
    - `precedence` orders routes, smallest first; its first element is the family;
    - `why` explains the precedence to a person ("priority 42 (rule length)").
    """

    source: ObjectRef
    field: str
    conditions: Conjunction
    backends: tuple[BackendRef, ...]
    precedence: tuple[Any, ...]
    why: str
    origin: str = ""
    #: Answer with a redirect instead of forwarding (Ingress ssl-redirect, RequestRedirect).
    redirect: Redirect | None = None
    #: What happens to a request after the match (`kroute.pipeline`): the route's steps, and
    #: with `backend_chains` (one per backend, when backends have filters of their own) those
    #: of the backend chosen, run after the route's.
    chain: Chain = EMPTY
    backend_chains: tuple[Chain, ...] = ()
    #: The entry points that serve the route (`kroute.rules.entrypoints`); None: every one.
    attachment: Attachment | None = None
    #: Timeouts and retries of this route (HTTPRoute rule `timeouts`, `retry`); None: the
    #: Router's own retries and the transport's timeouts.
    policy: RoutePolicy | None = None
    #: Whether a backend's choice or its endpoint depends on the request's cookies (Traefik's
    #: sticky cookies: `BackendRef.stuck`, `BackendRef.sticky`): then decided per request.
    sticky: bool = attrs.field(init=False, eq=False, repr=False)

    @sticky.default
    def _sticky(self) -> bool:
        return any(b.stuck or b.sticky is not None
                   or (b.fallback is not None and b.fallback.sticky is not None)
                   for b in self.backends)  # fmt: skip

    def chain_for(self, backend: BackendRef | None) -> Chain:
        """The steps a request sent to `backend` goes through."""
        if not self.backend_chains or backend is None:
            return self.chain
        index = next((i for i, b in enumerate(self.backends) if _serves(b, backend)), None)
        return self.chain if index is None else self.chain + self.backend_chains[index]

    @property
    def name(self) -> str:
        """`Ingress default/web spec.rules[0].http.paths[0]`: the object and the rule."""
        return f"{self.source} {self.field}"

    @property
    def family(self) -> Family:
        return Family(self.precedence[0])

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "route": self.name,
            "backends": [b.to_json() for b in self.backends],
        }
        if self.attachment is not None:
            out["entry_points"] = self.attachment.to_json()
        if self.redirect is not None:
            out["redirect"] = attrs.asdict(self.redirect)
        if self.chain or self.backend_chains:
            out["steps"] = [step.label for step in self.chain.steps]
            if any(self.backend_chains):
                out["backend_steps"] = [[s.label for s in c.steps] for c in self.backend_chains]
        if self.policy is not None:
            out["policy"] = self.policy.to_json()
        return out


def _serves(ref: BackendRef | None, backend: BackendRef) -> bool:
    """Whether requests sent to `ref` may end at `backend`: `ref` itself or one of its
    fallbacks (a failover service's fallback serves them, through `ref`'s steps: its
    Middlewares guard the failover as a whole)."""
    while ref is not None:
        if ref is backend:
            return True
        ref = ref.fallback
    return False

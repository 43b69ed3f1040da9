"""Traefik's inFlightReq middleware as a step (Traefik v3 docs, "HTTP Middlewares" >
InFlightReq; traefik `pkg/middlewares/inflightreq`, over oxy's connlimit).

At most `amount` requests of one source (`sourceCriterion`, `kroute.rules.middlewares.sources`:
the peer address by default) in progress at once; one more is answered 429 and never
forwarded. A request counts from the moment this step lets it through until it ends: its
response sent to the end, or it failed, was answered by a later step, or the client went away.
Every front tells the step (`Step.end`, through `kroute.pipeline.run_end`); after a 101 the
request lasts as long as the upgraded connection.

The counts live in the step (the Middleware's, shared by the routes that name it, kept while
the Middleware object is unchanged); a source's entry goes when its count is back to 0, so
memory follows the requests in progress, not the sources ever seen; a source is kept as its
digest (`Source.digest`, 16 bytes), not as the value the client sent.
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs

from kroute.objects import FieldError, as_int
from kroute.pipeline.steps import Answer, Step, UpstreamRequest
from kroute.rules.middlewares.paths import options_of
from kroute.rules.middlewares.sources import Source, source_criterion


@attrs.frozen
class InFlight(Step):
    offline: ClassVar[bool] = False
    on_end: ClassVar[bool] = True
    amount: int = attrs.field(kw_only=True)
    source: Source = attrs.field(kw_only=True)
    counts: dict[bytes, int] = attrs.field(factory=dict, kw_only=True, eq=False, repr=False)

    @property
    def touches(self) -> frozenset[bytes]:
        return self.source.touches

    def request(self, request: UpstreamRequest) -> Answer | None:
        key = self.source.digest(request)
        count = self.counts.get(key, 0)
        if count >= self.amount:
            return Answer(429, f"{count} requests of this source in flight (amount "
                          f"{self.amount})", body=b"Too Many Requests")  # fmt: skip
        self.counts[key] = count + 1
        request.notes[self.field] = key
        return None

    def end(self, request: UpstreamRequest) -> None:
        key = request.notes.pop(self.field, None)
        if key is None:
            return  # (not counted: refused, or the request ended before this step ran)
        left = self.counts[key] - 1
        if left:
            self.counts[key] = left
        else:
            del self.counts[key]


def in_flight(spec: Any, field: str) -> Step:
    options = options_of(spec, field, ("amount", "sourceCriterion"))
    if options.get("amount") is None:
        raise FieldError(f"{field}.amount", "required: the most requests in flight per source")
    amount = as_int(options["amount"], f"{field}.amount", default=0, low=1, high=1 << 62)
    source = source_criterion(options.get("sourceCriterion"), f"{field}.sourceCriterion")
    return InFlight(field, amount=amount, source=source)

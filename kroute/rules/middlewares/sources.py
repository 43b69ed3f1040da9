"""Whose request it is: Traefik's `ipStrategy` and `sourceCriterion`, shared by ipAllowList,
rateLimit and inFlightReq (Traefik v3 docs, "IPAllowList" > ipStrategy, "RateLimit" >
sourceCriterion; traefik `pkg/ip/strategy.go`, `pkg/middlewares/extractor.go`).

- No `ipStrategy`: the connection's peer address (`UpstreamRequest.client`). X-Forwarded-For
  is never read unless a strategy says so.
- `ipStrategy.depth` N (> 0): the Nth X-Forwarded-For entry from the right; none when there
  are fewer entries (then ipAllowList refuses).
- `ipStrategy.excludedIPs`: the first entry from the right that is not in those IPs/CIDRs
  (ignored when `depth` is set, as in Traefik).
- `ipStrategy.ipv6Subnet` (Traefik v3.1+): an IPv6 address stands for its /N network, so a
  client cannot change source by changing its low bits.

The entries are the X-Forwarded-For the request arrived with: kroute's fronts pass on the
client's only from trusted proxies (`kroute.transport.proxy.forwarding_headers`) and append the
peer address as the last entry; that last entry is this hop's own and is not counted, so
`depth: 1` is the address the proxy in front of kroute saw, as in Traefik (whose proxy appends
the peer after the middlewares ran).

`sourceCriterion` picks one of `ipStrategy`, `requestHeaderName` (the header's value: requests
without it share one source, "", as in Traefik) or `requestHost` (the Host); none means the
peer address. Two at once is an error, as in Traefik.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
from typing import Any

import attrs

from kroute.objects import (
    FieldError,
    Network,
    as_flag,
    as_int,
    as_list,
    as_map,
    in_networks,
    req_str,
)
from kroute.pipeline.filters import header_name
from kroute.pipeline.steps import UpstreamRequest
from kroute.rules.middlewares.paths import options_of

_XFF = b"x-forwarded-for"
#: The key of `Source.digest`, new in each process: nobody outside can choose values that
#: collide (two sources sharing a bucket).
_DIGEST_KEY = os.urandom(16)


def network(text: str, field: str) -> Network:
    """An IP or a CIDR (v4 or v6) as a network; FieldError otherwise. Host bits are allowed
    (`10.0.0.1/8` is 10.0.0.0/8), as Go's net.ParseCIDR takes them."""
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise FieldError(field, f"{text!r} is not an IP address or a CIDR") from None


def networks(value: Any, field: str) -> tuple[Network, ...]:
    return tuple(network(req_str(v, f"{field}[{i}]"), f"{field}[{i}]")
                 for i, v in enumerate(as_list(value, field)))  # fmt: skip


def forwarded_for(request: UpstreamRequest) -> list[str]:
    """The X-Forwarded-For entries the request arrived with (see the module docstring: the
    front's own last entry, the peer, left out)."""
    values = [v for n, v in request.headers if n.lower() == _XFF]
    entries = [e.strip() for v in values for e in v.decode("latin-1").split(",")]
    if entries and same_ip(entries[-1], request.client):
        entries.pop()
    return entries


def same_ip(entry: str, client: str) -> bool:
    """Whether `entry` is the address `client` (as addresses, not strings: a front may give
    the peer in another spelling than the one it appended, `::ffff:a00:5` for
    `::ffff:10.0.0.5`, and a missed match would count the front's own entry as the client's;
    an IPv4-mapped address is its IPv4 address, as `in_networks` has it)."""
    if entry == client:
        return True
    try:
        return _plain(ipaddress.ip_address(entry)) == _plain(ipaddress.ip_address(client))
    except ValueError:
        return False


def _plain(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> object:
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return ip if mapped is None else mapped


@attrs.frozen
class IPStrategy:
    """How the client's IP is found (module docstring)."""

    depth: int = 0
    excluded: tuple[Network, ...] = ()
    ipv6_subnet: int | None = None

    @property
    def reads_forwarded(self) -> bool:
        return bool(self.depth or self.excluded)

    def ip(self, request: UpstreamRequest) -> str:
        """The client IP, "" when the strategy finds none."""
        if self.depth:
            entries = forwarded_for(request)
            found = entries[-self.depth] if len(entries) >= self.depth else ""
        elif self.excluded:
            found = next((e for e in reversed(forwarded_for(request))
                          if e and not in_networks(e, self.excluded)), "")  # fmt: skip
        else:
            found = request.client
        return self.subnet(found)

    def subnet(self, found: str) -> str:
        """`found`, or with `ipv6Subnet` the network an IPv6 address is in."""
        if self.ipv6_subnet is not None and ":" in found:
            try:
                net = ipaddress.ip_network(f"{found}/{self.ipv6_subnet}", strict=False)
            except ValueError:
                return found
            return str(net.network_address)
        return found


def ip_strategy(value: Any, field: str) -> IPStrategy:
    options = options_of(value, field, ("depth", "excludedIPs", "ipv6Subnet"))
    depth = as_int(options.get("depth"), f"{field}.depth", default=0, low=0, high=1 << 16)
    excluded = networks(options.get("excludedIPs"), f"{field}.excludedIPs")
    subnet = options.get("ipv6Subnet")
    if subnet is not None:
        subnet = as_int(subnet, f"{field}.ipv6Subnet", default=0, low=0, high=128)
    return IPStrategy(depth, () if depth else excluded, subnet)


@attrs.frozen
class Source:
    """A sourceCriterion: the key requests are counted under."""

    strategy: IPStrategy | None = IPStrategy()
    header: bytes | None = None  # requestHeaderName, lower case
    host: bool = False  # requestHost

    @property
    def touches(self) -> frozenset[bytes]:
        if self.header is not None:
            return frozenset({self.header})
        if self.host:
            return frozenset({b"host"})
        return frozenset({_XFF}) if self.strategy and self.strategy.reads_forwarded else frozenset()

    def key(self, request: UpstreamRequest) -> str:
        if self.header is not None:
            return (request.get(self.header) or b"").decode("latin-1")
        if self.host:
            host = (request.get(b"host") or b"").decode("latin-1")
            return host.lower()
        return (self.strategy or IPStrategy()).ip(request)

    def digest(self, request: UpstreamRequest) -> bytes:
        """The source (`key`) as what rateLimit and inFlightReq keep per source: its keyed
        16-byte BLAKE2b digest, so a source costs the same whatever its size (a header value
        may be tens of KiB, and up to 65,536 sources are kept)."""
        value = self.key(request).encode("utf-8", "surrogatepass")
        return hashlib.blake2b(value, digest_size=16, key=_DIGEST_KEY).digest()


def source_criterion(value: Any, field: str) -> Source:
    if value is None:
        return Source()
    options = options_of(value, field, ("ipStrategy", "requestHeaderName", "requestHost"))
    header = options.get("requestHeaderName") or None
    host = as_flag(options, "requestHost", field)
    strategy = options.get("ipStrategy")
    chosen = [k for k, v in (("ipStrategy", strategy is not None),
                             ("requestHeaderName", header is not None),
                             ("requestHost", host)) if v]  # fmt: skip
    if len(chosen) > 1:
        raise FieldError(field, f"{' and '.join(chosen)} are mutually exclusive (Traefik's rule)")
    if header is not None:
        where = f"{field}.requestHeaderName"
        return Source(None, header=header_name(req_str(header, where), where).lower())
    if host:
        return Source(None, host=True)
    if strategy is not None:
        return Source(ip_strategy(as_map(strategy, f"{field}.ipStrategy"), f"{field}.ipStrategy"))
    return Source()

"""Redirects a route answers instead of forwarding (pure): where to, and with which status.

Two sources, one value:
- the Ingress annotation `kroute.dev/ssl-redirect: "true"`: requests that arrived over plain
  HTTP get 308 to the same URL with https (what ingress-nginx's ssl-redirect does); requests
  that arrived over HTTPS are forwarded;
- the Gateway API HTTPRoute filter `RequestRedirect` (HTTPRouteFilter, standard channel):
  scheme, hostname, port, path (`ReplaceFullPath` or `ReplacePrefixMatch`) and statusCode
  (301 or 302, default 302). Attached to an HTTP listener (`parentRefs[].sectionName`), it is
  the Gateway API's per-listener HTTP to HTTPS redirect.

The Location is built from the request: scheme and host as redirected, the port as the spec
says (given, else the well-known port of a changed scheme, else the request's own), omitted
when it is the scheme's well-known port; the path as modified; the query kept. The routing
path has its unreserved percent-encodings decoded (`kroute.rules.request`): characters a URI
path cannot carry (a space, `{`, non-ASCII) are encoded again (RFC 3986 section 3.3), and an
IPv6 host gets its brackets back (section 3.2.2).
"""

from __future__ import annotations

import attrs

from kroute.pipeline.paths import replace_prefix, wire_path

WELL_KNOWN_PORTS = {"http": 80, "https": 443}


@attrs.frozen
class Redirect:
    status: int = 302
    scheme: str | None = None
    hostname: str | None = None
    port: int | None = None
    full_path: str | None = None  # ReplaceFullPath
    prefix: tuple[str, str] | None = None  # ReplacePrefixMatch: (matched prefix, replacement)
    only_from: str | None = None  # apply only to requests that came with this scheme

    def applies(self, scheme: str) -> bool:
        return self.only_from is None or self.only_from == scheme

    def location(self, *, scheme: str, host: str, port: int | None, path: str, query: str) -> str:
        """The Location for a request (`host` without port; `query` without `?`)."""
        target_scheme = self.scheme or scheme
        target_host = self.hostname or host
        if self.port is not None:
            target_port: int | None = self.port
        elif self.scheme is not None and self.scheme != scheme:
            target_port = WELL_KNOWN_PORTS.get(self.scheme)
        else:
            target_port = port
        if target_port == WELL_KNOWN_PORTS.get(target_scheme):
            target_port = None
        if self.full_path is not None:
            path = self.full_path
        elif self.prefix is not None:
            path = replace_prefix(path, *self.prefix)
        if ":" in target_host:
            target_host = f"[{target_host}]"
        authority = target_host if target_port is None else f"{target_host}:{target_port}"
        return f"{target_scheme}://{authority}{wire_path(path)}" + (f"?{query}" if query else "")

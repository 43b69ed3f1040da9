"""Entry points: the named ports a gateway listens on, and which routes each one serves (pure).

Traefik's model (docs/entrypoints.md): a gateway listens on named entry points (`web`,
`websecure`, ...). An IngressRoute's `spec.entryPoints` and the Ingress annotation
`traefik.ingress.kubernetes.io/router.entrypoints` name the ones that serve it (none named:
every one); `spec.tls` and `router.tls: "true"` limit it to entry points that terminate TLS.
A Gateway listener binds to the entry point whose listening port equals the listener's port
(Traefik's kubernetes gateway provider), or whose advertised port does (the port clients see
when a Service or a NAT maps it), and only when the protocol fits: HTTP on a plain entry point,
HTTPS on a TLS one.

Routes carry what they are attached to (`Attachment`), which depends only on the object, so the
compile (and its cache) does not depend on the entry points; each entry point's table is the
compiled routes its `admits` lets through (`CompileResult.table_for`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import attrs


@attrs.frozen
class EntryPoint:
    """A named place a gateway serves on.

    - `port`: the port it listens on, which Gateway listeners bind by;
    - `tls`: it terminates TLS (HTTPS), as Traefik's entry points with `http.tls`;
    - `host`: the address to listen on (for whoever opens the socket; routing ignores it);
    - `advertised_port`: the port clients and Gateway listeners use, when it differs (a
      Service mapping 80 to the gateway's 8080, say).
    """

    name: str
    port: int
    tls: bool = False
    host: str = ""
    advertised_port: int | None = None

    def binds(self, port: int, tls: bool) -> bool:
        """Whether a Gateway listener on `port` (HTTPS: `tls`) is served here."""
        return tls == self.tls and port in (self.port, self.advertised_port)

    @classmethod
    def parse(cls, text: str) -> EntryPoint:
        """`NAME=[HOST:]PORT[,tls][,advertised=PORT]` (the example gateway's and explain's
        `--entrypoint`); ValueError saying what is wrong."""
        name, sep, rest = text.partition("=")
        if not sep or not _NAME.fullmatch(name):
            raise ValueError(f"{text!r}: expected NAME=[HOST:]PORT[,tls][,advertised=PORT]")
        address, *options = rest.split(",")
        host, _, port = address.rpartition(":")
        tls, advertised = False, None
        for option in options:
            if option == "tls":
                tls = True
            elif option.startswith("advertised="):
                advertised = _port(option.removeprefix("advertised="), text)
            else:
                raise ValueError(f"{text!r}: unknown option {option!r} (tls, advertised=PORT)")
        return cls(name, _port(port, text), tls, host.strip("[]"), advertised)


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def _port(text: str, whole: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 0 <= int(text) < 65536:  # (0: any free port)
        raise ValueError(f"{whole!r}: {text!r} is not a port number")
    return int(text)


#: Traefik's names and the standard ports: what a Router serves when it is told nothing else.
DEFAULT_ENTRY_POINTS = (EntryPoint("web", 80), EntryPoint("websecure", 443, tls=True))


@attrs.frozen
class Attachment:
    """What a route is attached to; a route with none (`Route.attachment is None`) is served
    on every entry point.

    - `names`: the entry points named by the object (None: any);
    - `listeners`: (port, HTTPS) of the Gateway listeners it is attached to (None: not a
      Gateway API route);
    - `tls`: only on entry points that terminate TLS.
    """

    names: frozenset[str] | None = None
    listeners: frozenset[tuple[int, bool]] | None = None
    tls: bool = False

    def admits(self, entry_point: EntryPoint) -> bool:
        if self.tls and not entry_point.tls:
            return False
        if self.names is not None and entry_point.name not in self.names:
            return False
        return self.listeners is None or any(entry_point.binds(*lst) for lst in self.listeners)

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {}
        if self.names is not None:
            out["names"] = sorted(self.names)
        if self.listeners is not None:
            out["listeners"] = [{"port": p, "https": t} for p, t in sorted(self.listeners)]
        if self.tls:
            out["tls"] = True
        return out


def check_entry_points(entry_points: Sequence[EntryPoint]) -> tuple[EntryPoint, ...]:
    """The entry points, or ValueError for none at all or a name given twice."""
    names = [e.name for e in entry_points]
    if not names:
        raise ValueError("at least one entry point is required")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"entry point names must be unique: {', '.join(twice)}")
    return tuple(entry_points)


def unserved_names(
    named: Iterable[tuple[str, str, frozenset[str]]], entry_points: Sequence[EntryPoint]
) -> list[str]:
    """Notes for entry point names that objects use and no entry point has: (object, field,
    names) -> "... 'x' is not an entry point of this gateway"."""
    known = {e.name for e in entry_points}
    notes = []
    for source, field, names in named:
        for name in sorted(names - known):
            notes.append(f"{source}: {field}: {name!r} is not an entry point of this gateway "
                         f"({', '.join(sorted(known))}): not served there")  # fmt: skip
    return notes

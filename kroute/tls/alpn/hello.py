"""A TLS ClientHello's server name and ALPN protocols, read from the first bytes of a connection
(pure; hostile input).

Why: the ssl module's `sni_callback` runs before ALPN is negotiated and is not told which
protocols the client offers, so it cannot tell an ACME validator (ALPN `acme-tls/1`, RFC 8737)
from a browser asking for the same name. While a TLS-ALPN-01 challenge is pending, the TLS fronts
read the ClientHello themselves first (`kroute.tls.alpn`) and hand it to the ssl module after.

`parse_client_hello(data)` takes the bytes received so far and answers one of:
- `ClientHello(server_name, alpn)`: the whole message arrived and is well formed;
- `Incomplete(needed)`: not yet; at least `needed` bytes in all are required to go on;
- `Malformed(reason)`: not a TLS ClientHello kroute can read (not TLS, an SSLv2 hello, a
  length that contradicts another, a message over `MAX_HELLO`, a bad extension). The caller
  leaves such connections to the ssl module, which refuses them as it always does: the
  parser's job is to find the two extensions, not to be a second TLS implementation.

Every length is checked against the bytes that hold it before it is used, so no input makes
it raise, read out of bounds or allocate more than the input (tested with hypothesis).
"""

from __future__ import annotations

import attrs

#: TLS record header: content type (1), legacy version (2), length (2). RFC 8446 section 5.1.
RECORD_HEADER = 5
_HANDSHAKE = 22
_CLIENT_HELLO = 1
#: A record's fragment is at most 2^14 bytes (RFC 8446 section 5.1).
_MAX_FRAGMENT = 1 << 14
#: The largest ClientHello read. Browsers send 0.5-2 KB (post-quantum key shares included);
#: OpenSSL accepts larger ones, which are then simply not inspected (Malformed).
MAX_HELLO = 1 << 14
#: The most bytes read (or peeked) to find it: two full records. `Incomplete.needed` never
#: exceeds it; a ClientHello spread wider is Malformed.
MAX_INPUT = 2 * (RECORD_HEADER + _MAX_FRAGMENT)
#: Extension types: server_name (RFC 6066 section 3), ALPN (RFC 7301 section 3.1).
_SERVER_NAME = 0
_ALPN = 16
_HOST_NAME = 0


@attrs.frozen
class ClientHello:
    """What the front needs of a ClientHello: the SNI host name (lower case; None when absent)
    and the ALPN protocol names offered, in the client's order (empty when absent)."""

    server_name: str | None
    alpn: tuple[bytes, ...]


@attrs.frozen
class Incomplete:
    """More bytes are needed: at least `needed` in all."""

    needed: int


@attrs.frozen
class Malformed:
    """Not a ClientHello kroute reads; `reason` is for debug logs."""

    reason: str


Parsed = ClientHello | Incomplete | Malformed


class _Bad(Exception):
    """Inside the parser only: the message contradicts itself."""


def parse_client_hello(data: bytes) -> Parsed:
    """The ClientHello at the start of `data` (see the module docstring)."""
    message = bytearray()
    offset = 0
    # RFC 8446 section 5.1: a handshake message may be split over several records (and one
    # record could hold several messages: only the first, the ClientHello, is read).
    while True:
        if len(data) < offset + RECORD_HEADER:
            return _incomplete(offset + RECORD_HEADER)
        kind, major, length = data[offset], data[offset + 1], _uint(data, offset + 3, 2)
        if kind != _HANDSHAKE or major != 3:
            return Malformed("not a TLS handshake record")
        if length == 0 or length > _MAX_FRAGMENT:
            return Malformed(f"record length {length}")
        end = offset + RECORD_HEADER + length
        if len(data) < end:
            return _incomplete(end)
        message += data[offset + RECORD_HEADER : end]
        offset = end
        if len(message) >= 4:
            if message[0] != _CLIENT_HELLO:
                return Malformed("the first handshake message is not a ClientHello")
            size = 4 + _uint(message, 1, 3)
            if size > MAX_HELLO:
                return Malformed(f"a ClientHello of {size} bytes")
            if len(message) >= size:
                try:
                    return _client_hello(bytes(message[4:size]))
                except _Bad as exc:
                    return Malformed(str(exc))


def _incomplete(needed: int) -> Incomplete | Malformed:
    if needed > MAX_INPUT:
        return Malformed(f"a ClientHello spread over more than {MAX_INPUT} bytes")
    return Incomplete(needed)


def _uint(data: bytes | bytearray, at: int, size: int) -> int:
    return int.from_bytes(data[at : at + size], "big")


class _Reader:
    """Bounded reads over one byte string: any read past its end is `_Bad`."""

    __slots__ = ("at", "data", "end")

    def __init__(self, data: bytes, at: int = 0, end: int | None = None) -> None:
        self.data = data
        self.at = at
        self.end = len(data) if end is None else end

    def take(self, size: int) -> bytes:
        if size > self.end - self.at:
            raise _Bad("a length runs past its container")
        self.at += size
        return self.data[self.at - size : self.at]

    def uint(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def vector(self, length_size: int) -> _Reader:
        """The length-prefixed vector at the read position (RFC 8446 section 3.4), skipped."""
        size = self.uint(length_size)
        self.take(size)
        return _Reader(self.data, self.at - size, self.at)

    def done(self) -> bool:
        return self.at == self.end


def _client_hello(body: bytes) -> ClientHello:
    """RFC 8446 section 4.1.2 (the same layout as TLS 1.2's, RFC 5246 section 7.4.1.2)."""
    reader = _Reader(body)
    reader.take(2 + 32)  # legacy_version, random
    reader.vector(1)  # legacy_session_id
    reader.vector(2)  # cipher_suites
    reader.vector(1)  # legacy_compression_methods
    if reader.done():
        return ClientHello(None, ())  # no extensions at all (TLS 1.2 allows it)
    extensions = reader.vector(2)
    if not reader.done():
        raise _Bad("bytes after the extensions")
    seen: set[int] = set()
    server_name: str | None = None
    alpn: tuple[bytes, ...] = ()
    # The extensions are walked by offset: a dozen or more per ClientHello, two of them read.
    data, at, end = body, extensions.at, extensions.end
    while at < end:
        if end - at < 4:
            raise _Bad("a truncated extension header")
        kind, size = data[at] << 8 | data[at + 1], data[at + 2] << 8 | data[at + 3]
        at += 4
        if size > end - at:
            raise _Bad("a length runs past its container")
        if kind in seen:  # RFC 8446 section 4.2: at most one of each type
            raise _Bad(f"extension {kind} twice")
        seen.add(kind)
        if kind == _SERVER_NAME:
            server_name = _server_name(_Reader(data, at, at + size))
        elif kind == _ALPN:
            alpn = _protocols(_Reader(data, at, at + size))
        at += size
    return ClientHello(server_name, alpn)


def _server_name(content: _Reader) -> str:
    """RFC 6066 section 3: a list holding one host_name (as OpenSSL requires), ASCII, no
    trailing dot."""
    names = content.vector(2)
    if not content.done():
        raise _Bad("bytes after server_name's list")
    if names.uint(1) != _HOST_NAME:
        raise _Bad("a server name that is not a host_name")
    name = names.vector(2)
    if not names.done():
        raise _Bad("more than one server name")
    raw = name.take(name.end - name.at)
    if not raw or not raw.isascii() or b"\x00" in raw:
        raise _Bad("a server name that is not an ASCII host name")
    return raw.decode("ascii").lower()


def _protocols(content: _Reader) -> tuple[bytes, ...]:
    """RFC 7301 section 3.1: a non-empty list of non-empty protocol names."""
    names = content.vector(2)
    if not content.done() or names.done():
        raise _Bad("a malformed ALPN list")
    protocols = []
    while not names.done():
        size = names.uint(1)
        if size == 0:
            raise _Bad("an empty ALPN protocol name")
        protocols.append(names.take(size))
    return tuple(protocols)


#: A fatal `no_application_protocol` alert (RFC 8446 section 6; RFC 7301 section 3.2), sent in
#: the clear before any handshake: what a client offering only protocols the server does not
#: speak for that name is owed.
NO_APPLICATION_PROTOCOL = bytes([21, 3, 3, 0, 2, 2, 120])

"""htpasswd password hashes, checked as Traefik checks them (go-http-auth's `CheckSecret`):

- bcrypt, `$2y$`, `$2a$`, `$2b$` (Apache `htpasswd -B`): the `bcrypt` package (Python's
  standard library has no bcrypt, and `crypt` is gone since 3.13);
- `{SHA}` + base64(SHA-1) (`htpasswd -s`);
- MD5-crypt, `$apr1$` (Apache's, `htpasswd -m`, the default) and `$1$` (FreeBSD's): the same
  algorithm with a different magic, written here on hashlib;
- anything else is not a hash go-http-auth knows, and no password matches it (a plain-text
  password in an htpasswd line never matches in Traefik either): `kind` says "unknown", and
  compiling the Middleware refuses such a line.

Every comparison of a computed hash with the stored one is constant-time
(`hmac.compare_digest`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

import bcrypt

_BCRYPT = ("$2y$", "$2a$", "$2b$")
_MD5 = ("$apr1$", "$1$")
_ITOA64 = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
#: bcrypt reads at most 72 bytes of a password (Go's and OpenBSD's cut it there too).
_BCRYPT_MAX = 72


def kind(stored: str) -> str:
    """ "bcrypt", "sha1", "md5" or "unknown"."""
    if stored.startswith(_BCRYPT):
        return "bcrypt"
    if stored.startswith("{SHA}"):
        return "sha1"
    if stored.startswith(_MD5) and stored.count("$") == 3:
        return "md5"
    return "unknown"


def check(password: bytes, stored: str) -> bool:
    """Whether `password` matches the htpasswd hash `stored`."""
    found = kind(stored)
    if found == "bcrypt":
        try:
            return bcrypt.checkpw(password[:_BCRYPT_MAX], stored.encode("ascii"))
        except ValueError:  # (a malformed hash: refused at compile time, never matches)
            return False
    if found == "sha1":
        computed = b"{SHA}" + base64.b64encode(hashlib.sha1(password).digest())
        return hmac.compare_digest(computed, stored.encode("ascii", "replace"))
    if found == "md5":
        _, magic, salt, _ = stored.split("$")
        computed = md5_crypt(password, salt.encode("ascii", "replace"), f"${magic}$".encode())
        return hmac.compare_digest(computed, stored.encode("ascii", "replace"))
    return False


class Verified:
    """Credentials that matched their bcrypt hash, remembered (bounded): bcrypt costs tens of
    milliseconds by design (about 60 ms at cost 10 here) and a front's event loop waits for it,
    so a client sending its right password with every request would stall the gateway each
    time. Only matches are kept, under an HMAC of hash and password with a key made per
    process (no password or fast hash of one is stored); a wrong password, or an unknown user
    (checked against the dummy hash), pays bcrypt every time. Past `limit` entries the memory
    starts again empty."""

    __slots__ = ("_key", "_matched", "limit")

    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
        self._key = os.urandom(32)
        self._matched: set[bytes] = set()

    def check(self, password: bytes, stored: str) -> bool:
        """`check(password, stored)`, remembered when it matched a bcrypt hash."""
        if kind(stored) != "bcrypt":
            return check(password, stored)  # (microseconds: nothing to remember)
        seen = hmac.new(self._key, stored.encode("ascii", "replace") + b"\0" + password,
                        hashlib.sha256).digest()  # fmt: skip
        if seen in self._matched:
            return True
        if not check(password, stored):
            return False
        if len(self._matched) >= self.limit:
            self._matched.clear()
        self._matched.add(seen)
        return True


def valid(stored: str) -> bool:
    """Whether `stored` is a well-formed hash of a kind `check` knows."""
    found = kind(stored)
    if found == "bcrypt":
        cost = stored[4:6]  # (ASCII digits only: "¹" is a digit to str.isdigit)
        return len(stored) == 60 and cost.isascii() and cost.isdigit() and stored[6] == "$"
    if found == "sha1":
        try:
            return len(base64.b64decode(stored[5:], validate=True)) == 20
        except ValueError:
            return False
    return found == "md5"


def dummy(stored: str) -> str:
    """A hash of the same kind and cost as `stored` that no password matches in practice,
    checked instead when the user does not exist, so that the answer takes as long as for a
    user that does (no user enumeration by timing)."""
    found = kind(stored)
    if found == "bcrypt":
        return stored[:7] + "." * 53  # (same cost: bcrypt's time depends only on it)
    if found == "sha1":
        return "{SHA}" + "A" * 27 + "="
    return "$apr1$........$" + "." * 22


def md5_crypt(password: bytes, salt: bytes, magic: bytes) -> bytes:
    """Poul-Henning Kamp's MD5-crypt (FreeBSD `$1$`; Apache `$apr1$` differs only in the
    magic): `magic salt $ hash`, the salt cut at 8 bytes."""
    salt = salt[:8]
    alternate = hashlib.md5(password + salt + password).digest()
    context = hashlib.md5(password + magic + salt)
    for left in range(len(password), 0, -16):
        context.update(alternate[: min(16, left)])
    bits = len(password)
    while bits:
        context.update(b"\0" if bits & 1 else password[:1])
        bits >>= 1
    final = context.digest()
    for i in range(1000):  # (the rounds exist to make the hash slow)
        step = hashlib.md5(password if i & 1 else final)
        if i % 3:
            step.update(salt)
        if i % 7:
            step.update(password)
        step.update(final if i & 1 else password)
        final = step.digest()
    out = bytearray()
    for a, b, c in ((0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)):
        out += _to64((final[a] << 16) | (final[b] << 8) | final[c], 4)
    out += _to64(final[11], 2)
    return magic + salt + b"$" + bytes(out)


def _to64(value: int, count: int) -> bytes:
    out = bytearray()
    for _ in range(count):
        out.append(_ITOA64[value & 0x3F])
        value >>= 6
    return bytes(out)

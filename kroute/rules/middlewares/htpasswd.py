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
    """bcrypt verdicts remembered (bounded), so that bcrypt, tens of milliseconds by design
    (about 60 ms at cost 10 here), runs once per credential rather than per request: a client
    sends its password with every request. What is kept is a keyed MAC of user name, hash and
    password under a key made per process (no password, nor a fast hash of one, is stored).

    - Matches, at most `limit`: only a right password can add one.
    - Failures, at most `failures` and apart from the matches, so that a flood of wrong
      passwords (each new one pays bcrypt, off the event loop: `BasicAuth`) cannot push the
      matches out. A client repeating the same wrong credentials (a stale password in a
      script) pays bcrypt once. The user name is in the key, so two unknown users (both
      checked against the same dummy hash) are not one entry: the first try of any (user,
      password) pays bcrypt, whether the user exists or not (no user enumeration by timing).

    Past its bound a memory starts again empty. Other kinds of hash take microseconds and are
    computed every time."""

    __slots__ = ("_failed", "_key", "_matched", "failures", "limit")

    def __init__(self, limit: int = 4096, failures: int = 1024) -> None:
        self.limit = limit
        self.failures = failures
        self._key = os.urandom(32)
        self._matched: set[bytes] = set()
        self._failed: set[bytes] = set()

    def key(self, user: str, password: bytes, stored: str) -> bytes:
        """What the verdict on (user, password, stored) is remembered under: keyed BLAKE2b
        (a MAC in one call, cheaper per request than HMAC-SHA256), the name and hash
        length-prefixed so that no two triples run together."""
        name = user.encode("utf-8", "surrogatepass")
        text = b"%d:%b%d:%b%b" % (len(name), name, len(stored), stored.encode("ascii", "replace"),
                                 password)  # fmt: skip
        return hashlib.blake2b(text, key=self._key, digest_size=32).digest()

    def known(self, user: str, password: bytes, stored: str) -> tuple[bool | None, bytes]:
        """(the verdict if it costs nothing now, else None; the key to `remember` it under):
        a hash other than bcrypt is checked at once, a bcrypt verdict is looked up."""
        if kind(stored) != "bcrypt":
            return check(password, stored), b""  # (microseconds: nothing to remember)
        seen = self.key(user, password, stored)
        if seen in self._matched:
            return True, seen
        if seen in self._failed:
            return False, seen
        return None, seen

    def remember(self, seen: bytes, matched: bool) -> None:
        """The verdict `check` gave for the credentials `key` made `seen`."""
        kept, bound = (self._matched, self.limit) if matched else (self._failed, self.failures)
        if len(kept) >= bound:
            kept.clear()
        kept.add(seen)

    def check(self, user: str, password: bytes, stored: str) -> bool:
        """`check(password, stored)`, bcrypt verdicts remembered (blocking: offline, or in a
        worker thread)."""
        verdict, seen = self.known(user, password, stored)
        if verdict is not None:
            return verdict
        matched = check(password, stored)
        self.remember(seen, matched)
        return matched


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

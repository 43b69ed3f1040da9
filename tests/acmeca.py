"""A real ACME CA for tests: Pebble from ../shared/acme (its README), started once per session.

Pebble validates for real: HTTP-01 against 127.0.0.1:`http01_port`, TLS-ALPN-01 against
127.0.0.1:`tlsalpn01_port`, every name resolving to 127.0.0.1; 5% of nonces are refused
(badNonce) and half of the orders reuse a valid authorization, as a real CA may do. A missing
../shared/acme fails the tests that need it.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import socket
import ssl
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import attrs

SHARED_ACME = Path(__file__).resolve().parent.parent.parent / "shared" / "acme"


@attrs.frozen
class AcmeCA:
    directory: str
    ca_cert: str  # trust this for Pebble's own HTTPS
    management: str
    http01_port: int
    tlsalpn01_port: int
    log: Path
    #: The state file's values, all of them (../shared/acme/README.md).
    state: dict[str, str] = attrs.field(factory=dict, repr=False)

    def root(self) -> bytes:
        """The root that issued certificates chain to (new on every start)."""
        context = ssl.create_default_context(cafile=self.ca_cert)
        with urllib.request.urlopen(f"{self.management}/roots/0", context=context) as answer:
            return bytes(answer.read())

    def orders(self) -> int:
        """How many orders Pebble has made (its log: one line per order stored; an order it
        refuses, for a blocked name say, is not stored)."""
        return self.log.read_text().count("Added order")

    def resolver(self, name: str = "pebble", **options: str) -> str:
        """A `--certresolver` value for this CA."""
        extra = "".join(f",{k}={v}" for k, v in options.items())
        return f"{name}={self.directory},email=admin@example.com,ca={self.ca_cert}{extra}"


def free_ports(count: int) -> list[int]:
    socks = [socket.socket() for _ in range(count)]
    for sock in socks:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in socks]
    for sock in socks:
        sock.close()
    return ports


@contextlib.contextmanager
def pebble_ca(workdir: Path, **env: str) -> Iterator[AcmeCA]:
    """Start Pebble (up.sh, with `env` as its knobs), stop it afterwards."""
    up = SHARED_ACME / "up.sh"
    if not up.exists():
        raise FileNotFoundError(f"{up} is missing: the ACME tests need ../shared/acme")
    http01, tlsalpn01 = free_ports(2)
    state = workdir / "acme.env"
    environ = {**os.environ, "ACME_HTTP01_PORT": str(http01), "ACME_TLSALPN01_PORT":
               str(tlsalpn01), "ACME_OWNER_PID": str(os.getpid()), **env}  # fmt: skip
    subprocess.run([up, state], env=environ, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        values = dict(shlex.split(line)[0].split("=", 1)
                      for line in state.read_text().splitlines() if line.strip())  # fmt: skip
        yield AcmeCA(values["ACME_DIRECTORY_URL"], values["ACME_CA_CERT"],
                     values["ACME_MANAGEMENT_URL"], http01, tlsalpn01,
                     Path(values["PEBBLE_LOG"]), values)  # fmt: skip
    finally:
        subprocess.run([SHARED_ACME / "down.sh", state], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip

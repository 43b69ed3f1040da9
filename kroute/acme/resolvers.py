"""Certificate resolvers: where certificates come from and how names are proven (pure).

Traefik's name for an ACME configuration (`certificatesResolvers.NAME.acme`): an ACME
directory, an account email, a key type and a challenge. Routes name a resolver (IngressRoute
`tls.certResolver`, the Ingress annotation `traefik.ingress.kubernetes.io/router.tls.
certresolver`, a Gateway listener's `tls.options["kroute.dev/certresolver"]`); the names they
route become certificates the resolver orders (`kroute.acme.plan`).

The text form, the example gateway's `--certresolver`:

    NAME=DIRECTORY_URL,email=ADDRESS[,challenge=http-01|tls-alpn-01][,entrypoint=EP]
        [,keytype=EC256|EC384|RSA2048|RSA4096][,profile=PROFILE][,ca=PEM_FILE]

`ca` is a CA bundle trusted for the ACME server's own HTTPS (a test CA such as Pebble's);
`profile` asks the server for a certificate profile (draft-aaron-acme-profiles: Let's
Encrypt's `shortlived`, `tlsserver`); `entrypoint` is where challenges are answered (HTTP-01:
a plain HTTP entry point, `web` by default; TLS-ALPN-01: a TLS one, `websecure`).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import attrs

#: Let's Encrypt's directories (the staging one first: its rate limits are generous).
LETS_ENCRYPT_STAGING = "https://acme-staging-v02.api.letsencrypt.org/directory"
LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"

HTTP_01 = "http-01"
TLS_ALPN_01 = "tls-alpn-01"
CHALLENGES = (HTTP_01, TLS_ALPN_01)
#: Traefik's key types (`keyType`); the default is Traefik's too.
KEY_TYPES = ("EC256", "EC384", "RSA2048", "RSA4096")
_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_OPTIONS = ("email", "challenge", "entrypoint", "keytype", "profile", "ca")


@attrs.frozen
class Resolver:
    """One certificate resolver (see the module docstring)."""

    name: str
    directory: str
    email: str
    challenge: str = HTTP_01
    entry_point: str = "web"
    key_type: str = "EC256"
    profile: str | None = None
    ca_bundle: str | None = None

    @classmethod
    def parse(cls, text: str) -> Resolver:
        """The `--certresolver` text form; ValueError saying what is wrong and how it is
        written."""
        usage = "NAME=DIRECTORY_URL,email=ADDRESS[,challenge=http-01|tls-alpn-01][,...]"
        name, sep, rest = text.partition("=")
        if not sep:
            raise ValueError(f"{text!r}: expected {usage}")
        directory, *parts = rest.split(",")
        options: dict[str, str] = {}
        for part in parts:
            key, sep, value = part.partition("=")
            if not sep or key not in _OPTIONS:
                raise ValueError(f"resolver {name}: {part!r} is not one of "
                                 f"{', '.join(o + '=...' for o in _OPTIONS)}")  # fmt: skip
            if key in options:
                raise ValueError(f"resolver {name}: {key} given twice")
            options[key] = value
        challenge = options.get("challenge", HTTP_01)
        default_entry = "websecure" if challenge == TLS_ALPN_01 else "web"
        return cls(
            name=name, directory=directory, email=options.get("email", ""),
            challenge=challenge, entry_point=options.get("entrypoint", default_entry),
            key_type=options.get("keytype", "EC256"), profile=options.get("profile") or None,
            ca_bundle=options.get("ca") or None,
        )  # fmt: skip

    def __attrs_post_init__(self) -> None:
        where = f"resolver {self.name}"
        if not _NAME.fullmatch(self.name):
            raise ValueError(f"{self.name!r}: a resolver name is lower-case letters, digits "
                             "and '-' (it names Secrets and labels)")  # fmt: skip
        url = urlsplit(self.directory)
        if url.scheme != "https" or not url.hostname:
            raise ValueError(f"{where}: the directory {self.directory!r} is not an https:// URL")
        if "@" not in self.email or self.email.startswith("@") or self.email.endswith("@"):
            raise ValueError(f"{where}: email={self.email!r} is not an email address "
                             "(the ACME account's contact)")  # fmt: skip
        if self.challenge not in CHALLENGES:
            raise ValueError(f"{where}: challenge={self.challenge!r} is not one of "
                             f"{', '.join(CHALLENGES)}")  # fmt: skip
        if self.key_type not in KEY_TYPES:
            raise ValueError(f"{where}: keytype={self.key_type!r} is not one of "
                             f"{', '.join(KEY_TYPES)}")  # fmt: skip
        if not self.entry_point:
            raise ValueError(f"{where}: entrypoint= names no entry point")

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "directory": self.directory, "challenge": self.challenge,
                "entry_point": self.entry_point, "key_type": self.key_type,
                "profile": self.profile}  # fmt: skip

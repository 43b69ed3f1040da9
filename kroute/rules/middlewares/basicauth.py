"""Traefik's basicAuth middleware as a step (Traefik v3 docs, "HTTP Middlewares" > BasicAuth;
traefik `pkg/middlewares/auth/basic_auth.go`; its Kubernetes CRD provider for the Secret).

Users are htpasswd lines `name:hash` (`kroute.rules.middlewares.htpasswd`: bcrypt, SHA1,
MD5-crypt), from the Middleware's namespace's Secret named by `secret`:
- a Secret of type `kubernetes.io/basic-auth`: its `username` and `password` keys, one user
  (the password kept as its SHA-1 `{SHA}` hash, as Traefik does);
- any other Secret: exactly one key (`users`, by convention), its non-empty lines the users
  (Traefik's rule: more keys is an error);
- or inline `users` lines. Traefik's Kubernetes CRD has no `users` field ("for security
  reasons", its docs say: a Middleware is not a Secret), so the API server drops it from a
  Middleware it stores; kroute reads it from manifests (`kroute check`, tests) and adds the
  Secret's users to it, as Traefik's file provider adds `usersFile` to `users`.
A later line for the same name replaces an earlier one (Traefik's map).

A request passes with an `Authorization: Basic base64(user:password)` header (the scheme's name
in any case, strict base64, as Go's `Request.BasicAuth`) whose password matches the user's
hash; then `headerField`, when set, carries the user name to the backend (replacing whatever
the client sent in it) and `removeHeader` drops Authorization. Anything else (no header,
another scheme, bad base64, no colon, an unknown user, a wrong password) is answered 401 with
`WWW-Authenticate: Basic realm="<realm>"` (realm `traefik` by default) and never forwarded. An
unknown user is checked against a hash of the same kind and cost as a real one, so the answer
takes as long either way (no user enumeration by timing); hashes are compared in constant time.
A bcrypt verdict is remembered (`htpasswd.Verified`), so a client that keeps sending the same
credentials pays bcrypt once, not per request; a new password pays it, in a worker thread
(`BasicAuth`), so that the event loop never stalls on it.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
from collections.abc import Mapping
from typing import Any

import attrs

from kroute.objects import FieldError, Obj, ObjectRef, as_flag, as_list, as_map, as_str
from kroute.pipeline.fetch import Fetch
from kroute.pipeline.filters import header_name, header_value
from kroute.pipeline.steps import WAIT, Answer, Deferring, Step, UpstreamRequest
from kroute.rules.middlewares import htpasswd
from kroute.rules.middlewares.paths import options_of

Secrets = Mapping[tuple[str, str], Obj]
BASIC_AUTH_TYPE = "kubernetes.io/basic-auth"
DEFAULT_REALM = "traefik"
_BODY = b"401 Unauthorized\n"


@attrs.frozen
class BasicAuth(Deferring):
    """The check, on every front: credentials whose verdict costs nothing now (a bcrypt one
    remembered, another kind of hash) are decided at once; a bcrypt check that must run goes to
    a worker thread through the front's `offload` (`WAIT`, then `request_async`), so the event
    loop serves other requests meanwhile, and at most `Router.offload`'s threads are busy with
    bcrypt however many wrong passwords arrive. Offline (no offload) it runs inline."""

    users: Mapping[str, str] = attrs.field(kw_only=True, repr=False)  # name -> hash
    realm: str = attrs.field(default=DEFAULT_REALM, kw_only=True)
    header_field: bytes | None = attrs.field(default=None, kw_only=True)
    remove_header: bool = attrs.field(default=False, kw_only=True)
    #: Checked when the user does not exist (`htpasswd.dummy`).
    dummy: str = attrs.field(default="", kw_only=True, repr=False)
    #: Verdicts remembered (`htpasswd.Verified`): state, not configuration.
    verified: htpasswd.Verified = attrs.field(
        factory=htpasswd.Verified, kw_only=True, repr=False, eq=False
    )

    @property
    def touches(self) -> frozenset[bytes]:
        extra = {self.header_field.lower()} if self.header_field is not None else set()
        return frozenset({b"authorization", *extra})

    def request(self, request: UpstreamRequest) -> Answer | None:
        found = self._credentials(request)
        if found is None:
            return self._refuse("no Basic credentials")
        user, password, hashed, exists = found
        matched, _ = self.verified.known(user, password, hashed)
        if matched is None:
            if request.offload is not None:
                return WAIT  # (bcrypt, in a worker thread: `request_async`)
            matched = self.verified.check(user, password, hashed)
        return self._decided(request, user, exists and matched)

    async def request_async(self, request: UpstreamRequest, fetch: Fetch | None) -> Answer | None:
        found = self._credentials(request)
        if found is None or request.offload is None:
            return self.request(request)
        user, password, hashed, exists = found
        matched, seen = self.verified.known(user, password, hashed)
        if matched is None:
            check = functools.partial(htpasswd.check, password, hashed)
            matched = bool(await request.offload(check))
            self.verified.remember(seen, matched)
        return self._decided(request, user, exists and matched)

    def _credentials(self, request: UpstreamRequest) -> tuple[str, bytes, str, bool] | None:
        """(user, password, the hash to check it against, whether the user exists), or None
        without Basic credentials. An unknown user is checked against the dummy hash."""
        credentials = basic_credentials(request.get(b"authorization"))
        if credentials is None:
            return None
        user, password = credentials
        stored = self.users.get(user)
        return user, password, self.dummy if stored is None else stored, stored is not None

    def _decided(self, request: UpstreamRequest, user: str, matched: bool) -> Answer | None:
        if not matched:
            return self._refuse("wrong user name or password")
        if self.header_field is not None:
            request.set(self.header_field, user.encode("latin-1"))
        if self.remove_header:
            request.remove(b"authorization")
        return None

    def _refuse(self, why: str) -> Answer:
        challenge = 'Basic realm="{}"'.format(self.realm.replace("\\", "\\\\").replace('"', '\\"'))
        headers = ((b"WWW-Authenticate", challenge.encode("utf-8")),
                   (b"Content-Type", b"text/plain"))  # fmt: skip
        return Answer(401, why, headers=headers, body=_BODY)


def basic_credentials(value: bytes | None) -> tuple[str, bytes] | None:
    """(user, password) from an Authorization header value, as Go's `parseBasicAuth`: the
    `Basic ` prefix in any case, then strict base64 of `user:password` (the first colon)."""
    if value is None or len(value) < 6 or value[:6].lower() != b"basic ":
        return None
    try:
        decoded = base64.b64decode(value[6:], validate=True)
    except (binascii.Error, ValueError):
        return None
    user, colon, password = decoded.partition(b":")
    if not colon:
        return None
    return user.decode("latin-1"), password


def secret_name(spec: Any) -> str | None:
    """The Secret a basicAuth spec reads (for the compile cache), or None."""
    name = spec.get("secret") if isinstance(spec, dict) else None
    return name if isinstance(name, str) and name else None


def basic_auth(spec: Any, field: str, ref: ObjectRef, secrets: Secrets) -> Step:
    options = options_of(spec, field, ("users", "secret", "realm", "removeHeader",
                                       "headerField"))  # fmt: skip
    lines = [(f"{field}.users[{i}]", as_str(line, f"{field}.users[{i}]") or "")
             for i, line in enumerate(as_list(options.get("users"), f"{field}.users"))]  # fmt: skip
    name = as_str(options.get("secret"), f"{field}.secret")
    if name:
        lines += _secret_lines(secrets.get((ref.namespace, name)), ref.namespace, name,
                               f"{field}.secret")  # fmt: skip
    header = as_str(options.get("headerField"), f"{field}.headerField")
    users: dict[str, str] = {}
    for where, line in lines:
        user, colon, stored = line.strip().partition(":")
        if not colon or ":" in stored or not user:
            raise FieldError(where, "not an htpasswd line (name:hash)")
        if header:  # (the name goes to the backend in that header: nothing may split it)
            header_value(user, f"{where}: user {user[:40]!r}")
        if not htpasswd.valid(stored):
            raise FieldError(
                where,
                f"user {user!r}: not a bcrypt, SHA1 ({{SHA}}) or MD5 "
                "($apr1$) hash (a plain password never matches in Traefik)",
            )
        users[user] = stored
    if not users:
        raise FieldError(field, "no users: name a Secret in `secret`")
    realm = as_str(options.get("realm"), f"{field}.realm") or DEFAULT_REALM
    header_value(realm, f"{field}.realm")
    strongest = max(users.values(), key=lambda h: (htpasswd.kind(h) == "bcrypt", h[4:6]))
    return BasicAuth(
        field, users=users, realm=realm, dummy=htpasswd.dummy(strongest),
        header_field=header_name(header, f"{field}.headerField") if header else None,
        remove_header=as_flag(options, "removeHeader", field),
    )  # fmt: skip


def _secret_lines(secret: Obj | None, namespace: str, name: str, field: str
                  ) -> list[tuple[str, str]]:  # fmt: skip
    """The htpasswd lines of Secret `namespace/name` (the module docstring's two forms)."""
    if secret is None:
        raise FieldError(field, f"Secret {namespace}/{name} does not exist")
    data = {**_decoded(secret.get("data"), f"{field}: Secret {namespace}/{name} data"),
            **{k: v.encode() for k, v in as_map(secret.get("stringData"), "stringData").items()
               if isinstance(v, str)}}  # fmt: skip
    where = f"{field}: Secret {namespace}/{name}"
    if secret.get("type") == BASIC_AUTH_TYPE:
        if "username" not in data or "password" not in data:
            raise FieldError(where, "a kubernetes.io/basic-auth Secret needs both username "
                             "and password")  # fmt: skip
        digest = base64.b64encode(hashlib.sha1(data["password"]).digest()).decode()
        return [(where, f"{data['username'].decode('latin-1')}:{{SHA}}{digest}")]
    if len(data) != 1:
        raise FieldError(where, f"has {len(data)} keys: exactly one (users) holds the htpasswd "
                         "lines (Traefik's rule)")  # fmt: skip
    (text,) = data.values()
    lines = [line.strip() for line in text.decode("latin-1").splitlines()]
    return [(where, line) for line in lines if line]


def _decoded(value: Any, field: str) -> dict[str, bytes]:
    out = {}
    for key, raw in as_map(value, field).items():
        try:
            out[key] = base64.b64decode(as_str(raw, f"{field}[{key}]") or "", validate=True)
        except (binascii.Error, ValueError):
            raise FieldError(f"{field}[{key}]", "not base64") from None
    return out

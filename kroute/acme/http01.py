"""HTTP-01 challenges answered by the gateway itself, before any routing (pure).

RFC 8555 section 8.3: the CA fetches `http://DOMAIN/.well-known/acme-challenge/TOKEN` (port
80, plain HTTP, redirects followed) and expects the key authorization as the body. The Router
asks `Http01Challenges.answer` before it looks at its routes (`Router.challenges`), so every
front (FastGateway, HttpServer, the ASGI gateway) answers the same way, whatever the routes say
about that host or path; a request for any other path, or a token nobody registered, goes on
to routing as usual.

Every replica must answer, since the CA's request reaches whichever one the load balancer
picks, while only the leader orders: the leader publishes its pending key authorizations in a
Secret (`kroute.acme.store`), which every replica watches and `share`s here.
"""

from __future__ import annotations

from collections.abc import Mapping

from kroute.errors import Answered

PREFIX = "/.well-known/acme-challenge/"
_HEADERS = ((b"Content-Type", b"application/octet-stream"), (b"Cache-Control", b"no-store"))


class Http01Challenges:
    """Tokens and their key authorizations: this process's own (`add`, `remove`) and those
    the leader shares (`share`, the whole set at once)."""

    def __init__(self) -> None:
        self._own: dict[str, str] = {}
        self._shared: dict[str, str] = {}
        self.answered = 0

    def add(self, token: str, key_authorization: str) -> None:
        self._own[token] = key_authorization

    def remove(self, token: str) -> None:
        self._own.pop(token, None)

    def share(self, tokens: Mapping[str, str]) -> None:
        """The leader's pending tokens (replaces those shared before)."""
        self._shared = dict(tokens)

    @property
    def own(self) -> dict[str, str]:
        return dict(self._own)

    def key_authorization(self, token: str) -> str | None:
        return self._own.get(token) or self._shared.get(token)

    def answer(self, method: str, target: str) -> Answered | None:
        """The answer to a challenge request (GET or HEAD of a registered token's path), as a
        response every front sends; None: not a challenge, route it."""
        if not target.startswith(PREFIX) or method not in ("GET", "HEAD"):
            return None
        token = target[len(PREFIX) :].partition("?")[0]
        found = self.key_authorization(token)
        if found is None:
            return None
        self.answered += 1
        return Answered(200, "ACME HTTP-01 challenge", _HEADERS, found.encode("ascii"))

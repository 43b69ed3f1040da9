"""The TLS-ALPN-01 challenge (RFC 8737) as `acme` challenge types.

certbot's `acme` dropped its TLS-ALPN-01 classes (certbot never answered it), so a server's
`tls-alpn-01` challenge would parse as `UnrecognizedChallenge`. The challenge is a key
authorization challenge like HTTP-01 (RFC 8737 section 3: the same token and key
authorization; the response is an empty object): registered here under its type name, unless
the installed `acme` has it again. The validation certificate itself is the TLS fronts'
(`kroute.tls.alpn`).
"""

from __future__ import annotations

from typing import Any

from acme import challenges
from josepy.jwk import JWK

TYPE = "tls-alpn-01"


class TLSALPN01Response(challenges.KeyAuthorizationChallengeResponse):
    typ = TYPE


class TLSALPN01(challenges.KeyAuthorizationChallenge):
    response_cls = TLSALPN01Response
    typ = TYPE

    def validation(self, account_key: JWK, **kwargs: Any) -> str:
        """The key authorization, which the validation certificate's acmeIdentifier hashes."""
        return self.key_authorization(account_key)


if TYPE not in challenges.Challenge.TYPES:
    challenges.ChallengeResponse.register(TLSALPN01Response)
    challenges.Challenge.register(TLSALPN01)
#: The class a `tls-alpn-01` challenge parses to.
CHALLENGE: type[challenges.KeyAuthorizationChallenge] = challenges.Challenge.TYPES[TYPE]

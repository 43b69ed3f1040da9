"""The TLS-ALPN-01 responder (RFC 8737): validation certificates, and the challenges pending.

- `certificate`: the validation certificate (pure; cryptography);
- `challenges`: `AlpnChallenges`, the registry, and what a ClientHello gets (no cryptography:
  the fronts import it, and `import kroute` does not load cryptography);
- `hello`: the ClientHello's server name and ALPN protocols (pure; hostile input).


An ACME client proves control of a name by having the server at that name answer a TLS
handshake that offers ALPN `acme-tls/1` with a self-signed certificate naming it and carrying
the digest of the challenge's key authorization (RFC 8737 section 3). The ACME client
(issuance) registers each challenge with `AlpnChallenges.add(domain, key_authorization)` and
takes it back with `remove(domain)`; the TLS fronts consult the registry (`TlsContexts.
challenges`):

- a ClientHello offering `acme-tls/1` for a pending name gets the validation certificate, ALPN
  `acme-tls/1`, and the connection closed once the handshake is done (section 3: no
  application data is exchanged);
- a ClientHello offering `acme-tls/1` for any other name gets a `no_application_protocol`
  alert: no certificate at all, and never the normal one with `acme-tls/1` negotiated;
- every other ClientHello (browsers asking for the same name during the challenge) is served
  as usual, with the normal certificate.

The ssl module's `sni_callback` cannot make that choice (it runs before ALPN and is not told the
client's protocols), so while a challenge is pending the fronts read the ClientHello first
(`hello`) and pick the context from it: `HandshakeListener` (HttpServer) reads and
replays the bytes, FastGateway peeks at them (`kroute.gateway.fast.accept`). With nothing
pending the fronts do exactly what they did before: one truth test per connection on the anyio
front, nothing at all on FastGateway. See docs/tls.md.
"""

"""ACME certificates (Let's Encrypt): issued and renewed by the gateway, shared by every replica
through Secrets (docs/acme.md).

Pure: `resolvers` (certificate resolvers and their text form), `plan` (which certificates the
routes ask for), `schedule` (renewal and backoff), `http01` (challenge answers, asked by the
Router before any routing). With I/O: `client` (the ACME protocol, certbot's `acme` package in
worker threads: the `acme` extra), `store` (Secrets, a directory, memory) and `manager`
(`AcmeCertificates`: the loop, leader only, and the CertificateProvider every replica serves).
This package imports nothing heavy itself: the Router imports `http01`.
"""

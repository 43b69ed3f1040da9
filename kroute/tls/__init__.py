"""TLS termination: certificates from Secrets, selected by SNI, reloaded as they change."""

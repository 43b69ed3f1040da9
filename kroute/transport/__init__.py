"""Forwarding: the Transport seam, the proxy semantics every transport shares, and transports."""

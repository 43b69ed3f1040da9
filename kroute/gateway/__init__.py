"""The gateway: the module families composed into a Router (and, next, its fronts)."""

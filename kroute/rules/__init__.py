"""Rule matching: Ingress, Gateway API and Traefik rules compiled into one indexed RouteTable.

Pure and synchronous: objects in, a table out; a request head in, a route out.
"""

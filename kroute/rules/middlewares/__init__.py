"""Traefik Middlewares (traefik.io/v1alpha1) as pipeline steps, built at compile time
(docs/middlewares.md).

- `crd`: a Middleware object -> its steps (or the error that makes it invalid);
- `paths`, `headers`, `redirects`, `basicauth` (+ `htpasswd`), `ipallowlist`, `ratelimit`,
  `inflight` (+ `sources`, whose request it is): the middlewares kroute implements, as steps;
- `compress`, `buffering`, `error_pages`: the ones on the response body seam
  (`kroute.pipeline.body`);
- `refs`: where routes name Middlewares (IngressRoute, Ingress annotation, HTTPRoute
  ExtensionRef) and how those references become the Middlewares' steps.
"""

from kroute.rules.middlewares.crd import API_GROUPS, compile_middleware, secret_of
from kroute.rules.middlewares.refs import (
    Compiled,
    MiddlewareRef,
    Middlewares,
    Usage,
    annotation_refs,
    crd_refs,
)

__all__ = [
    "API_GROUPS",
    "Compiled",
    "MiddlewareRef",
    "Middlewares",
    "Usage",
    "annotation_refs",
    "compile_middleware",
    "crd_refs",
    "secret_of",
]

"""Traefik Middlewares (traefik.io/v1alpha1) as pipeline steps, built at compile time
(docs/middlewares.md).

- `crd`: a Middleware object -> its steps (or the error that makes it invalid);
- `paths`, `headers`, `redirects`: the middlewares kroute implements, each as steps;
- `refs`: where routes name Middlewares (IngressRoute, Ingress annotation, HTTPRoute
  ExtensionRef) and how those references become the Middlewares' steps.
"""

from kroute.rules.middlewares.crd import API_GROUPS, compile_middleware
from kroute.rules.middlewares.refs import (
    Compiled,
    MiddlewareRef,
    Middlewares,
    annotation_refs,
    crd_refs,
)

__all__ = [
    "API_GROUPS",
    "Compiled",
    "MiddlewareRef",
    "Middlewares",
    "annotation_refs",
    "compile_middleware",
    "crd_refs",
]

"""Kubernetes Ingress (networking.k8s.io/v1) -> routes.

Semantics (Kubernetes Ingress concept page; `networking/v1/types.go`; ingress-nginx):
- class: `spec.ingressClassName`, else the legacy `kubernetes.io/ingress.class` annotation, else
  the default IngressClass (annotation `ingressclass.kubernetes.io/is-default-class: "true"`);
  with no IngressClass given or none marked default, an Ingress without a class is served;
- host: exact, or `*.suffix` covering exactly one label; no host matches every host;
- pathType Exact (exact, case-sensitive), Prefix (element-wise), ImplementationSpecific (Prefix
  semantics here, documented in docs/rules.md);
- order: exact host, then wildcard host, then no host; then the longest path; on equal length
  Exact before Prefix; then the longer path as written, so that of Prefix `/foo` and `/foo/`
  (both match `/foo`, `/foo/` and `/foo/x`) the longest matching path, `/foo/`, wins ("Multiple
  matches": "precedence will be given first to the longest matching path"); then the oldest
  Ingress (creationTimestamp, as ingress-nginx), then `{namespace}/{name}`, then the order of
  rules and paths in the object;
- `spec.defaultBackend` takes what matched no rule of any Ingress; the oldest one wins.

Traefik's annotations (its "Kubernetes Ingress" routing page): `router.entrypoints` and
`router.tls` (entry points), `router.middlewares` (Traefik Middlewares, `kroute.rules.
middlewares`), `router.priority` (an integer; Ingresses with a higher one are tried first,
ahead of the order above) and `router.pathmatcher` (`Path` makes ImplementationSpecific paths
exact; `PathPrefix`, the default, leaves them as Prefix). The default backend stays last
whatever the priority. Any other controller annotation fails the Ingress closed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from kroute.objects import (
    BackendRef,
    FieldError,
    Obj,
    ObjectRef,
    annotations_of,
    as_list,
    as_map,
    as_str,
    created_at,
    describe_age,
    req_str,
)
from kroute.pipeline.filters import Refuse
from kroute.pipeline.steps import EMPTY, Chain
from kroute.rules.conditions import Condition, PathIs, PathPrefix
from kroute.rules.entrypoints import Attachment
from kroute.rules.hostnames import check_hostname, host_condition
from kroute.rules.middlewares.refs import annotation_refs
from kroute.rules.redirect import Redirect
from kroute.rules.request import normalize_path
from kroute.rules.route import Family, Route

API_VERSION = "networking.k8s.io/v1"
CLASS_ANNOTATION = "kubernetes.io/ingress.class"
DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"
PATH_TYPES = ("Exact", "Prefix", "ImplementationSpecific")


def default_classes(ingress_classes: Sequence[Obj]) -> set[str] | None:
    """Names of IngressClasses marked default; None when no IngressClass was given at all."""
    if not ingress_classes:
        return None
    names = set()
    for cls in ingress_classes:
        try:
            flag = as_str(annotations_of(cls).get(DEFAULT_CLASS_ANNOTATION), "annotation")
            if flag == "true":
                names.add(req_str(as_map(cls.get("metadata"), "metadata").get("name"), "name"))
        except FieldError:
            continue
    return names


def serves(ingress: Obj, *, ingress_class: str, defaults: set[str] | None) -> bool:
    """Whether an Ingress belongs to `ingress_class` (see the module docstring)."""
    spec = as_map(ingress.get("spec"), "spec")
    named = as_str(spec.get("ingressClassName"), "spec.ingressClassName")
    if named is None:
        named = as_str(annotations_of(ingress).get(CLASS_ANNOTATION), CLASS_ANNOTATION)
    if named is not None:
        return named == ingress_class
    if not defaults:
        return True
    return ingress_class in defaults


def _backend(value: Any, field: str, namespace: str) -> BackendRef:
    backend = as_map(value, field)
    if backend.get("resource") is not None:
        raise FieldError(f"{field}.resource", "resource backends are not supported by kroute")
    service = as_map(backend.get("service"), f"{field}.service")
    if not service:
        raise FieldError(f"{field}.service", "required: the backend names no service")
    name = req_str(service.get("name"), f"{field}.service.name")
    port_spec = as_map(service.get("port"), f"{field}.service.port")
    number, port_name = port_spec.get("number"), port_spec.get("name")
    if (number is None) == (port_name is None):
        raise FieldError(f"{field}.service.port", "exactly one of number and name is required")
    port: int | str
    if number is not None:
        if isinstance(number, bool) or not isinstance(number, int) or not 0 < number < 65536:
            raise FieldError(f"{field}.service.port.number", f"{number!r} is not a port number")
        port = number
    else:
        port = req_str(port_name, f"{field}.service.port.name")
    return BackendRef(namespace, name, port)


def _path_condition(
    raw: Mapping[str, Any], field: str, matcher: str | None = None
) -> tuple[Condition, str, int, int]:
    """The condition, its description, the length it ranks by (a Prefix's without its trailing
    slash) and the length of the path as written (normalised), which breaks ties. `matcher`
    (Traefik's `router.pathmatcher`) decides what an ImplementationSpecific path means."""
    path_type = raw.get("pathType")
    if path_type not in PATH_TYPES:
        raise FieldError(
            f"{field}.pathType",
            f"unknown pathType {path_type!r} (expected Exact, Prefix or ImplementationSpecific)",
        )
    path = as_str(raw.get("path"), f"{field}.path")
    if path is None:
        if path_type != "ImplementationSpecific":
            raise FieldError(f"{field}.path", f"required for pathType {path_type}")
        path = "/"
    if not path.startswith("/"):
        raise FieldError(f"{field}.path", f"{path!r} must start with '/'")
    path = normalize_path(path)
    if path_type == "Exact" or (path_type == "ImplementationSpecific" and matcher == "Path"):
        described = path_type + (" (router.pathmatcher Path)" if path_type != "Exact" else "")
        return PathIs(path), f"{described} {path}", len(path), len(path)
    stem = path.rstrip("/")
    return PathPrefix(stem), f"{path_type} {path}", len(stem) or 1, len(path)


SSL_REDIRECT_ANNOTATION = "kroute.dev/ssl-redirect"


def _ssl_redirect(obj: Obj) -> Redirect | None:
    """`kroute.dev/ssl-redirect: "true"`: plain HTTP requests get 308 to https (ingress-nginx's
    ssl-redirect, opt-in here)."""
    field = f"metadata.annotations[{SSL_REDIRECT_ANNOTATION}]"
    value = as_str(annotations_of(obj).get(SSL_REDIRECT_ANNOTATION), field)
    if value is None or value == "false":
        return None
    if value != "true":
        raise FieldError(field, f"{value!r} is not true or false")
    return Redirect(status=308, scheme="https", only_from="http")


ENTRYPOINTS_ANNOTATION = "traefik.ingress.kubernetes.io/router.entrypoints"
TLS_ANNOTATION = "traefik.ingress.kubernetes.io/router.tls"
MIDDLEWARES_ANNOTATION = "traefik.ingress.kubernetes.io/router.middlewares"
PRIORITY_ANNOTATION = "traefik.ingress.kubernetes.io/router.priority"
PATHMATCHER_ANNOTATION = "traefik.ingress.kubernetes.io/router.pathmatcher"
#: The certificate resolver (ACME) of the Ingress's hosts: read by `kroute.acme.plan`; like
#: Traefik's, it makes the routes TLS-only (a resolver is part of the router's TLS options).
CERTRESOLVER_ANNOTATION = "traefik.ingress.kubernetes.io/router.tls.certresolver"
#: What `router.pathmatcher` may say (Traefik's Kubernetes Ingress docs: "Only path-related
#: matcher name can be specified: `Path`, `PathPrefix`"; default PathPrefix).
PATH_MATCHERS = ("Path", "PathPrefix")
_INTEGER = re.compile(r"[+-]?[0-9]+")
#: Go's strconv.ParseBool, which Traefik's annotation parser uses.
_BOOLS = {**dict.fromkeys(("1", "t", "T", "TRUE", "true", "True"), True),
          **dict.fromkeys(("0", "f", "F", "FALSE", "false", "False"), False)}  # fmt: skip


def _attachment(obj: Obj) -> Attachment | None:
    """Traefik's `router.entrypoints` (comma-separated names: only those entry points) and
    `router.tls` ("true": only entry points that terminate TLS; `spec.tls` alone only names
    certificates, as in Traefik; `router.tls.certresolver` implies it, unless `router.tls`
    says "false"). None: every entry point."""
    annotations = annotations_of(obj)
    field = f"metadata.annotations[{ENTRYPOINTS_ANNOTATION}]"
    listed = as_str(annotations.get(ENTRYPOINTS_ANNOTATION), field)
    names = None
    if listed is not None:
        names = frozenset(n.strip() for n in listed.split(","))
        if "" in names:
            raise FieldError(field, f"{listed!r}: an empty entry point name")
    field = f"metadata.annotations[{TLS_ANNOTATION}]"
    flag = as_str(annotations.get(TLS_ANNOTATION), field)
    if flag is not None and flag not in _BOOLS:
        raise FieldError(field, f"{flag!r} is not true or false")
    tls = _BOOLS[flag] if flag is not None else CERTRESOLVER_ANNOTATION in annotations
    return Attachment(names, tls=tls) if names is not None or tls else None


#: Annotation prefixes of ingress controllers: an annotation under one that kroute does not
#: apply (an auth URL, a rewrite, a Traefik middleware) fails the Ingress closed.
CONTROLLER_PREFIXES = ("kroute.dev/", "traefik.ingress.kubernetes.io/",
                       "nginx.ingress.kubernetes.io/", "ingress.kubernetes.io/")  # fmt: skip
APPLIED_ANNOTATIONS = frozenset({SSL_REDIRECT_ANNOTATION, ENTRYPOINTS_ANNOTATION,
                                 TLS_ANNOTATION, MIDDLEWARES_ANNOTATION, PRIORITY_ANNOTATION,
                                 PATHMATCHER_ANNOTATION, CERTRESOLVER_ANNOTATION})  # fmt: skip


def _router_annotations(obj: Obj) -> tuple[int, str | None, Chain]:
    """Traefik's `router.priority` (an integer: the Ingress's rules are tried before those
    of Ingresses with a lower one, 0 by default, and in the Ingress order among equals),
    `router.pathmatcher` (`Path` or `PathPrefix`, for ImplementationSpecific paths) and
    `router.middlewares` (`kroute.rules.middlewares`); a bad value is a field error."""
    annotations = annotations_of(obj)
    field = f"metadata.annotations[{PRIORITY_ANNOTATION}]"
    text = as_str(annotations.get(PRIORITY_ANNOTATION), field)
    priority = 0
    if text is not None:
        if not _INTEGER.fullmatch(text):  # (Go's strconv.Atoi: no spaces, no underscores)
            raise FieldError(field, f"{text!r} is not an integer")
        priority = int(text)
        if not -(2**63) <= priority < 2**63:
            raise FieldError(field, f"{text!r} is out of range (a 64-bit integer)")
    field = f"metadata.annotations[{PATHMATCHER_ANNOTATION}]"
    matcher = as_str(annotations.get(PATHMATCHER_ANNOTATION), field)
    if matcher is not None and matcher not in PATH_MATCHERS:
        raise FieldError(field, f"{matcher!r} is not one of {', '.join(PATH_MATCHERS)}")
    field = f"metadata.annotations[{MIDDLEWARES_ANNOTATION}]"
    listed = as_str(annotations.get(MIDDLEWARES_ANNOTATION), field)
    chain = Chain(annotation_refs(listed, field)) if listed is not None else EMPTY
    return priority, matcher, chain


def _unapplied_annotations(obj: Obj) -> Chain:
    """A Refuse step for each controller annotation kroute does not apply: the Ingress's
    routes answer 500 rather than forward without what the annotation asks for."""
    return Chain(tuple(
        Refuse(f"metadata.annotations[{name}]", reason=f"annotation {name} is not supported "
               "by kroute")
        for name in sorted(annotations_of(obj))
        if name.startswith(CONTROLLER_PREFIXES) and name not in APPLIED_ANNOTATIONS
    ))  # fmt: skip


def compile_ingress(obj: Obj, ref: ObjectRef, *, origin: str = "") -> list[Route]:
    """The routes of one Ingress; FieldError on the first malformed field."""
    created = created_at(obj)
    age = describe_age(created)
    spec = as_map(obj.get("spec"), "spec")
    tie = (created, f"{ref.namespace}/{ref.name}")
    redirect = _ssl_redirect(obj)
    priority, matcher, middlewares = _router_annotations(obj)
    chain = _unapplied_annotations(obj) + middlewares
    attachment = _attachment(obj)
    routes: list[Route] = []
    if spec.get("defaultBackend") is not None:
        backend = _backend(spec["defaultBackend"], "spec.defaultBackend", ref.namespace)
        routes.append(
            Route(
                source=ref,
                field="spec.defaultBackend",
                conditions=(),
                backends=(backend,),
                precedence=(Family.DEFAULT_BACKEND, *tie),
                why=f"default backend, {age}",
                origin=origin,
                redirect=redirect,
                chain=chain,
                attachment=attachment,
            )
        )
    for r, rule_value in enumerate(as_list(spec.get("rules"), "spec.rules")):
        rule_field = f"spec.rules[{r}]"
        rule = as_map(rule_value, rule_field)
        host = as_str(rule.get("host"), f"{rule_field}.host")
        host_conds: tuple[Condition, ...] = ()
        host_tier, host_text = 2, "any host"
        if host is not None:
            host = check_hostname(host, f"{rule_field}.host")
            host_conds = (host_condition(host, any_depth=False),)
            host_tier = 1 if host.startswith("*.") else 0
            host_text = ("wildcard host " if host_tier else "exact host ") + host
        http = as_map(rule.get("http"), f"{rule_field}.http")
        paths = as_list(http.get("paths"), f"{rule_field}.http.paths")
        if rule.get("http") is not None and not paths:
            raise FieldError(f"{rule_field}.http.paths", "required: at least one path")
        for p, path_value in enumerate(paths):
            field = f"{rule_field}.http.paths[{p}]"
            raw = as_map(path_value, field)
            cond, path_text, length, written = _path_condition(raw, field, matcher)
            backend = _backend(raw.get("backend"), f"{field}.backend", ref.namespace)
            routes.append(
                Route(
                    source=ref,
                    field=field,
                    conditions=(*host_conds, cond),
                    backends=(backend,),
                    precedence=(
                        Family.INGRESS,
                        -priority,
                        host_tier,
                        -length,
                        0 if isinstance(cond, PathIs) else 1,
                        -written,
                        *tie,
                        r,
                        p,
                    ),
                    why=(f"router.priority {priority}, " if priority else "")
                    + f"{host_text}, path {path_text} (length {length}), {age}",
                    origin=origin,
                    redirect=redirect,
                    chain=chain,
                    attachment=attachment,
                )
            )
    return routes

"""Traefik's Service annotations (`traefik.ingress.kubernetes.io/service.*`), which kroute does
not apply: a Service carrying one has no endpoints in kroute, with the reason, so nothing is
forwarded to it as if the annotation were not there (fail closed).

In Traefik v3 these go on the Kubernetes Service, not the Ingress (its "Kubernetes Ingress"
page, "On Service"): `service.sticky.cookie` (and `.name`, `.secure`, `.httponly`,
`.samesite`, `.maxage`, `.path`, `.domain`) turns on sticky sessions between the Service's
servers; `service.serversscheme`, `service.serverstransport`, `service.passhostheader`,
`service.nativelb`, `service.nodeportlb` change how they are reached. kroute's sticky cookie is
the gateway's (`Router(sticky_cookie=...)`, one name and attributes for every Service): a
Service asking for its own cookie cannot be served as asked. Values that mean Traefik's
default are accepted: `service.sticky.cookie: "false"` alone, `service.passhostheader:
"true"`, `service.serversscheme: "http"`, `service.nativelb` / `service.nodeportlb: "false"`.
"""

from __future__ import annotations

from kroute.objects import Obj, annotations_of

PREFIX = "traefik.ingress.kubernetes.io/service."
#: Annotation (after PREFIX) -> the values that mean Traefik's default, compared lower-cased.
_DEFAULTS = {
    "sticky.cookie": ("false", "0", "f"),
    "passhostheader": ("true", "1", "t"),
    "serversscheme": ("http",),
    "nativelb": ("false", "0", "f"),
    "nodeportlb": ("false", "0", "f"),
}
_STICKY = ("kroute's sticky cookie is the gateway's (Router(sticky_cookie=...)), not a "
           "Service's")  # fmt: skip


def refused_annotation(service: Obj) -> tuple[str, str] | None:
    """The first Traefik annotation of `service` kroute does not apply, with why; None if
    none."""
    annotations = annotations_of(service)
    for name in sorted(annotations):
        if not name.startswith(PREFIX):
            continue
        key = name[len(PREFIX) :]
        if str(annotations[name]).strip().lower() in _DEFAULTS.get(key, ()):
            continue
        why = _STICKY if key.startswith("sticky.") else "not supported by kroute"
        return name, f"{annotations[name]!r}: {why}"
    return None

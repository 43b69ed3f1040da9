"""Small values shared by every module family, and strict readers for Kubernetes objects.

Objects arrive as plain JSON-like mappings (from manifests, the API server or a test). The readers
here turn a malformed field into a `FieldError` naming the field path, which the compilers turn
into an `InvalidObject` naming the object too.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import re
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from kroute.errors import ConfigError

#: An object as decoded from JSON or YAML.
Obj = Mapping[str, Any]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def in_networks(address: str, networks: Sequence[Network]) -> bool:
    """Whether IP `address` is in one of `networks` (an IPv4-mapped IPv6 address counts as its
    IPv4 address; anything not an IP is in none)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in net for net in networks)


@attrs.frozen
class Manifest:
    """An object with where it came from ("routes.yaml#2"), for error messages."""

    obj: Obj
    origin: str = ""


@attrs.frozen(order=True)
class ObjectRef:
    """Which object: kind, namespace ("" for cluster-scoped kinds) and name."""

    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        if self.namespace:
            return f"{self.kind} {self.namespace}/{self.name}"
        return f"{self.kind} {self.name}"


#: Set-Cookie's SameSite values, as Traefik reads them (case-insensitive; else none is sent).
SAME_SITE = {"none": "None", "lax": "Lax", "strict": "Strict"}


#: What a cookie name may not hold (RFC 2616 section 2.2's token), as Traefik sanitizes it.
_NOT_TOKEN = re.compile(r"[^!#$%&'*+\-.^`|~0-9A-Za-z]")


def sanitize(name: str) -> str:
    """A cookie name as Traefik makes it of a configured one: every character a token may not
    hold (RFC 2616 section 2.2) replaced by `_`."""
    return _NOT_TOKEN.sub("_", name)


def cookie_name(service: str) -> str:
    """Traefik's default sticky-cookie name for the service called `service`: `_` and five hex
    digits of the SHA-1 of `_TRAEFIK_BACKEND_` and the name."""
    return "_" + hashlib.sha1(f"_TRAEFIK_BACKEND_{service}".encode()).hexdigest()[:5]


def traefik_hash(name: str) -> str:
    """Traefik v3's sticky-cookie value for a handler `name`: SHA-256, 16 hex digits."""
    return hashlib.sha256(name.encode()).hexdigest()[:16]


#: A Set-Cookie Path value: any CHAR but CTLs and ";" (RFC 6265 section 4.1.1).
_COOKIE_PATH = re.compile(r"[\x20-\x3a\x3c-\x7e]*")
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def cookie_attribute(value: str, field: str, *, domain: bool = False) -> str:
    """A sticky cookie's `path` (or with `domain`, its `domain`: a host name, with the
    leading "." Go tolerates) as it may go into a Set-Cookie line; FieldError otherwise. Go's
    http.SetCookie, under Traefik, drops such a value's bad bytes (or the whole Domain)
    without a word; kroute says which field."""
    if domain:
        name = value.removeprefix(".")
        good = len(name) <= 253 and all(_LABEL.fullmatch(part) for part in name.split("."))
    else:
        good = _COOKIE_PATH.fullmatch(value) is not None
    if not good:
        what = "a domain name" if domain else "a cookie path (visible ASCII, no ';')"
        raise FieldError(field, f"{value[:60]!r} is not {what}")
    return value


@attrs.frozen
class StickyCookie:
    """A Traefik sticky cookie (`sticky.cookie`): its name and Set-Cookie attributes.

    Traefik v3 writes it with Go's http.SetCookie; `header` writes the same line: Path (default
    "/"), Domain, Max-Age (positive: that many seconds; negative: expire now, `Max-Age=0`; 0:
    none, a session cookie), HttpOnly, Secure, SameSite (none unless None, Lax or Strict)."""

    name: str
    secure: bool = False
    http_only: bool = False
    same_site: str = ""
    max_age: int = 0
    path: str = "/"
    domain: str = ""

    def header(self, value: str) -> tuple[bytes, bytes]:
        """The Set-Cookie field that sets this cookie to `value`."""
        parts = [f"{self.name}={value}"]
        if self.path:
            parts.append(f"Path={self.path}")
        if self.domain:
            parts.append(f"Domain={self.domain}")
        if self.max_age:
            parts.append(f"Max-Age={max(self.max_age, 0)}")
        if self.http_only:
            parts.append("HttpOnly")
        if self.secure:
            parts.append("Secure")
        if self.same_site in SAME_SITE.values():
            parts.append(f"SameSite={self.same_site}")
        return b"Set-Cookie", "; ".join(parts).encode("latin-1")

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.frozen
class BackendRef:
    """Where a route sends traffic: a Service port (by number or name) and a weight.

    `error` is set when the reference cannot be used (Gateway API "ResolvedRefs" false): a
    gateway answers 500 for the share of traffic that would go to it (HTTPRoute spec,
    BackendRefs). `fallback` is where requests go while this backend has no usable endpoint
    (a Traefik failover service).

    Traefik's service options, where a route gives them: `sticky` keeps a client on one endpoint
    of the Service (`services[].sticky.cookie`); `stuck` keeps it on this backend among the
    route's, as sticky weighted TraefikServices do for their children: one (cookie, value) per
    sticky weighted service on the way from the route, outermost first; `pass_host_header`
    False sends the endpoint's address as Host (`passHostHeader: false`).
    """

    namespace: str
    name: str
    port: int | str | None
    weight: int = 1
    error: str | None = None
    fallback: BackendRef | None = attrs.field(default=None, kw_only=True)
    sticky: StickyCookie | None = attrs.field(default=None, kw_only=True)
    stuck: tuple[tuple[StickyCookie, str], ...] = attrs.field(default=(), kw_only=True)
    pass_host_header: bool = attrs.field(default=True, kw_only=True)

    def __str__(self) -> str:
        port = "" if self.port is None else f":{self.port}"
        return f"{self.namespace}/{self.name}{port}"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "namespace": self.namespace,
            "name": self.name,
            "port": self.port,
            "weight": self.weight,
        }
        if self.error is not None:
            out["error"] = self.error
        if self.fallback is not None:
            out["fallback"] = self.fallback.to_json()
        if self.sticky is not None:
            out["sticky"] = self.sticky.to_json()
        if self.stuck:
            out["sticky_choice"] = [{"cookie": c.name, "value": v} for c, v in self.stuck]
        if not self.pass_host_header:
            out["pass_host_header"] = False
        return out


class FieldError(ConfigError):
    """A field of an object is missing or malformed; `field` is its path in the object."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def get_path(obj: Obj, path: str) -> Any:
    """The value at a dotted path ("spec.rules"), or None where any step is missing."""
    value: Any = obj
    walked: list[str] = []
    for key in path.split("."):
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise FieldError(".".join(walked), f"expected an object, got {type_name(value)}")
        value = value.get(key)
        walked.append(key)
    return value


def type_name(value: Any) -> str:
    """A JSON-ish name for the type of a decoded value, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, Sequence):
        return "list"
    return type(value).__name__


def as_str(value: Any, field: str, *, required: bool = False) -> str | None:
    """A string field; None when absent (or a FieldError when `required`)."""
    if value is None or value == "":
        if required:
            raise FieldError(field, "required")
        return None
    if not isinstance(value, str):
        raise FieldError(field, f"expected a string, got {type_name(value)}")
    return value


def req_str(value: Any, field: str) -> str:
    """A required, non-empty string field."""
    out = as_str(value, field, required=True)
    assert out is not None
    return out


def as_list(value: Any, field: str) -> list[Any]:
    """A list field; absent means empty."""
    if value is None:
        return []
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise FieldError(field, f"expected a list, got {type_name(value)}")
    return list(value)


def as_map(value: Any, field: str) -> Mapping[str, Any]:
    """An object field; absent means empty."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise FieldError(field, f"expected an object, got {type_name(value)}")
    return value


def as_flag(options: Mapping[str, Any], key: str, field: str) -> bool:
    """The boolean option `key` of `options` (the object at `field`); absent means False."""
    value = options.get(key, False)
    if not isinstance(value, bool):
        raise FieldError(f"{field}.{key}", "expected a boolean")
    return value


def as_int(value: Any, field: str, *, default: int, low: int, high: int) -> int:
    """An integer field within [low, high]; absent means `default`."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise FieldError(field, f"expected an integer, got {type_name(value)}")
    if not low <= value <= high:
        raise FieldError(field, f"{value} is out of range [{low}, {high}]")
    return value


def object_ref(obj: Obj, *, namespaced: bool = True) -> ObjectRef:
    """The ObjectRef of a decoded object; a FieldError when kind or name is missing.

    A namespaced object with no namespace is in "default", as `kubectl apply` would put it.
    """
    kind = req_str(obj.get("kind"), "kind")
    meta = as_map(obj.get("metadata"), "metadata")
    name = req_str(meta.get("name"), "metadata.name")
    namespace = as_str(meta.get("namespace"), "metadata.namespace") or ""
    if namespaced and not namespace:
        namespace = "default"
    return ObjectRef(kind, namespace, name)


def labels_of(obj: Obj) -> Mapping[str, str]:
    """metadata.labels (empty when absent)."""
    return as_map(get_path(obj, "metadata.labels"), "metadata.labels")


def annotations_of(obj: Obj) -> Mapping[str, Any]:
    """metadata.annotations (empty when absent)."""
    return as_map(get_path(obj, "metadata.annotations"), "metadata.annotations")


#: Sorts after every real timestamp: objects without one (manifest files) are "newest".
_NO_TIMESTAMP = datetime.datetime.max.replace(tzinfo=datetime.UTC)


def created_at(obj: Obj) -> datetime.datetime:
    """metadata.creationTimestamp, for "oldest wins" tie-breaks; absent sorts last."""
    value = get_path(obj, "metadata.creationTimestamp")
    if isinstance(value, datetime.datetime):  # YAML reads an unquoted timestamp as one
        return value if value.tzinfo else value.replace(tzinfo=datetime.UTC)
    raw = as_str(value, "metadata.creationTimestamp")
    if raw is None:
        return _NO_TIMESTAMP
    try:
        stamp = datetime.datetime.fromisoformat(raw)
    except ValueError:
        raise FieldError("metadata.creationTimestamp", f"not an RFC 3339 time: {raw!r}") from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=datetime.UTC)
    return stamp


def describe_age(stamp: datetime.datetime) -> str:
    """How an age tie-break reads in explanations."""
    return "no creationTimestamp" if stamp == _NO_TIMESTAMP else f"created {stamp.isoformat()}"


def selector_matches(selector: Mapping[str, Any], labels: Mapping[str, str], field: str) -> bool:
    """Whether labels satisfy a Kubernetes LabelSelector (matchLabels and matchExpressions).

    An empty selector matches everything (apimachinery `LabelSelectorAsSelector`).
    """
    for key, value in as_map(selector.get("matchLabels"), f"{field}.matchLabels").items():
        if labels.get(key) != value:
            return False
    expressions = as_list(selector.get("matchExpressions"), f"{field}.matchExpressions")
    for i, expr_value in enumerate(expressions):
        expr_field = f"{field}.matchExpressions[{i}]"
        expr = as_map(expr_value, expr_field)
        key = req_str(expr.get("key"), f"{expr_field}.key")
        op = expr.get("operator")
        values = as_list(expr.get("values"), f"{expr_field}.values")
        if op == "In":
            ok = key in labels and labels[key] in values
        elif op == "NotIn":
            ok = key not in labels or labels[key] not in values
        elif op == "Exists":
            ok = key in labels
        elif op == "DoesNotExist":
            ok = key not in labels
        else:
            raise FieldError(f"{expr_field}.operator", f"unknown operator {op!r}")
        if not ok:
            return False
    return True

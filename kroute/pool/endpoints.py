"""Service + EndpointSlices -> the endpoints that may take new traffic, kept incrementally.

Semantics (EndpointSlice concept page; `V1EndpointConditions`; kube-proxy):
- a Service owns any number of slices, linked by the label `kubernetes.io/service-name`;
- the Service port a route names (by number or by name) is mapped to the slice port of the same
  name; slices carry their own port numbers;
- an endpoint that appears in two slices (it moves between them during updates) counts once;
  the copy with the better conditions wins (ready, then serving-and-terminating);
- conditions: `ready` (nil = true), `serving` (nil = true), `terminating` (nil = false). New
  traffic goes to ready endpoints; when none is ready, to serving-and-terminating ones (what
  kube-proxy does during a rollout); terminating endpoints take nothing otherwise;
- IPv4 and IPv6 slices are both used (a dual-stack Service has one of each); only the first
  address of an endpoint is used, as kube-proxy does;
- ExternalName Services resolve to their DNS name when allowed (off by default, as Traefik's
  `allowExternalNameServices`).

`ServiceEndpoints` applies one slice at a time and answers with a `Delta` of what changed, so a
change costs the size of the slice, not of the Service: pools update in place.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

from kroute.objects import FieldError, Obj, ObjectRef, as_list, as_map, as_str, object_ref
from kroute.pool.service_annotations import NO_OPTIONS, ServiceOptions, service_options

SERVICE_NAME_LABEL = "kubernetes.io/service-name"

EndpointKey = tuple[str, int]


@attrs.frozen
class Endpoint:
    """One address and port that can take traffic, with its EndpointSlice conditions."""

    address: str
    port: int
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    zone: str | None = None
    node: str | None = None
    pod: str | None = None
    #: Identity across updates: health and balancer state are kept per key.
    key: EndpointKey = attrs.field(init=False, eq=False, repr=False)

    @key.default
    def _key(self) -> EndpointKey:
        return (self.address, self.port)

    def __str__(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"


def is_ready(endpoint: Endpoint) -> bool:
    """Takes new traffic in the normal case."""
    return endpoint.ready and not endpoint.terminating


def is_fallback(endpoint: Endpoint) -> bool:
    """Takes new traffic only when no endpoint of the Service is ready."""
    return endpoint.serving and endpoint.terminating


def _rank(endpoint: Endpoint) -> int:
    return 0 if is_ready(endpoint) else 1 if is_fallback(endpoint) else 2


def select_usable(endpoints: Iterable[Endpoint]) -> tuple[tuple[Endpoint, ...], bool]:
    """The endpoints that take new traffic, and whether that is the terminating fallback."""
    items = list(endpoints)
    ready = tuple(e for e in items if is_ready(e))
    if ready:
        return ready, False
    return tuple(e for e in items if is_fallback(e)), True


@attrs.frozen
class Delta:
    """What a change did to the usable endpoints of a Service."""

    added: tuple[Endpoint, ...] = ()
    removed: tuple[EndpointKey, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.removed)


def _flag(conditions: Any, name: str, default: bool) -> bool:
    value = conditions.get(name) if isinstance(conditions, dict) else None
    return default if value is None else bool(value)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def slice_endpoints(slice_obj: Obj, port_name: str) -> dict[EndpointKey, Endpoint]:
    """The endpoints of one EndpointSlice for the port named `port_name` ("" = unnamed).

    This runs for every slice event, so it reads fields directly rather than through the
    error-reporting readers; an endpoint with no usable address is skipped.
    """
    number = None
    for port in as_list(slice_obj.get("ports"), "ports"):
        if isinstance(port, dict) and (port.get("name") or "") == port_name:
            candidate = port.get("port")
            if isinstance(candidate, int) and not isinstance(candidate, bool):
                number = candidate
                break
    if number is None:
        return {}
    out: dict[EndpointKey, Endpoint] = {}
    for item in as_list(slice_obj.get("endpoints"), "endpoints"):
        if not isinstance(item, dict):
            continue
        addresses = item.get("addresses")
        if not isinstance(addresses, list) or not addresses or not isinstance(addresses[0], str):
            continue
        conditions = item.get("conditions")
        target = item.get("targetRef")
        endpoint = Endpoint(
            address=addresses[0],
            port=number,
            ready=_flag(conditions, "ready", True),
            serving=_flag(conditions, "serving", True),
            terminating=_flag(conditions, "terminating", False),
            zone=_text(item.get("zone")),
            node=_text(item.get("nodeName")),
            pod=_text(target.get("name")) if isinstance(target, dict) else None,
        )
        previous = out.get(endpoint.key)
        if previous is None or _rank(endpoint) < _rank(previous):
            out[endpoint.key] = endpoint
    return out


def service_port(service: Obj, port: int | str) -> tuple[str, int]:
    """(name, number) of the Service port a route refers to by number or by name."""
    for i, raw in enumerate(
        as_list(as_map(service.get("spec"), "spec").get("ports"), "spec.ports")
    ):
        entry = as_map(raw, f"spec.ports[{i}]")
        name = entry.get("name") or ""
        if (isinstance(port, int) and entry.get("port") == port) or port == name:
            number = entry.get("port")
            if not isinstance(number, int):
                raise FieldError(f"spec.ports[{i}].port", "not a port number")
            return name, number
    raise FieldError("spec.ports", f"the Service has no port {port!r}")


class ServiceEndpoints:
    """The usable endpoints of one Service port, updated one EndpointSlice at a time."""

    def __init__(
        self, service: ObjectRef, port: int | str, *, allow_external_name: bool = False
    ) -> None:
        self.service = service
        self.port = port
        self.allow_external_name = allow_external_name
        #: Why there are no endpoints, when that is not just "no slice lists any".
        self.error: str | None = f"{service} not found"
        #: What the Service's Traefik annotations ask (sticky cookie, passHostHeader).
        self.options: ServiceOptions = NO_OPTIONS
        self.fallback = False
        self._port_name: str | None = None
        self._external: Endpoint | None = None
        self._slices: dict[str, dict[EndpointKey, Endpoint]] = {}
        self._raw_slices: dict[str, Obj] = {}
        self._owners: dict[EndpointKey, dict[str, Endpoint]] = {}
        self._ready: set[EndpointKey] = set()
        self._fallbacks: set[EndpointKey] = set()
        self._published: dict[EndpointKey, Endpoint] = {}

    def endpoints(self) -> tuple[Endpoint, ...]:
        """The endpoints that take new traffic now."""
        return tuple(self._published.values())

    def set_service(self, service: Obj | None) -> Delta:
        """The Service object changed (None: deleted). May change every endpoint."""
        self._external = None
        self._port_name = None
        self.options = NO_OPTIONS
        if service is None:
            self.error = f"{self.service} not found"
        else:
            try:
                name, number = service_port(service, self.port)
                self.options = service_options(service, number)
                spec = as_map(service.get("spec"), "spec")
                if spec.get("type") == "ExternalName":
                    if not self.allow_external_name:
                        raise FieldError("spec.type", "ExternalName Services are not allowed")
                    host = as_str(spec.get("externalName"), "spec.externalName")
                    if host is None:
                        raise FieldError("spec.externalName", "required")
                    self._external = Endpoint(host, number)
                else:
                    self._port_name = name
                self.error = None
            except FieldError as exc:
                self.error = f"{self.service}: {exc}"
        slices = dict(self._raw_slices)
        self._slices.clear()
        self._owners.clear()
        self._ready.clear()
        self._fallbacks.clear()
        for name, raw in slices.items():
            self._absorb(name, raw)
        return self._publish()

    def apply_slice(self, slice_obj: Obj) -> Delta:
        """An EndpointSlice of this Service was added or changed: work in proportion to what
        changed in it."""
        name = object_ref(slice_obj).name
        self._raw_slices[name] = slice_obj
        if self._port_name is None:
            return Delta()
        try:
            new = slice_endpoints(slice_obj, self._port_name)
        except FieldError:
            new = {}
        old = self._slices.get(name, {})
        self._slices[name] = new
        touched = set()
        for key, endpoint in new.items():
            if old.get(key) != endpoint:
                self._owners.setdefault(key, {})[name] = endpoint
                touched.add(key)
        for key in old.keys() - new.keys():
            owners = self._owners[key]
            del owners[name]
            if not owners:
                del self._owners[key]
            touched.add(key)
        for key in touched:
            self._rejudge(key)
        return self._publish(touched)

    def delete_slice(self, name: str) -> Delta:
        """An EndpointSlice of this Service was deleted."""
        self._raw_slices.pop(name, None)
        return self._publish(self._forget(name))

    def _forget(self, name: str) -> set[EndpointKey]:
        old = self._slices.pop(name, {})
        for key in old:
            owners = self._owners[key]
            del owners[name]
            if not owners:
                del self._owners[key]
            self._rejudge(key)
        return set(old)

    def _absorb(self, name: str, slice_obj: Obj) -> None:
        if self._port_name is None:
            return
        try:
            found = slice_endpoints(slice_obj, self._port_name)
        except FieldError:
            found = {}
        self._slices[name] = found
        for key, endpoint in found.items():
            self._owners.setdefault(key, {})[name] = endpoint
            self._rejudge(key)

    def _best(self, key: EndpointKey) -> Endpoint | None:
        owners = self._owners.get(key)
        if not owners:
            return None
        return min(owners.values(), key=_rank)

    def _rejudge(self, key: EndpointKey) -> None:
        best = self._best(key)
        self._ready.discard(key)
        self._fallbacks.discard(key)
        if best is not None and is_ready(best):
            self._ready.add(key)
        elif best is not None and is_fallback(best):
            self._fallbacks.add(key)

    def _publish(self, touched: set[EndpointKey] | None = None) -> Delta:
        """Bring the published set in line; only `touched` keys unless the mode changed."""
        if self._external is not None:
            wanted_keys: Iterable[EndpointKey] = [self._external.key]
            pool = {self._external.key: self._external}
            fallback = False
            touched = None
        else:
            pool = {}
            fallback = not self._ready
            wanted_keys = self._fallbacks if fallback else self._ready
        if touched is None or fallback != self.fallback:
            candidates = set(self._published) | set(wanted_keys)
        else:
            candidates = touched
        self.fallback = fallback
        wanted = self._fallbacks if fallback else self._ready
        added, removed = [], []
        for key in candidates:
            if self._external is not None:
                endpoint = pool.get(key)
            else:
                endpoint = self._best(key) if key in wanted else None
            current = self._published.get(key)
            if endpoint is None:
                if current is not None:
                    del self._published[key]
                    removed.append(key)
            elif endpoint != current:
                self._published[key] = endpoint
                added.append(endpoint)
        return Delta(tuple(added), tuple(removed))

    @staticmethod
    def owner_of(slice_obj: Obj) -> ObjectRef | None:
        """The Service a slice belongs to, from its service-name label."""
        labels = as_map(as_map(slice_obj.get("metadata"), "metadata").get("labels"), "labels")
        name = labels.get(SERVICE_NAME_LABEL)
        if not isinstance(name, str):
            return None
        return ObjectRef("Service", object_ref(slice_obj).namespace, name)

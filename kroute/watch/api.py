"""ApiClient: one-shot JSON requests to the Kubernetes API server, on anyio + httpcore.

Watching is KubernetesSource's (kroute.watch.kube); writing is this module's: the Lease of leader
election and, on top of it, status write-back. Both share the error values, the request headers
and the timeouts defined here, so the two ways of talking to the API server fail alike.

The verbs (kubernetes.io "API Concepts"; SEMANTICS.md section 4):
- `get`, `create` (POST to the collection), `replace` (PUT with `metadata.resourceVersion`:
  optimistic concurrency, a 409 means someone wrote in between and raises `Conflict`);
- `patch`: a JSON merge patch (RFC 7396, `application/merge-patch+json`);
- `apply`: server-side apply (`application/apply-patch+yaml`; a JSON body is YAML) with a field
  manager, and `force` to take over fields another manager owns (kubernetes.io "Server-Side
  Apply", conflicts);
- each with `subresource="status"` writes `.../status`: the status only, never the spec (the
  API server ignores the spec in a status write and the status in a spec write).
Errors are `ApiError`s naming the object ("Lease default/kroute-status: HTTP 409: Conflict:
..."), with the server's own reason and message, never a URL, a header or a credential;
network failures are `ApiUnreachable` (status 0), so callers catch one family.
"""

from __future__ import annotations

import json
import math
from types import TracebackType
from typing import Any
from urllib.parse import urlencode

import anyio
import anyio.to_thread
import httpcore

from kroute.chunks import OneChunk
from kroute.errors import KrouteError
from kroute.watch.cluster import Cluster
from kroute.watch.kinds import Kind
from kroute.watch.wire import Status


class ApiError(KrouteError):
    """The API server answered with an error status (or, as `ApiUnreachable`, not at all)."""

    def __init__(self, status: int, detail: str, what: str = "") -> None:
        prefix = f"{what}: " if what else ""
        super().__init__(f"{prefix}HTTP {status}: {detail}" if status else f"{prefix}{detail}")
        self.status = status


class Throttled(ApiError):
    """The server asked to come back later (`Retry-After`): wait that long, then retry."""

    def __init__(self, status: int, detail: str, retry_after: float, what: str = "") -> None:
        super().__init__(status, detail, what)
        self.retry_after = retry_after


class NotFound(ApiError):
    """404: no such object (or its resource is not served)."""


class Conflict(ApiError):
    """409: the object changed since the resourceVersion given (someone else wrote first), or
    a create found it already there. Read it again and decide anew."""


class ApiUnreachable(ApiError):
    """No answer: connection refused or reset, TLS failure, timeout."""

    def __init__(self, detail: str, what: str = "") -> None:
        super().__init__(0, detail, what)


#: The longest `Retry-After` obeyed; a longer one (or a date) is read as this.
MAX_RETRY_AFTER = 60.0

NETWORK_ERRORS = (httpcore.NetworkError, httpcore.TimeoutException, httpcore.ProtocolError,
                  OSError)  # fmt: skip


def api_error(
    status: int, headers: list[tuple[bytes, bytes]], body: bytes, what: str = ""
) -> ApiError:
    """The error for a non-2xx answer: Throttled when it says when to come back (RFC 9110
    10.2.3: Retry-After is seconds or a date; the API server sends seconds)."""
    detail = _status_detail(body)
    for name, value in headers:
        if name.lower() == b"retry-after":
            try:
                seconds = float(value)
            except ValueError:
                seconds = MAX_RETRY_AFTER
            if not math.isfinite(seconds):  # "nan", "inf": not a number of seconds
                seconds = MAX_RETRY_AFTER
            return Throttled(status, detail, min(max(seconds, 0.0), MAX_RETRY_AFTER), what)
    kind = {404: NotFound, 409: Conflict}.get(status, ApiError)
    return kind(status, detail, what)


def _status_detail(body: bytes) -> str:
    try:
        status = Status.from_object(json.loads(body))
    except ValueError:
        return body[:200].decode("utf-8", "replace")
    return f"{status.reason}: {status.message}" if status.reason else status.message


async def request_headers(cluster: Cluster) -> list[tuple[str, str]]:
    """Accept, User-Agent and fresh credentials (an exec plugin blocks: run in a thread)."""
    auth = await anyio.to_thread.run_sync(cluster.auth_headers)
    return [("Accept", "application/json"), ("User-Agent", "kroute"), *auth.items()]


def request_extensions(cluster: Cluster, read: float) -> dict[str, Any]:
    """httpcore's per-request timeouts (a half-open connection never errors by itself) and
    the TLS server name the kubeconfig names, if any."""
    ext: dict[str, Any] = {"timeout": {"connect": 10.0, "read": read, "write": 10.0, "pool": 10.0}}
    if cluster.server_name:
        ext["sni_hostname"] = cluster.server_name
    return ext


def describe(kind: Kind, namespace: str | None, name: str, subresource: str | None = None) -> str:
    """How errors name an object: "Lease default/kroute-status", "Ingress web/site status"."""
    where = f"{namespace}/{name}" if namespace and kind.namespaced else name
    return f"{kind.kind} {where}" + (f" {subresource}" if subresource else "")


class ApiClient:
    """One-shot JSON requests over one httpcore connection pool; close it (`aclose` or
    `async with`) when done. `timeout` bounds each read of an answer."""

    def __init__(self, cluster: Cluster, *, timeout: float = 30.0, max_connections: int = 4):
        self.cluster = cluster
        self.timeout = timeout
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=cluster.ssl_context, max_connections=max_connections
        )

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        # Shielded: closing under cancellation would leave the sockets to the GC.
        with anyio.CancelScope(shield=True):
            await self._pool.aclose()

    async def get(
        self, kind: Kind, namespace: str | None, name: str, *, subresource: str | None = None
    ) -> dict[str, Any]:
        return await self._call("GET", kind, namespace, name, subresource)

    async def create(self, kind: Kind, obj: dict[str, Any]) -> dict[str, Any]:
        """POST `obj` to its collection (namespace from `metadata.namespace`)."""
        namespace, name = _identity(obj)
        return await self._call("POST", kind, namespace, name, None, body=obj, collection=True)

    async def replace(
        self, kind: Kind, obj: dict[str, Any], *, subresource: str | None = None
    ) -> dict[str, Any]:
        """PUT `obj`, which must carry the `metadata.resourceVersion` it was read at: a write
        over anybody else's raises Conflict instead of undoing it."""
        namespace, name = _identity(obj)
        if not obj["metadata"].get("resourceVersion"):
            raise ValueError(f"{describe(kind, namespace, name)}: replace needs a resourceVersion")
        return await self._call("PUT", kind, namespace, name, subresource, body=obj)

    async def patch(
        self,
        kind: Kind,
        namespace: str | None,
        name: str,
        patch: dict[str, Any],
        *,
        subresource: str | None = None,
    ) -> dict[str, Any]:
        """A JSON merge patch (RFC 7396: objects merge, `None` deletes, lists are replaced)."""
        return await self._call("PATCH", kind, namespace, name, subresource, body=patch,
                                content_type="application/merge-patch+json")  # fmt: skip

    async def apply(
        self,
        kind: Kind,
        obj: dict[str, Any],
        *,
        field_manager: str,
        force: bool = False,
        subresource: str | None = None,
    ) -> dict[str, Any]:
        """Server-side apply: `obj` (with apiVersion and kind) states the fields
        `field_manager` owns; `force` takes over fields another manager owns instead of a
        Conflict."""
        namespace, name = _identity(obj)
        params = {"fieldManager": field_manager, **({"force": "true"} if force else {})}
        return await self._call(
            "PATCH", kind, namespace, name, subresource, body=obj, params=params,
            content_type="application/apply-patch+yaml",
        )  # fmt: skip

    async def _call(
        self,
        method: str,
        kind: Kind,
        namespace: str | None,
        name: str,
        subresource: str | None,
        *,
        body: dict[str, Any] | None = None,
        content_type: str = "application/json",
        params: dict[str, str] | None = None,
        collection: bool = False,
    ) -> dict[str, Any]:
        what = describe(kind, namespace, name, subresource)
        path = kind.path(namespace if kind.namespaced else None)
        if not collection:
            path += f"/{name}" + (f"/{subresource}" if subresource else "")
        url = self.cluster.base_url + path
        if params:
            url += "?" + urlencode(params)
        headers = await request_headers(self.cluster)
        content = b""
        if body is not None:
            content = json.dumps(body).encode()
            headers.append(("Content-Type", content_type))
        try:
            response = await self._pool.request(
                method, url, headers=headers, content=OneChunk(content),
                extensions=request_extensions(self.cluster, self.timeout),
            )  # fmt: skip
        except NETWORK_ERRORS as exc:
            raise ApiUnreachable(f"no answer ({type(exc).__name__})", what) from None
        if not 200 <= response.status < 300:
            raise api_error(response.status, response.headers, response.content, what)
        try:
            answer = json.loads(response.content)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise ApiError(response.status, "the answer is not a JSON object", what)
        return answer


def _identity(obj: dict[str, Any]) -> tuple[str | None, str]:
    meta = obj.get("metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
        raise ValueError("the object has no metadata.name")
    namespace = meta.get("namespace")
    return (namespace if isinstance(namespace, str) else None), meta["name"]

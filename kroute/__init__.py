"""kroute: what Traefik does for a Kubernetes cluster, as a Python library.

The curated public API. Everything not listed in `__all__` may change without notice.
`KubernetesSource` and `HttpcoreTransport` are imported on first use: they bring httpcore
(and, through it, trio when installed), which offline users should not pay for; so is
`KrouteTransport`, which needs httpx (the `httpx` extra), the TLS names, which bring
cryptography, and the API writing names (`ApiClient`, its errors, `LeaderElection`, `StatusWriter`).
"""

import importlib
from typing import TYPE_CHECKING, Any

from kroute.acme.http01 import Http01Challenges
from kroute.acme.plan import ACME_SELECTOR, CertificateRequest, plan_certificates
from kroute.acme.resolvers import Resolver
from kroute.acme.schedule import RenewalPolicy
from kroute.client.service import ServiceClient
from kroute.errors import (
    Answered,
    ConfigError,
    InvalidBackend,
    InvalidObject,
    InvalidRequest,
    KrouteError,
    ManifestError,
    NoHealthyEndpoint,
    NoRoute,
    Redirected,
    RuleSyntaxError,
    UpstreamClosed,
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from kroute.gateway.access import AccessLog, AccessLogStatistics, HeaderModes, LogFilters, LogFormat
from kroute.gateway.admin import AdminHandler
from kroute.gateway.asgi import AsgiGateway
from kroute.gateway.counts import RequestCounts
from kroute.gateway.events import RequestEvent
from kroute.gateway.fast import FastGateway
from kroute.gateway.handler import GatewayHandler
from kroute.gateway.metrics import Metrics
from kroute.gateway.mirror import Mirrors, MirrorStatistics
from kroute.gateway.router import Decision, EventSink, Observer, Observers, Router, RouterStatistics
from kroute.gateway.server import HttpServer, IncomingRequest, OutgoingResponse
from kroute.gateway.tracing import Tracing
from kroute.gateway.traffic import Traffic
from kroute.manifests import load_paths, load_text
from kroute.objects import BackendRef, Manifest, ObjectRef
from kroute.pipeline import (
    WAIT,
    Answer,
    AsyncStep,
    Awaited,
    Call,
    Chain,
    Deferring,
    Fetch,
    FetchFailed,
    Filters,
    HeaderEdits,
    Refuse,
    Reply,
    Step,
    UpstreamRequest,
    Waiting,
    run_end,
    run_outcome,
    run_request,
    run_request_async,
    run_response,
)
from kroute.pool.balance import (
    Balancer,
    HashOn,
    LeastRequest,
    RingHash,
    RoundRobin,
    WeightedRoundRobin,
    WeightedSplit,
)
from kroute.pool.endpoints import Delta, Endpoint, ServiceEndpoints, select_usable
from kroute.pool.health import (
    ActiveHealth,
    HealthConfig,
    Outcome,
    PassiveHealth,
    health_from_annotations,
)
from kroute.pool.pool import EndpointStatistics, Pick, Pool, PoolStatistics
from kroute.pool.prober import ActiveProber, http_probe
from kroute.rules.compile import CompileResult, compile_objects
from kroute.rules.entrypoints import DEFAULT_ENTRY_POINTS, Attachment, EntryPoint
from kroute.rules.explain import Candidate, Explanation, explain
from kroute.rules.policy import RoutePolicy
from kroute.rules.preview import Preview, preview
from kroute.rules.redirect import Redirect
from kroute.rules.request import RequestHead, normalize_host, normalize_path
from kroute.rules.route import Family, Route
from kroute.rules.table import RouteTable, TableStatistics
from kroute.rules.traefik import rule_condition
from kroute.status import (
    PublishedAddresses,
    StatusSettings,
    StatusUpdate,
    merge_status,
    plan_status,
    withdraw_status,
)
from kroute.transport.base import ForwardRequest, ForwardResponse, Target, Timeouts, Transport
from kroute.transport.http1 import ServerLimits
from kroute.transport.memory import MemoryTransport
from kroute.transport.pooled import PooledTransport
from kroute.transport.proxy import (
    Hop,
    RetryBudget,
    TrustedProxies,
    error_response,
    forwarding_headers,
    replay_safe,
    set_host,
    strip_hop_by_hop,
)
from kroute.transport.retry import send_with_retries
from kroute.transport.retry_policy import RetryPolicy
from kroute.watch import kinds
from kroute.watch.backoff import Backoff
from kroute.watch.cluster import Cluster
from kroute.watch.kinds import ROUTING_KINDS, Kind
from kroute.watch.sources import KindStatistics, ManifestSource, MemorySource, Source
from kroute.watch.store import Change, Store
from kroute.watch.wire import Status, WatchDecoder, WatchEvent, WatchProtocolError

if TYPE_CHECKING:
    from kroute.acme.manager import AcmeCertificates
    from kroute.acme.store import DirectoryStore, MemoryStore, SecretStore
    from kroute.acme.store import Store as AcmeStore
    from kroute.client.httpx_transport import KrouteTransport
    from kroute.gateway.status_writer import StatusWriter, WriterStatistics
    from kroute.tls.alpn.certificate import ValidationCertificate, validation_certificate
    from kroute.tls.alpn.challenges import AlpnChallenges
    from kroute.tls.certs import (
        Certificate,
        CertificateSet,
        certificate_from_secret,
        certificates_from_objects,
    )
    from kroute.tls.contexts import CertificateProvider, TlsCertificates, TlsContexts
    from kroute.tls.listener import HandshakeListener
    from kroute.transport.httpcore_transport import HttpcoreTransport
    from kroute.watch.api import ApiClient, ApiError, Conflict, NotFound
    from kroute.watch.kube import KubernetesSource
    from kroute.watch.leader import LeaderElection

__version__ = "0.1.0"

__all__ = [
    "ACME_SELECTOR",
    "DEFAULT_ENTRY_POINTS",
    "ROUTING_KINDS",
    "WAIT",
    "AccessLog",
    "AccessLogStatistics",
    "AcmeCertificates",
    "AcmeStore",
    "ActiveHealth",
    "ActiveProber",
    "AdminHandler",
    "AlpnChallenges",
    "Answer",
    "Answered",
    "ApiClient",
    "ApiError",
    "AsgiGateway",
    "AsyncStep",
    "Attachment",
    "Awaited",
    "BackendRef",
    "Backoff",
    "Balancer",
    "Call",
    "Candidate",
    "Certificate",
    "CertificateProvider",
    "CertificateRequest",
    "CertificateSet",
    "Chain",
    "Change",
    "Cluster",
    "CompileResult",
    "ConfigError",
    "Conflict",
    "Decision",
    "Deferring",
    "Delta",
    "DirectoryStore",
    "Endpoint",
    "EndpointStatistics",
    "EntryPoint",
    "EventSink",
    "Explanation",
    "Family",
    "FastGateway",
    "Fetch",
    "FetchFailed",
    "Filters",
    "ForwardRequest",
    "ForwardResponse",
    "GatewayHandler",
    "HandshakeListener",
    "HashOn",
    "HeaderEdits",
    "HeaderModes",
    "HealthConfig",
    "Hop",
    "Http01Challenges",
    "HttpServer",
    "HttpcoreTransport",
    "IncomingRequest",
    "InvalidBackend",
    "InvalidObject",
    "InvalidRequest",
    "Kind",
    "KindStatistics",
    "KrouteError",
    "KrouteTransport",
    "KubernetesSource",
    "LeaderElection",
    "LeastRequest",
    "LogFilters",
    "LogFormat",
    "Manifest",
    "ManifestError",
    "ManifestSource",
    "MemorySource",
    "MemoryStore",
    "MemoryTransport",
    "Metrics",
    "MirrorStatistics",
    "Mirrors",
    "NoHealthyEndpoint",
    "NoRoute",
    "NotFound",
    "ObjectRef",
    "Observer",
    "Observers",
    "Outcome",
    "OutgoingResponse",
    "PassiveHealth",
    "Pick",
    "Pool",
    "PoolStatistics",
    "PooledTransport",
    "Preview",
    "PublishedAddresses",
    "Redirect",
    "Redirected",
    "Refuse",
    "RenewalPolicy",
    "Reply",
    "RequestCounts",
    "RequestEvent",
    "RequestHead",
    "Resolver",
    "RetryBudget",
    "RetryPolicy",
    "RingHash",
    "RoundRobin",
    "Route",
    "RoutePolicy",
    "RouteTable",
    "Router",
    "RouterStatistics",
    "RuleSyntaxError",
    "SecretStore",
    "ServerLimits",
    "ServiceClient",
    "ServiceEndpoints",
    "Source",
    "Status",
    "StatusSettings",
    "StatusUpdate",
    "StatusWriter",
    "Step",
    "Store",
    "TableStatistics",
    "Target",
    "Timeouts",
    "TlsCertificates",
    "TlsContexts",
    "Tracing",
    "Traffic",
    "Transport",
    "TrustedProxies",
    "UpstreamClosed",
    "UpstreamConnectError",
    "UpstreamError",
    "UpstreamProtocolError",
    "UpstreamRequest",
    "UpstreamTimeout",
    "ValidationCertificate",
    "Waiting",
    "WatchDecoder",
    "WatchEvent",
    "WatchProtocolError",
    "WeightedRoundRobin",
    "WeightedSplit",
    "WriterStatistics",
    "__version__",
    "certificate_from_secret",
    "certificates_from_objects",
    "compile_files",
    "compile_objects",
    "error_response",
    "explain",
    "forwarding_headers",
    "health_from_annotations",
    "http_probe",
    "kinds",
    "load_paths",
    "load_text",
    "merge_status",
    "normalize_host",
    "normalize_path",
    "plan_certificates",
    "plan_status",
    "preview",
    "replay_safe",
    "rule_condition",
    "run_end",
    "run_outcome",
    "run_request",
    "run_request_async",
    "run_response",
    "select_usable",
    "send_with_retries",
    "set_host",
    "strip_hop_by_hop",
    "validation_certificate",
    "withdraw_status",
]


def compile_files(
    *paths: str,
    ingress_class: str = "kroute",
    gateway_class: str = "kroute",
    filters: Filters | None = None,
) -> CompileResult:
    """Load manifest files or directories and compile them: `load_paths` + `compile_objects`."""
    return compile_objects(
        load_paths(paths), ingress_class=ingress_class, gateway_class=gateway_class,
        filters=filters or Filters(),
    )  # fmt: skip


_LAZY = {
    "AcmeCertificates": "kroute.acme.manager",
    **dict.fromkeys(["DirectoryStore", "MemoryStore", "SecretStore"], "kroute.acme.store"),
    **dict.fromkeys(
        ["Certificate", "CertificateSet", "certificate_from_secret", "certificates_from_objects"],
        "kroute.tls.certs",
    ),
    **dict.fromkeys(
        ["CertificateProvider", "TlsCertificates", "TlsContexts"], "kroute.tls.contexts"
    ),
    "HandshakeListener": "kroute.tls.listener",
    "AlpnChallenges": "kroute.tls.alpn.challenges",
    **dict.fromkeys(
        ["ValidationCertificate", "validation_certificate"], "kroute.tls.alpn.certificate"
    ),
    "KrouteTransport": "kroute.client.httpx_transport",
    "KubernetesSource": "kroute.watch.kube",
    **dict.fromkeys(["ApiClient", "ApiError", "Conflict", "NotFound"], "kroute.watch.api"),
    "LeaderElection": "kroute.watch.leader",
    **dict.fromkeys(["StatusWriter", "WriterStatistics"], "kroute.gateway.status_writer"),
    "HttpcoreTransport": "kroute.transport.httpcore_transport",
}


def __getattr__(name: str) -> Any:
    if name == "AcmeStore":
        return importlib.import_module("kroute.acme.store").Store
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'kroute' has no attribute {name!r}")

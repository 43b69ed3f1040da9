"""kroute: what Traefik does for a Kubernetes cluster, as a Python library.

The curated public API. Everything not listed in `__all__` may change without notice.
`KubernetesSource` is imported on first use: it brings httpcore (and, through it, trio when
installed), which offline users should not pay for.
"""

import importlib
from typing import TYPE_CHECKING, Any

from kroute.errors import (
    ConfigError,
    InvalidObject,
    InvalidRequest,
    KrouteError,
    ManifestError,
    NoRoute,
    RuleSyntaxError,
)
from kroute.manifests import load_paths, load_text
from kroute.objects import BackendRef, Manifest, ObjectRef
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
from kroute.rules.explain import Candidate, Explanation, explain
from kroute.rules.request import RequestHead, normalize_host, normalize_path
from kroute.rules.route import Family, Route
from kroute.rules.table import RouteTable, TableStatistics
from kroute.rules.traefik import rule_condition
from kroute.watch import kinds
from kroute.watch.backoff import Backoff
from kroute.watch.cluster import Cluster
from kroute.watch.kinds import ROUTING_KINDS, Kind
from kroute.watch.sources import KindStatistics, ManifestSource, MemorySource, Source
from kroute.watch.store import Change, Store
from kroute.watch.wire import Status, WatchDecoder, WatchEvent, WatchProtocolError

if TYPE_CHECKING:
    from kroute.watch.kube import KubernetesSource

__version__ = "0.1.0"

__all__ = [
    "ROUTING_KINDS",
    "ActiveHealth",
    "ActiveProber",
    "BackendRef",
    "Backoff",
    "Balancer",
    "Candidate",
    "Change",
    "Cluster",
    "CompileResult",
    "ConfigError",
    "Delta",
    "Endpoint",
    "EndpointStatistics",
    "Explanation",
    "Family",
    "HashOn",
    "HealthConfig",
    "InvalidObject",
    "InvalidRequest",
    "Kind",
    "KindStatistics",
    "KrouteError",
    "KubernetesSource",
    "LeastRequest",
    "Manifest",
    "ManifestError",
    "ManifestSource",
    "MemorySource",
    "NoRoute",
    "ObjectRef",
    "Outcome",
    "PassiveHealth",
    "Pick",
    "Pool",
    "PoolStatistics",
    "RequestHead",
    "RingHash",
    "RoundRobin",
    "Route",
    "RouteTable",
    "RuleSyntaxError",
    "ServiceEndpoints",
    "Source",
    "Status",
    "Store",
    "TableStatistics",
    "WatchDecoder",
    "WatchEvent",
    "WatchProtocolError",
    "WeightedRoundRobin",
    "WeightedSplit",
    "__version__",
    "compile_files",
    "compile_objects",
    "explain",
    "health_from_annotations",
    "http_probe",
    "kinds",
    "load_paths",
    "load_text",
    "normalize_host",
    "normalize_path",
    "rule_condition",
    "select_usable",
]


def compile_files(
    *paths: str,
    ingress_class: str = "kroute",
    gateway_class: str = "kroute",
) -> CompileResult:
    """Load manifest files or directories and compile them: `load_paths` + `compile_objects`."""
    return compile_objects(
        load_paths(paths), ingress_class=ingress_class, gateway_class=gateway_class
    )


def __getattr__(name: str) -> Any:
    if name == "KubernetesSource":
        return importlib.import_module("kroute.watch.kube").KubernetesSource
    raise AttributeError(f"module 'kroute' has no attribute {name!r}")

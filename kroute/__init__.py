"""kroute: what Traefik does for a Kubernetes cluster, as a Python library.

The curated public API. Everything not listed in `__all__` may change without notice.
"""

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
from kroute.objects import BackendRef, ObjectRef
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
from kroute.rules.compile import CompileResult, Manifest, compile_objects
from kroute.rules.explain import Candidate, Explanation, explain
from kroute.rules.request import RequestHead, normalize_host, normalize_path
from kroute.rules.route import Family, Route
from kroute.rules.table import RouteTable, TableStatistics
from kroute.rules.traefik import rule_condition

__version__ = "0.1.0"

__all__ = [
    "ActiveHealth",
    "ActiveProber",
    "BackendRef",
    "Balancer",
    "Candidate",
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
    "KrouteError",
    "LeastRequest",
    "Manifest",
    "ManifestError",
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
    "TableStatistics",
    "WeightedRoundRobin",
    "WeightedSplit",
    "__version__",
    "compile_files",
    "compile_objects",
    "explain",
    "health_from_annotations",
    "http_probe",
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

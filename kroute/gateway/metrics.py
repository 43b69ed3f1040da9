"""Prometheus metrics of a Router, through prometheus-client (the `metrics` extra).

Counted as they happen (the Router's observer hooks):
- `kroute_requests_total{route, service, code}`: forwarded requests by the status the client
  got (an error's status for 404/500/502/503/504);
- `kroute_request_duration_seconds{route, service}`: time from routing to the response head;
- `kroute_table_rebuild_duration_seconds`: each route table rebuild.

Read from the Router's state at scrape time (nothing to keep in step):
- `kroute_endpoint_up{service, endpoint, state}`: 1 in rotation, 0 ejected or unhealthy;
- `kroute_endpoints_in_rotation{service}`, `kroute_routes`, `kroute_invalid_objects`,
  `kroute_table_rebuilds_total`, `kroute_ready`;
- `kroute_watch_synced{kind}`, `kroute_watch_objects{kind}`,
  `kroute_watch_reconnects_total{kind}`, `kroute_watch_relists_total{kind}`;
- with TLS, `kroute_tls_cert_not_after{secret, subject}`: each certificate's expiry.

Requests are counted by the Router's `RequestCounts` (shared with the dashboard's `Traffic`:
one call per request for both), turned into metric families when Prometheus scrapes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from kroute.errors import ConfigError
from kroute.gateway.counts import DURATION_BUCKETS, RequestCounts
from kroute.gateway.router import Router

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from kroute.tls.contexts import TlsCertificates

REBUILD_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0)


class Metrics:
    """Metrics of one Router, in their own registry; `render()` is the `/metrics` answer."""

    def __init__(
        self,
        router: Router,
        *,
        registry: CollectorRegistry | None = None,
        tls: TlsCertificates | None = None,
    ) -> None:
        try:
            import prometheus_client
        except ImportError:
            raise ConfigError(
                "metrics need prometheus-client: pip install 'kroute[metrics]'"
            ) from None
        self._client = prometheus_client
        self.registry = registry or prometheus_client.CollectorRegistry()
        self.rebuild_duration = prometheus_client.Histogram(
            "kroute_table_rebuild_duration_seconds", "Route table rebuilds.",
            buckets=REBUILD_BUCKETS, registry=self.registry,
        )  # fmt: skip
        #: The requests counted (the Router's, shared with the dashboard's charts).
        self.counts = RequestCounts.of(router)
        self.registry.register(_RequestCollector(self.counts))
        self.registry.register(_StateCollector(router, tls))
        router.observers.append(self)  # (for `rebuilt`)
        self._router = router

    def rebuilt(self, seconds: float) -> None:
        self.rebuild_duration.observe(seconds)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        self._router.refresh()  # a pending rebuild is counted in this scrape, not the next
        return self._client.generate_latest(self.registry), self._client.CONTENT_TYPE_LATEST


class _RequestCollector:
    """`kroute_requests_total` and `kroute_request_duration_seconds`, from the counts."""

    def __init__(self, counts: RequestCounts) -> None:
        self.counts = counts

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

        requests = CounterMetricFamily(
            "kroute_requests", "Forwarded requests by route, service and status code.",
            labels=["route", "service", "code"],
        )  # fmt: skip
        for labelled, series in self.counts.series.items():
            requests.add_metric(list(labelled), series.count)
        yield requests
        duration = HistogramMetricFamily("kroute_request_duration_seconds",
                                         "From routing to the response head.",
                                         labels=["route", "service"])  # fmt: skip
        for labels, durations in self.counts.durations.items():
            cumulative, buckets = 0, []
            bounds = [str(bound) for bound in DURATION_BUCKETS] + ["+Inf"]
            for bound, count in zip(bounds, durations.buckets, strict=True):
                cumulative += count
                buckets.append((bound, cumulative))
            duration.add_metric(list(labels), buckets, durations.total)
        yield duration


class _StateCollector:
    """Gauges and counters read from the Router when Prometheus scrapes."""

    def __init__(self, router: Router, tls: TlsCertificates | None) -> None:
        self.router = router
        self.tls = tls

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        router = self.router
        stats = router.statistics()
        up = GaugeMetricFamily("kroute_endpoint_up", "1 when the endpoint is in rotation.",
                               labels=["service", "endpoint", "state"])  # fmt: skip
        rotation = GaugeMetricFamily("kroute_endpoints_in_rotation", "Endpoints taking traffic.",
                                     labels=["service"])  # fmt: skip
        for pool in stats.pools:
            rotation.add_metric([pool.name], pool.in_rotation)
            for endpoint in pool.endpoints:
                up.add_metric([pool.name, endpoint.endpoint, endpoint.state],
                              1.0 if endpoint.state == "up" else 0.0)  # fmt: skip
        yield up
        yield rotation
        yield GaugeMetricFamily("kroute_routes", "Routes in the table.", value=stats.routes)
        yield GaugeMetricFamily("kroute_invalid_objects", "Objects rejected by the compilers.",
                                value=stats.invalid_objects)  # fmt: skip
        yield GaugeMetricFamily("kroute_ready", "1 once every source synced and a table is up.",
                                value=1.0 if stats.ready else 0.0)  # fmt: skip
        yield CounterMetricFamily("kroute_table_rebuilds", "Route table rebuilds.",
                                  value=stats.rebuilds)  # fmt: skip
        copies = CounterMetricFamily("kroute_mirror_copies", "RequestMirror copies, by what "
                                     "became of them.", labels=["outcome"])  # fmt: skip
        for outcome in ("mirrored", "dropped", "failed", "skipped"):
            copies.add_metric([outcome], getattr(stats.mirrors, outcome))
        yield copies
        families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {
            "synced": GaugeMetricFamily("kroute_watch_synced", "1 once the kind is listed.",
                                        labels=["kind"]),
            "objects": GaugeMetricFamily("kroute_watch_objects", "Objects in the cache.",
                                         labels=["kind"]),
            "reconnects": CounterMetricFamily("kroute_watch_reconnects",
                                              "Watch streams reopened.", labels=["kind"]),
            "relists": CounterMetricFamily("kroute_watch_relists",
                                           "Lists after the first (410 Gone, errors).",
                                           labels=["kind"]),
        }  # fmt: skip
        for source in router.sources:
            for kind in source.statistics():
                families["synced"].add_metric([kind.kind], 1.0 if kind.synced else 0.0)
                families["objects"].add_metric([kind.kind], kind.objects)
                families["reconnects"].add_metric([kind.kind], kind.reconnects)
                families["relists"].add_metric([kind.kind], kind.relists)
        yield from families.values()
        if self.tls is not None:
            expiry = GaugeMetricFamily("kroute_tls_cert_not_after",
                                       "When a served certificate expires (Unix time).",
                                       labels=["secret", "subject"])  # fmt: skip
            for cert in self.tls.contexts.certificates.certificates:
                expiry.add_metric([str(cert.secret), cert.subject], cert.not_after.timestamp())
            yield expiry

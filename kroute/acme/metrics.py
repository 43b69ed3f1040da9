"""Prometheus series of AcmeCertificates, read at scrape time (prometheus-client's collector
interface, as kroute.gateway.metrics does): orders started, failed and issued per resolver,
and each stored certificate's days to expiry.

Alert on `kroute_acme_certificate_expiry_days < 14`: renewal normally happens with a third of
the lifetime left (30 days for Let's Encrypt's 90), so a certificate that low is failing to
renew; `kroute_acme_order_failures_total` says whether orders fail.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kroute.acme.manager import AcmeCertificates


class AcmeCollector:
    def __init__(self, acme: AcmeCertificates) -> None:
        self.acme = acme

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        stats = self.acme.statistics
        for name, what, counts in (
            ("kroute_acme_orders", "ACME orders started", stats.attempts),
            ("kroute_acme_order_failures", "ACME orders that failed", stats.failures),
            ("kroute_acme_certificates_issued", "Certificates issued and stored", stats.issued),
        ):
            family = CounterMetricFamily(name, what + ", per resolver.", labels=["resolver"])
            for resolver in self.acme.resolvers:
                family.add_metric([resolver], counts.get(resolver, 0))
            yield family
        expiry = GaugeMetricFamily("kroute_acme_certificate_expiry_days",
                                   "Days until a stored ACME certificate expires.",
                                   labels=["resolver", "secret", "names"])  # fmt: skip
        now = self.acme.clock()
        for name, held in sorted(self.acme.held().items()):
            days = (held.certificate.not_after - now).total_seconds() / 86400
            expiry.add_metric([held.resolver, name, ",".join(held.certificate.names)], days)
        yield expiry

"""Control-plane logs: a watch re-list, a rejected object (named with its field, logged once
per change, not per rebuild), endpoint health transitions, certificate reloads."""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import anyio
import pytest

from kroute.gateway.router import Router
from kroute.pool.endpoints import Endpoint
from kroute.pool.health import HealthConfig, Outcome, PassiveHealth
from kroute.pool.pool import Pool
from kroute.tls.certs import certificates_from_objects
from kroute.tls.contexts import TlsContexts
from kroute.watch.kinds import INGRESS, SERVICE
from tests.apiserver import ApiServer
from tests.builders import ingress
from tests.test_kube import cached, emulated, eventually, running, source_for, svc
from tests.test_tls import secret, tls_ingress

__all__ = ["running"]  # (the fixture, shared with test_kube)

pytestmark = pytest.mark.anyio


def messages(caplog: pytest.LogCaptureFixture, logger: str) -> list[tuple[int, str]]:
    """What loggers named `logger` or below it logged: (level, message) each."""
    return [(r.levelno, r.getMessage()) for r in caplog.records
            if r.name == logger or r.name.startswith(logger + ".")]  # fmt: skip


async def test_a_relist_is_logged(
    tmp_path: Path, running: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="kroute.watch")
    with ApiServer([SERVICE]) as api:
        api.create(SERVICE, svc("a"))
        source = source_for(api, tmp_path, (SERVICE,))
        running(source)
        with anyio.fail_after(10):
            await source.wait_synced()
        assert not [m for _, m in messages(caplog, "kroute.watch.kube") if "re-list" in m]
        api.fault(SERVICE, "drop")  # the watch is lost and history compacted: 410, re-list
        api.create(SERVICE, svc("b"))
        api.compact()
        api.fault(SERVICE, "drop")
        await eventually(lambda: cached(source, SERVICE) == emulated(api, SERVICE))
        await eventually(lambda: any("listed 2 objects" in m for _, m in
                                     messages(caplog, "kroute.watch.kube")))  # fmt: skip
    logged = messages(caplog, "kroute.watch.kube")
    assert any(level == logging.INFO and "services: listed 2 objects" in m and "(re-list)" in m
               for level, m in logged)  # fmt: skip
    assert any("re-listing" in m for _, m in messages(caplog, "kroute.watch"))  # (the 410)


async def test_a_rejected_object_is_logged_once_with_its_field(
    tmp_path: Path, running: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="kroute.gateway.router")
    bad = ingress("shop", [("shop.local", [("/", "Sometimes", "web")])])
    with ApiServer([INGRESS, SERVICE]) as api:
        api.create(INGRESS, bad)
        source = source_for(api, tmp_path, (INGRESS, SERVICE))
        router = Router([source])
        running(source)
        with anyio.fail_after(10):
            await source.wait_synced()
        router.refresh()
        api.create(INGRESS, ingress("fine", [("fine.local", [("/", "Prefix", "web")])]))
        await eventually(lambda: ("default", "fine") in source.stores[INGRESS].snapshot())
        router.refresh()  # a rebuild: the same rejection is not logged again
        assert len(router.table) == 1
    (rejected,) = [m for _, m in messages(caplog, "kroute.gateway.router")]
    assert "Ingress default/shop" in rejected
    assert "pathType" in rejected


def test_endpoint_health_transitions_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="kroute.pool")
    health = HealthConfig(passive=PassiveHealth(consecutive_5xx=2, base_ejection_time=10))
    pool = Pool("default/web:80", health=health)
    pool.replace([Endpoint("10.0.0.1", 8080), Endpoint("10.0.0.2", 8080)], now=0.0)
    for _ in range(2):
        pool.begin(("10.0.0.1", 8080))
        pool.end(("10.0.0.1", 8080), Outcome.HTTP_5XX, now=1.0)
    pool.pick(now=20.0, rng=random.Random(0))  # the ejection is over
    (out, back) = messages(caplog, "kroute.pool.pool")
    assert out[0] == logging.WARNING
    assert out[1].startswith("default/web:80: endpoint 10.0.0.1:8080 out of rotation: ejected")
    assert back == (logging.INFO, "default/web:80: endpoint 10.0.0.1:8080 back in rotation: "
                                  "ejection time over")  # fmt: skip


def test_certificate_reloads_are_logged_when_they_change_something(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="kroute.tls")
    contexts = TlsContexts()
    served = certificates_from_objects([secret("shop-tls", "shop.local"),
                                        tls_ingress("shop", "shop.local", "shop-tls")])  # fmt: skip
    contexts.update(served)
    contexts.update(served)  # the same again: nothing to say
    contexts.update(certificates_from_objects([]))
    logged = messages(caplog, "kroute.tls.contexts")
    assert [m.split(" ")[1] for _, m in logged] == ["serving", "no"]
    assert all("from Secret default/shop-tls" in m for _, m in logged)

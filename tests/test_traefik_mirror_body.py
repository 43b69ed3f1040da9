"""TraefikService mirroring of request bodies (`maxBodySize`, `mirrorBody`), through every
front against real echo backends on loopback: a body within the limit reaches the mirror
whole, fixed-length or chunked; a larger one is not copied (the request itself is served);
upgrades and HTTPRoute RequestMirrors never copy bodies. Manifests as Traefik's "Mirroring"
example."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httptools
import pytest

import kroute
from kroute.gateway.mirror import Mirrors
from kroute.gateway.router import Router
from kroute.pipeline.filters import Mirror, MirrorCopy
from kroute.transport import conformance
from kroute.transport.conformance import Backend
from tests.builders import gateway
from tests.fronts import FrontClient, pair_gateway
from tests.test_gateway_e2e import endpoint_slice, service
from tests.test_traefik_services import route_to, traefik_service, ts


class Recording(Backend):
    """An echo backend that keeps what it was sent: (target, body length, body digest)."""

    def __init__(self, address: str) -> None:
        super().__init__(address)
        self.seen: list[tuple[str, int, str]] = []

    async def _answer(self, stream: Any, path: str, query: dict[str, str], head: Any,
                      parser: httptools.HttpRequestParser) -> bool:  # fmt: skip
        body = b"".join(getattr(head, "pieces", []))
        self.seen.append((head.url.decode(), head.body, hashlib.sha256(body).hexdigest()))
        return await super()._answer(stream, path, query, head, parser)


def _keeping(self: Any, body: bytes) -> None:
    """The request parser's body callback, keeping the pieces too (the tests' bodies are small)."""
    if not hasattr(self, "pieces"):
        self.pieces = []
    self.pieces.append(body)
    _on_body(self, body)


_on_body = conformance._RequestHead.on_body


def mirroring(name: str, **options: Any) -> dict[str, Any]:
    return traefik_service(name, {"mirroring": {"name": "web", "port": 80, **options,
                                                "mirrors": [{"name": "other", "port": 80,
                                                             "percent": 100}]}})  # fmt: skip


Served = tuple[FrontClient, Recording, Recording, Router]


@pytest.fixture
async def served(every_front: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Served]:
    monkeypatch.setattr(conformance._RequestHead, "on_body", _keeping)
    async with pair_gateway(Recording("127.0.0.2"), Recording("127.0.0.3"), _objects,
                            every_front, 3) as out:  # fmt: skip
        yield out


def _objects(main: Recording, other: Recording) -> list[dict[str, Any]]:
    return [
        gateway(), service("web"), service("other"),
        endpoint_slice("web", main.port, main.address),
        endpoint_slice("other", other.port, other.address),
        mirroring("small", maxBodySize=64),
        mirroring("nobody", mirrorBody=False),
        route_to("small.local", ts("small")),
        route_to("nobody.local", ts("nobody")),
    ]  # fmt: skip


async def _copies(router: Router, count: int) -> None:
    with anyio.fail_after(5):
        while router.mirrors.mirrored < count:  # (copies travel on their own)
            await anyio.sleep(0.005)


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def _posts(front: FrontClient, size: int, piece: int) -> None:
    """A POST of `size` bytes with Content-Length, then one of two `piece`s chunked."""
    status, _, _ = await front.request("small.local", "/echo", method="POST", body=b"x" * size)
    assert status == 200
    status, _, _ = await front.request("small.local", "/echo?n=2", method="POST",
                                       body=_chunks(b"a" * piece, b"b" * piece))  # fmt: skip
    assert status == 200


@pytest.mark.anyio
async def test_a_body_within_max_body_size_is_mirrored_whole(served: Served) -> None:
    front, main, other, router = served
    await _posts(front, 40, 30)
    await _copies(router, 2)
    assert other.seen == main.seen  # the same targets, lengths and digests
    assert [(t, n) for t, n, _ in other.seen] == [("/echo", 40), ("/echo?n=2", 60)]


@pytest.mark.anyio
async def test_a_larger_body_is_served_and_not_mirrored(served: Served) -> None:
    front, main, other, router = served
    await _posts(front, 65, 40)
    status, _, _ = await front.request("small.local", "/echo?get=1")
    assert status == 200
    await _copies(router, 1)
    assert [(t, n) for t, n, _ in main.seen] == [("/echo", 65), ("/echo?n=2", 80),
                                                 ("/echo?get=1", 0)]  # fmt: skip
    assert [(t, n) for t, n, _ in other.seen] == [("/echo?get=1", 0)]
    assert router.mirrors.statistics().skipped == 2


@pytest.mark.anyio
async def test_mirror_body_false_copies_only_requests_without_one(served: Served) -> None:
    front, main, other, router = served
    status, _, _ = await front.request("nobody.local", "/echo", method="POST", body=b"x" * 4)
    assert status == 200
    status, _, _ = await front.request("nobody.local", "/echo?get=1")
    await _copies(router, 1)
    assert [t for t, _, _ in other.seen] == ["/echo?get=1"]
    assert len(main.seen) == 2


def test_max_body_size_and_mirror_body_compile_to_the_copy_limit() -> None:
    result = kroute.compile_objects([
        mirroring("a", maxBodySize=10), mirroring("b"), mirroring("c", mirrorBody=False),
        mirroring("d", mirrorBody="yes"),
        *(route_to(f"{n}.test", ts(n)) for n in "abcd"),
    ])  # fmt: skip
    assert [(e.obj, e.field) for e in result.errors] == [
        ("TraefikService default/d", "spec.mirroring.mirrorBody")
    ]
    limits = {}
    for route in result.table.routes:
        if route.backend_chains:
            (step,) = route.backend_chains[0].steps
            assert isinstance(step, Mirror)
            limits[route.source.name] = step.body_limit
    assert limits == {"a": 10, "b": 1 << 20, "c": 0}


def test_the_queue_bounds_the_body_bytes_it_holds() -> None:
    step = Mirror("m", backend=kroute.BackendRef("default", "other", 80), body_limit=100)
    copy = MirrorCopy(step, "POST", "/", ())
    mirrors = Mirrors(body_bytes=150)
    waiting = mirrors.offer([copy, copy], body=True, draw=lambda: 0.0)
    assert len(waiting) == 2
    mirrors.completed(waiting, b"x" * 80)  # 80 held, then 160 > 150: the second dropped
    assert mirrors.statistics().queued == 1
    assert mirrors.statistics().dropped == 1
    tee = mirrors.tee([copy])
    for _ in range(3):
        tee.add(b"y" * 40)  # 120 > 100: not kept
    tee.done()
    assert mirrors.statistics().skipped == 1
    assert mirrors.offer([copy], body=False, draw=lambda: 0.0, upgrade=True) == []
    assert mirrors.statistics().skipped == 2


def test_bodies_being_read_count_against_the_queue_budget_and_are_given_back() -> None:
    """However large maxBodySize is, the bodies kept while they are read and those queued are
    bounded together (found in review: each tee kept up to its limit, unbounded in all)."""
    step = Mirror("m", backend=kroute.BackendRef("default", "other", 80), body_limit=1 << 40)
    copy = MirrorCopy(step, "POST", "/", ())
    mirrors = Mirrors(body_bytes=100)
    first, second = mirrors.tee([copy]), mirrors.tee([copy])
    first.add(b"a" * 60)
    second.add(b"b" * 60)  # 120 > 100: given up, its copy dropped at the end
    second.done()
    assert mirrors.statistics().dropped == 1
    abandoned = mirrors.tee([copy])
    abandoned.add(b"c" * 30)  # 90 held: the client goes away before the end
    del abandoned  # (its bytes are given back when it goes)
    first.add(b"a" * 30)
    first.done()
    assert mirrors.statistics().queued == 1
    last = mirrors.tee([copy])
    last.add(b"d" * 20)  # 90 queued + 20 > 100
    last.done()
    assert mirrors.statistics().dropped == 2

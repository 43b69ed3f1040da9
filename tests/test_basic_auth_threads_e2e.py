"""basicAuth's bcrypt checks run in worker threads on every front (HttpServer on asyncio and
trio, FastGateway, the ASGI gateway on asyncio and trio): while one runs, the front serves
other requests. The check is held on an event, so nothing here depends on timing."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import anyio
import anyio.to_thread
import bcrypt
import pytest

from kroute.rules.middlewares import htpasswd
from tests.builders import httproute, to
from tests.fronts import echo_gateway
from tests.test_middlewares_e2e import middleware, using
from tests.test_middlewares_security_e2e import basic
from tests.test_pipeline_e2e import ext, headers_of

pytestmark = pytest.mark.anyio


def add(name: str) -> dict[str, Any]:
    return {"type": "RequestHeaderModifier",
            "requestHeaderModifier": {"add": [{"name": name, "value": "yes"}]}}  # fmt: skip


HASH = bcrypt.hashpw(b"right", bcrypt.gensalt(4)).decode()
ROUTES = [
    middleware("auth", {"basicAuth": {"users": [f"user:{HASH}"], "headerField": "X-User"}}),
    middleware("before", {"replacePath": {"path": "/echo"}}),
    # A step before the check and one after it: each runs once, in order, whether the check
    # waited or not (replacePath run twice would send two X-Replaced-Path, add two X-After).
    httproute("bcrypt", [{"filters": [ext("before", "traefik.io", "Middleware"),
                                      ext("auth", "traefik.io", "Middleware"), add("X-After")],
                          "backendRefs": [to("web")]}], hostnames=["bcrypt.local"]),
    using("free.local"),
]  # fmt: skip


class Held:
    """`htpasswd.check` that holds the password b"hold" until `release` is set, saying where
    it ran."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.threads: list[int] = []
        self.released_in_time = False
        self.calls: list[bytes] = []
        self.real = htpasswd.check

    def __call__(self, password: bytes, stored: str) -> bool:
        self.calls.append(password)
        self.threads.append(threading.get_ident())
        if password == b"hold":
            self.started.set()
            self.released_in_time = self.release.wait(10)  # (a bound against a hang only)
        return self.real(password, stored)


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> Iterator[Held]:
    checks = Held()
    monkeypatch.setattr(htpasswd, "check", checks)
    yield checks
    checks.release.set()


async def test_other_requests_are_served_while_bcrypt_runs(every_front: str, held: Held) -> None:
    loop_thread = threading.get_ident()
    async with echo_gateway(ROUTES, every_front) as (front, backend, router):
        answers: dict[str, int] = {}

        async def wrong() -> None:
            status, _, _ = await front.request("bcrypt.local", "/in",
                                               headers=basic(b"user:hold"))  # fmt: skip
            answers["held"] = status

        async with anyio.create_task_group() as group:
            group.start_soon(wrong)
            assert await anyio.to_thread.run_sync(held.started.wait, 10)
            assert router.workers.busy == 1
            # The check is running: the front serves other routes, and other users of the
            # same route (their own check in a second worker thread).
            assert (await front.request("free.local", "/echo"))[0] == 200
            status, _, body = await front.request("bcrypt.local", "/in",
                                                  headers=basic(b"user:right"))  # fmt: skip
            assert status == 200
            assert "held" not in answers
            held.release.set()
        assert answers["held"] == 401
    assert held.released_in_time  # (released by the test, not by the bound)
    assert loop_thread not in held.threads
    echoed = json.loads(body)
    assert echoed["target"] == "/echo"
    headers = headers_of(echoed)
    assert headers["x-user"] == ["user"]
    assert (headers["x-replaced-path"], headers["x-after"]) == (["/in"], ["yes"])
    assert backend.hits == {"/echo": 2}  # (free.local, and the right password once)


async def test_a_verdict_is_remembered_and_answered_at_once(every_front: str, held: Held) -> None:
    async with echo_gateway(ROUTES, every_front) as (front, backend, router):
        for credentials in (b"user:right", b"user:wrong", b"nobody:right") * 3:
            status, _, body = await front.request("bcrypt.local", "/in",
                                                  headers=basic(credentials))  # fmt: skip
            assert status == (200 if credentials == b"user:right" else 401), body
        assert router.workers.busy == 0
    assert held.calls == [b"right", b"wrong", b"right"]  # bcrypt once per credentials
    assert backend.hits == {"/echo": 3}

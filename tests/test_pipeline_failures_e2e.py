"""Users' steps that raise after the request steps, through every front (HttpServer on asyncio
and trio, FastGateway, the ASGI gateway on asyncio and trio): a response step that raises fails
the response closed (500, the backend's response and connection dropped, never sent without
the step's edits); an outcome step that raises is logged and the request goes on. Either way the
steps told of the request's end are told once, so no inFlightReq slot leaks."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import anyio
import attrs
import pytest

from kroute.pipeline import Filters, Step, UpstreamRequest
from kroute.pipeline.steps import Header
from kroute.transport.conformance import Backend
from tests.builders import httproute, to
from tests.fronts import FrontClient, echo_gateway
from tests.test_pipeline_e2e import ext

pytestmark = pytest.mark.anyio


@attrs.frozen
class Recording(Step):
    """A user's step that adds a response header (or raises there, or on the outcome) and
    records what it was told."""

    on_response: ClassVar[bool] = True
    on_outcome: ClassVar[bool] = True
    on_end: ClassVar[bool] = True
    raises: str = attrs.field(default="", kw_only=True)
    told: list[Any] = attrs.field(factory=list, kw_only=True, eq=False)

    def response(self, status: int, headers: list[Header], request: UpstreamRequest) -> None:
        if self.raises == "response":
            raise RuntimeError("a bug in a response step")
        headers.append((b"X-Checked", b"yes"))

    def outcome(self, request: UpstreamRequest, status: int, seconds: float) -> None:
        self.told.append(("outcome", status))
        if self.raises == "outcome":
            raise RuntimeError("a bug in an outcome step")

    def end(self, request: UpstreamRequest) -> None:
        self.told.append("end")


class StepFilters(Filters):
    """Filters that are Step objects (what an application with its own Step classes gives)."""

    def __init__(self, steps: dict[str, Recording]) -> None:
        super().__init__()
        self.steps = steps

    def step(self, name: str, field: str) -> Step | None:
        return self.steps.get(name)


def routes() -> list[dict[str, Any]]:
    return [httproute(name, [{"filters": [ext(name)], "backendRefs": [to("web")]}],
                      hostnames=[f"{name}.local"]) for name in ("fine", "response", "outcome")]  # fmt: skip


async def ended(step: Recording) -> None:
    """Until the front told `step` that the request ended (after the answer, on some fronts)."""
    with anyio.fail_after(5):
        while "end" not in step.told:
            await anyio.sleep(0.01)


Served = tuple[FrontClient, Backend, dict[str, Recording]]


@pytest.fixture
async def served(every_front: str) -> AsyncIterator[Served]:
    """The routes on `every_front`, with their steps (fine, raising in response, in outcome)."""
    steps = {name: Recording(name, raises=name) for name in ("fine", "response", "outcome")}
    async with echo_gateway(routes(), every_front, filters=StepFilters(steps)) as (
        client, backend, _):  # fmt: skip
        yield client, backend, steps


async def test_a_raising_response_step_fails_the_response_closed(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    client, backend, steps = served
    status, headers, body = await client.request("fine.local", "/echo")
    assert (status, (b"x-checked", b"yes") in [(n.lower(), v) for n, v in headers]) == (
        200, True)  # fmt: skip
    with caplog.at_level(logging.ERROR, logger="kroute.pipeline.steps"):
        status, headers, body = await client.request("response.local", "/echo")
        assert (status, body) == (500, b"500 Internal Server Error\n")
        assert b"x-checked" not in [n.lower() for n, _ in headers]
        await ended(steps["response"])
    assert steps["response"].told == [("outcome", 500), "end"]
    assert "failed; the request is answered 500" in caplog.text
    assert backend.hits == {"/echo": 2}  # (forwarded: the response is what failed)
    # The front carries on (FastGateway used to drop the client's connection).
    assert (await client.request("fine.local", "/echo"))[0] == 200


async def test_a_raising_outcome_step_is_logged_and_the_request_goes_on(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    client, backend, steps = served
    with caplog.at_level(logging.ERROR, logger="kroute.pipeline.steps"):
        status, headers, _ = await client.request("outcome.local", "/echo")
        assert status == 200
        assert (b"x-checked", b"yes") in [(n.lower(), v) for n, v in headers]
        await ended(steps["outcome"])
    assert steps["outcome"].told == [("outcome", 200), "end"]
    assert "failed on the outcome of a request" in caplog.text
    assert (await client.request("outcome.local", "/echo"))[0] == 200
    assert backend.hits == {"/echo": 2}

"""Users' own steps: Python functions registered by name, referenced from routes.

An application registers a function under a name and an HTTPRoute references it with an
ExtensionRef filter (`group: kroute.dev`, `kind: Filter`, `name: NAME`). A plain function edits
the request in place (`UpstreamRequest`) or returns the `Answer` to give instead; an `async def`
function may wait (an authorisation call) and is awaited in its place in the chain:

    filters = Filters()

    @filters.register("tenant")
    def tenant(request: UpstreamRequest) -> Answer | None:
        if request.get(b"x-tenant") is None:
            return Answer(403, "no tenant", body=b"forbidden\\n")
        return None

    router = Router(sources, filters=filters)

A route that names a filter not registered fails closed (500, and said in explain and the
admin API), as any reference that cannot be resolved does.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from kroute.pipeline.filters import Function
from kroute.pipeline.steps import AsyncStep, Step

F = TypeVar("F", bound=Callable[..., Any])


class Filters:
    """The filters an application registered, by name. Register them before the Router that
    uses them is created: routes are compiled with the filters known then."""

    def __init__(self) -> None:
        self._functions: dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable[[F], F]:
        """A decorator registering a function (plain or `async def`) under `name`."""

        def add(function: F) -> F:
            if name in self._functions:
                raise ValueError(f"a filter named {name!r} is registered already")
            self._functions[name] = function
            return function

        return add

    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self._functions))

    def step(self, name: str, field: str) -> Step | None:
        """The step that runs filter `name`, or None when no such filter is registered."""
        function = self._functions.get(name)
        if function is None:
            return None
        if inspect.iscoroutinefunction(function):
            return AsyncStep(field, check=function, name=name)
        return Function(field, name=name, function=function)


NO_FILTERS = Filters()

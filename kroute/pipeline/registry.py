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

A filter that takes configuration is registered as a *plugin*: a factory called once per
compile with the configuration (a Traefik Middleware's `plugin: {NAME: {...}}`, docs/
middlewares.md) that returns the function to run. It checks the configuration then, so a bad
one is reported at compile time naming the Middleware and the field, never at request time:

    @filters.plugin("tenant")
    def tenant(config: Mapping[str, Any]) -> Callable[[UpstreamRequest], Answer | None]:
        header = config.get("header", "x-tenant")
        if not isinstance(header, str):
            raise ValueError("header: a string")
        ...

A route that names a filter not registered fails closed (500, and said in explain and the
admin API), as any reference that cannot be resolved does.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from kroute.objects import FieldError
from kroute.pipeline.filters import Function
from kroute.pipeline.steps import AsyncStep, Step

F = TypeVar("F", bound=Callable[..., Any])
#: A plugin: its configuration -> the function to run (plain or `async def`). A configuration
#: it refuses raises ValueError, TypeError or KeyError, with a message saying what is wrong.
Plugin = Callable[[Mapping[str, Any]], Callable[..., Any]]


class Filters:
    """The filters an application registered, by name. Register them before the Router that
    uses them is created: routes are compiled with the filters known then."""

    def __init__(self) -> None:
        self._functions: dict[str, Callable[..., Any]] = {}
        self._plugins: dict[str, Plugin] = {}

    def register(self, name: str) -> Callable[[F], F]:
        """A decorator registering a function (plain or `async def`) under `name`."""

        def add(function: F) -> F:
            self._check_new(name)
            self._functions[name] = function
            return function

        return add

    def plugin(self, name: str) -> Callable[[F], F]:
        """A decorator registering a plugin factory under `name` (see the module docstring):
        `factory(config)` returns the function to run, or raises ValueError (TypeError,
        KeyError) for a configuration it refuses."""

        def add(factory: F) -> F:
            self._check_new(name)
            self._plugins[name] = factory
            return factory

        return add

    def _check_new(self, name: str) -> None:
        if name in self._functions or name in self._plugins:
            raise ValueError(f"a filter named {name!r} is registered already")

    def names(self) -> tuple[str, ...]:
        return tuple(sorted((*self._functions, *self._plugins)))

    def step(self, name: str, field: str) -> Step | None:
        """The step that runs filter `name` (a plugin gets an empty configuration), or None
        when no such filter is registered; FieldError when a plugin refuses it."""
        return self.configured(name, {}, field)

    def configured(self, name: str, config: Mapping[str, Any], field: str) -> Step | None:
        """The step that runs filter `name` with `config` (a plugin's, called now, with a
        copy), or None when no such filter is registered. FieldError (`field`) when the plugin
        refuses `config`, or when `config` is given to a filter that takes none."""
        factory = self._plugins.get(name)
        function = self._functions.get(name)
        if factory is not None:
            try:
                function = factory(copy.deepcopy(dict(config)))
            except (ValueError, TypeError, KeyError) as exc:
                raise FieldError(field, f"plugin {name!r} refused its configuration: "
                                 f"{exc}") from None  # fmt: skip
            if not callable(function):
                raise FieldError(field, f"plugin {name!r} returned {type(function).__name__}, "
                                 "not a function to run")  # fmt: skip
        elif function is not None and config:
            raise FieldError(field, f"filter {name!r} takes no configuration (register it with "
                             "Filters.plugin to receive one)")  # fmt: skip
        if function is None:
            return None
        if inspect.iscoroutinefunction(function):
            return AsyncStep(field, check=function, name=name)
        return Function(field, name=name, function=function)


NO_FILTERS = Filters()

"""plugin: the application's own Python middleware, by name (issue 19 item 4).

Traefik's `plugin: {NAME: {config...}}` loads a Yaegi or WASM plugin; kroute runs a step the
application registered under NAME instead (`Filters.plugin`, or `Filters.register` for one
without configuration), built at compile time with the configuration as a value. The factory
checks the configuration then: one it refuses makes the Middleware invalid, its error naming
the field (`spec.plugin.NAME`) and the factory's reason. A NAME the application did not
register fails closed: the routes using the Middleware answer 500 and say which plugin is
missing, as for any step kroute cannot run.
"""

from __future__ import annotations

from typing import Any

from kroute.objects import FieldError, as_map
from kroute.pipeline.filters import Refuse
from kroute.pipeline.registry import Filters
from kroute.pipeline.steps import Step


def plugin(spec: Any, field: str, filters: Filters) -> Step:
    """The step of `plugin: {NAME: {config}}` (exactly one NAME, as a Middleware has one
    type); a Refuse naming NAME when the application registered none by that name."""
    entries = as_map(spec, field)
    if len(entries) != 1:
        raise FieldError(field, f"names exactly one plugin, found {len(entries)}"
                         + (f" ({', '.join(map(str, entries))})" if entries else ""))  # fmt: skip
    [(name, config)] = entries.items()
    where = f"{field}.{name}"
    step = filters.configured(str(name), as_map(config, where), where)
    if step is None:
        known = ", ".join(filters.names()) or "none"
        return Refuse(where, reason=f"plugin {name!r} is not registered by the application "
                      f"(Filters.plugin; registered: {known})")  # fmt: skip
    return step

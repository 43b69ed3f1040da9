"""The Router's observers: who is told of each request and each table rebuild.

Why a container of its own rather than a list: an observer may want the cheap call per request
(`Observer.forwarded`: Metrics), the whole `RequestEvent` (`EventSink.requested`: access logs,
a user's structlog), or both. What each observer has is found once, when it is added, and kept
in tuples (`forwarding`, `rebuilding`, `listening`), so a front tests one attribute per request
and builds no event when nobody listens. It is a mutable sequence like the list it replaces
(`router.observers.append(metrics)`).
"""

from __future__ import annotations

from collections.abc import Callable, MutableSequence, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, cast, overload

if TYPE_CHECKING:
    from kroute.gateway.events import RequestEvent
    from kroute.gateway.router.decisions import Decision

#: What a front captured of a request as it ended, for a sink that makes its RequestEvent later
#: (`LaterSink`): `(status, seconds, retries, ...)`, the rest the front's own, and the function
#: that makes the event of them (`make(facts)`, in any thread). The request's headers are in
#: them only when some sink wants them (`Observers.headers`).
Facts = Sequence[Any]
Make = Callable[[Facts], "RequestEvent"]


class Observer(Protocol):
    """Told of every forwarded request and every table rebuild (metrics, logs)."""

    def forwarded(self, decision: Decision, status: int, seconds: float) -> None:
        """`status` is what the client is answered (an error's `status_hint` on failure)."""

    def rebuilt(self, seconds: float) -> None: ...


class EventSink(Protocol):
    """Told of every request once it ended, as a `RequestEvent` (access logs, users' sinks).
    An observer may be one, an `Observer`, or both: each method it has is called."""

    def requested(self, event: RequestEvent) -> None: ...


class RebuildObserver(Protocol):
    """Told of every table rebuild only (Metrics: the requests are counted by RequestCounts)."""

    def rebuilt(self, seconds: float) -> None: ...


class LaterSink(EventSink, Protocol):
    """An EventSink that can also take a request's facts and make its event later, off the
    serving loop (the access log's writer): FastGateway then builds no event per request
    for it, only a tuple (`kroute.gateway.fast.record`)."""

    #: Whether the events it makes must carry the request's headers (a front leaves them out
    #: of the facts when no sink does: they are lists it would keep alive).
    wants_headers: bool

    def requested_later(self, facts: Facts, make: Make) -> None: ...


Watcher: TypeAlias = "Observer | EventSink | RebuildObserver"


class Observers(MutableSequence[Watcher]):
    """The observers of a Router, and by what they want (module docstring)."""

    def __init__(self) -> None:
        self._all: list[Watcher] = []
        self.forwarding: tuple[Observer, ...] = ()
        self.rebuilding: tuple[RebuildObserver, ...] = ()
        self.listening: tuple[EventSink, ...] = ()
        #: Of `listening`, those that take facts to make the event later, and the others.
        self.later: tuple[LaterSink, ...] = ()
        self.now: tuple[EventSink, ...] = ()
        #: Whether a front's facts must carry the request's headers: a sink that makes its
        #: events later wants them, or one wants its events now (made of the facts at once).
        self.headers = False

    def _sort(self) -> None:
        def having(name: str) -> tuple[object, ...]:
            return tuple(o for o in self._all if callable(getattr(o, name, None)))

        self.forwarding = cast("tuple[Observer, ...]", having("forwarded"))
        self.rebuilding = cast("tuple[RebuildObserver, ...]", having("rebuilt"))
        self.listening = cast("tuple[EventSink, ...]", having("requested"))
        later = having("requested_later")
        self.later = cast("tuple[LaterSink, ...]", later)
        self.now = tuple(sink for sink in self.listening if sink not in later)
        self.headers = bool(self.now) or any(getattr(s, "wants_headers", True) for s in later)

    @overload
    def __getitem__(self, index: int) -> Watcher: ...

    @overload
    def __getitem__(self, index: slice) -> MutableSequence[Watcher]: ...

    def __getitem__(self, index: int | slice) -> Watcher | MutableSequence[Watcher]:
        return self._all[index]

    @overload
    def __setitem__(self, index: int, value: Watcher) -> None: ...

    @overload
    def __setitem__(self, index: slice, value: object) -> None: ...

    def __setitem__(self, index: int | slice, value: object) -> None:
        self._all[index] = value  # type: ignore[call-overload]
        self._sort()

    def __delitem__(self, index: int | slice) -> None:
        del self._all[index]
        self._sort()

    def __len__(self) -> int:
        return len(self._all)

    def insert(self, index: int, value: Watcher) -> None:
        self._all.insert(index, value)
        self._sort()

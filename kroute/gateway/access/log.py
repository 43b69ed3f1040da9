"""AccessLog: an observer of the Router that writes access log lines, off the hot path.

Why a thread and a bounded queue: formatting a line and writing it (a disk that stalls, a
stdout nobody reads) must never hold up serving. `requested` runs on the serving loop: it
applies the filters and queues the event, nothing more; a writer thread takes what is there
every `interval` seconds, formats it (`LogFormat.line`) and writes it in one call. FastGateway
does not even make the event on the serving loop: it hands `requested_later` the few values it
captured (`Facts`), and the writer makes the event, or, for a JSON line, writes it straight
from them (`kroute.gateway.fast.record.json_line_of`). When `buffer` requests wait, the next is
dropped and counted (`statistics`, and the `kroute_access_log_lines_total{outcome="dropped"}`
metric once `register`ed): under a burst the log loses lines, the gateway loses no time.

Why the queue is one flat list of values (each request's entry: what makes its line, its count,
how many values follow, then its facts or its event), not a queue of tuples: a tuple per
request that waits for the writer is an object the garbage collector counts, and enough of them
start collections that promote every request in flight to the older generations, whose full
collections walk the whole heap. Appending values to a list that exists allocates none. Each
entry goes in with one `extend`, which no other thread interleaves (the GIL), and the writer
takes the entries there are with one slice and deletes them with another.

Rotation (logrotate): the file is reopened by name when told (`reopen`, thread-safe; what
`reopen_on_signal` installs for SIGUSR1), so a renamed file is closed and a new one created.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any, TextIO

import attrs

from kroute.gateway.access.format import LogFormat
from kroute.gateway.events import RequestEvent
from kroute.gateway.router.observers import Facts, Make

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["AccessLog", "AccessLogStatistics"]

_log = logging.getLogger(__name__)


@attrs.frozen
class AccessLogStatistics:
    seen: int  # events the log was told of
    written: int
    filtered: int  # not kept by the filters
    dropped: int  # the queue was full
    failed: int  # lost to a write error


class AccessLog:
    """Access log lines for every request a Router's fronts serve (module docstring).

    `path`: a file (appended to, created if missing), or None / "-" for standard output.
    `buffer`: how many requests wait for the writer at most; `interval`: how often the writer
    takes what waits (10 ms: each batch holds the interpreter briefly, which keeps the tail
    latency of the requests served meanwhile low). Use as a context manager (or `start` /
    `close`) and add it to `router.observers`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        format: LogFormat = LogFormat(),
        buffer: int = 10_000,
        interval: float = 0.01,
    ) -> None:
        self.path = None if path is None or str(path) == "-" else os.fspath(path)
        self._format = format
        #: The events must carry the request's headers (`LaterSink.wants_headers`): a common
        #: line says the Referer and User-Agent, a JSON line those its modes keep.
        self.wants_headers = format.format == "common" or not format.headers.none
        self.buffer = buffer
        self.interval = interval
        #: The entries waiting, flat (module docstring): (make, count, n, *n values), where
        #: make is None for an event (one value) and the facts' `Make` for facts.
        self._queue: list[Any] = []
        #: Entries queued by the serving side, taken by the writer (each counter written by
        #: its own side only: what waits is their difference).
        self._queued = self._taken = 0
        self._seen = self._written = self._filtered = self._dropped = self._failed = 0
        self._out: TextIO | None = None
        self._reopen = False
        self._stop = threading.Event()
        self._idle = threading.Condition()
        self._writing = False
        self._thread: threading.Thread | None = None

    # -- on the serving loop ------------------------------------------------------------

    @property
    def format(self) -> LogFormat:
        """How the lines read (fixed: what the serving side captures depends on it)."""
        return self._format

    def requested(self, event: RequestEvent) -> None:
        """An observer's hook (`EventSink`): keep the event for the writer, or count it."""
        self._seen += 1
        if not self._format.filters.keeps(event):
            self._filtered += 1
        elif self._queued - self._taken >= self.buffer:
            self._dropped += 1
        else:
            self._queued += 1
            self._queue.extend((None, self._seen, 1, event))

    def requested_later(self, facts: Facts, make: Make) -> None:
        """`requested` for a front's `facts` (`LaterSink`): the writer makes the event."""
        self._seen += 1
        filters = self._format.filters
        if not filters.none and not filters.admits(facts[0], facts[2], facts[1]):
            self._filtered += 1
        elif self._queued - self._taken >= self.buffer:
            self._dropped += 1
        else:
            self._queued += 1
            self._queue.extend((make, self._seen, len(facts), *facts))

    # -- lifetime -------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._open()
            self._thread = threading.Thread(target=self._run, name="kroute-access-log",
                                            daemon=True)  # fmt: skip
            self._thread.start()

    def close(self) -> None:
        """Write what is queued, then stop the writer and close the file."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        if self._out is not None and self.path is not None:
            self._out.close()
        self._out = None

    def __enter__(self) -> AccessLog:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def reopen(self) -> None:
        """Reopen the file by its name before the next write (after logrotate renamed it)."""
        self._reopen = True

    def reopen_on_signal(self, signum: int = signal.SIGUSR1) -> None:
        """Reopen on `signum` (SIGUSR1, as Traefik). Call from the main thread."""

        def handler(number: int, frame: FrameType | None) -> None:
            self.reopen()

        signal.signal(signum, handler)

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until every queued event is written (blocking: from a worker thread, or
        tests); False when `timeout` ran out first."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._queue and not self._writing, timeout)

    def statistics(self) -> AccessLogStatistics:
        return AccessLogStatistics(self._seen, self._written, self._filtered, self._dropped,
                                   self._failed)  # fmt: skip

    def register(self, registry: CollectorRegistry) -> None:
        """Expose the counts as `kroute_access_log_lines_total{outcome}` (prometheus-client,
        e.g. `Metrics(router).registry`)."""
        registry.register(_Collector(self))

    # -- the writer thread ----------------------------------------------------------------

    def _open(self) -> None:
        if self.path is None:
            self._out = sys.stdout
            return
        if self._out is not None:
            self._out.close()
        self._out = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (kept open)

    def _run(self) -> None:
        queue = self._queue
        while True:
            stopping = self._stop.is_set()
            with self._idle:  # (taken under the lock `drain` reads them with)
                batch = queue[:]  # (whole entries: each went in with one extend)
                del queue[: len(batch)]
                self._writing = bool(batch)
            if batch:
                self._write(self._lines(batch))
            with self._idle:
                self._writing = False
                self._idle.notify_all()
            if stopping:
                return
            if not queue:
                self._stop.wait(self.interval)

    def _lines(self, batch: list[Any]) -> list[str]:
        """The lines of a batch of entries: a front's facts whose `make` has a `json_line`
        (FastGateway's) are written straight as JSON, without the event, the others of their
        event."""
        line = self._format.line
        headers = self._format.headers if self._format.format == "json" else None
        lines: list[str] = []
        at, end = 0, len(batch)
        maker, straight = None, None  # (the last make seen, and its json_line if it has one)
        while at < end:
            make, count, size = batch[at : at + 3]
            at += 3 + size
            self._taken += 1  # (taken before its line is made: a line that fails is not waiting)
            if make is None:
                lines.append(line(batch[at - 1], count))
                continue
            if make is not maker:
                maker = make
                straight = getattr(make, "json_line", None) if headers is not None else None
            if straight is not None:
                lines.append(straight(batch[at - size : at], headers))
            else:
                lines.append(line(make(batch[at - size : at]), count))
        return lines

    def _write(self, lines: list[str]) -> None:
        try:
            if self._reopen:
                self._reopen = False
                self._open()
            assert self._out is not None
            self._out.write("\n".join(lines) + "\n")
            self._out.flush()
        except OSError as exc:
            if not self._failed:
                _log.warning("access log %s: %s (lines are lost until it works)",
                             self.path or "stdout", exc)  # fmt: skip
            self._failed += len(lines)
            return
        self._written += len(lines)


class _Collector:
    def __init__(self, log: AccessLog) -> None:
        self.log = log

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily

        stats = self.log.statistics()
        lines = CounterMetricFamily("kroute_access_log_lines", "Access log lines, by what "
                                    "became of them.", labels=["outcome"])  # fmt: skip
        for outcome in ("written", "filtered", "dropped", "failed"):
            lines.add_metric([outcome], getattr(stats, outcome))
        yield lines

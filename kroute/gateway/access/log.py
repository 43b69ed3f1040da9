"""AccessLog: an observer of the Router that writes access log lines, off the hot path.

Why a thread and a bounded queue: formatting a line and writing it (a disk that stalls, a
stdout nobody reads) must never hold up serving. `requested` runs on the serving loop: it
applies the filters and appends the event to a bounded deque, nothing more; a writer thread
takes what is there every `interval` seconds, formats it (`LogFormat.line`) and writes it in
one call. FastGateway does not even make the event on the serving loop: it hands
`requested_later` the few values it captured (`Facts`), and the writer makes the event, or,
for a JSON line, writes it straight from them (`kroute.gateway.fast.record.json_line_of`).
When the queue is full the event is dropped and counted (`statistics`, and the
`kroute_access_log_lines_total{outcome="dropped"}` metric once `register`ed): under a burst
the log loses lines, the gateway loses no time.

Rotation (logrotate): the file is reopened by name when told (`reopen`, thread-safe; what
`reopen_on_signal` installs for SIGUSR1), so a renamed file is closed and a new one created.
"""

from __future__ import annotations

import collections
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
    `buffer`: how many events wait for the writer at most. Use as a context manager (or
    `start` / `close`) and add it to `router.observers`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        format: LogFormat = LogFormat(),
        buffer: int = 10_000,
        interval: float = 0.05,
    ) -> None:
        self.path = None if path is None or str(path) == "-" else os.fspath(path)
        self.format = format
        self.buffer = buffer
        self.interval = interval
        #: (an event, or facts and what makes their event; the request's count).
        self._queue: collections.deque[tuple[RequestEvent | Facts, Make | None, int]] = (
            collections.deque()
        )
        self._seen = self._written = self._filtered = self._dropped = self._failed = 0
        self._out: TextIO | None = None
        self._reopen = False
        self._stop = threading.Event()
        self._idle = threading.Condition()
        self._writing = False
        self._thread: threading.Thread | None = None

    # -- on the serving loop ------------------------------------------------------------

    def requested(self, event: RequestEvent) -> None:
        """An observer's hook (`EventSink`): keep the event for the writer, or count it."""
        self._seen += 1
        if not self.format.filters.keeps(event):
            self._filtered += 1
        elif len(self._queue) >= self.buffer:
            self._dropped += 1
        else:
            self._queue.append((event, None, self._seen))

    def requested_later(self, facts: Facts, make: Make) -> None:
        """`requested` for a front's `facts` (`LaterSink`): the writer makes the event."""
        self._seen += 1
        filters = self.format.filters
        if not filters.none and not filters.admits(facts[0], facts[2], facts[1]):
            self._filtered += 1
        elif len(self._queue) >= self.buffer:
            self._dropped += 1
        else:
            self._queue.append((facts, make, self._seen))

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
                batch = [queue.popleft() for _ in range(len(queue))]
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

    def _lines(self, batch: list[tuple[RequestEvent | Facts, Make | None, int]]) -> list[str]:
        """The lines of a batch: a front's facts whose `make` has a `json_line` (FastGateway's)
        are written straight as JSON, without the event, the others of their event."""
        line = self.format.line
        headers = self.format.headers if self.format.format == "json" else None
        lines = []
        for event, make, count in batch:
            if make is None:
                lines.append(line(event, count))  # type: ignore[arg-type]
            elif headers is not None and (straight := getattr(make, "json_line", None)):
                lines.append(straight(event, headers))
            else:
                lines.append(line(make(event), count))  # type: ignore[arg-type]
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

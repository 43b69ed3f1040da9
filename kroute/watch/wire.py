"""The bytes of a watch response -> events. Pure: no socket, no clock (h11's habit).

A watch response is newline-delimited JSON, one `{"type": ..., "object": ...}` per line, that the
network may split anywhere, even inside a multi-byte character. `WatchDecoder.feed` takes
whatever arrived and returns the complete events; the remainder waits for the next read.

Types (Kubernetes "API Concepts", efficient detection of changes): ADDED, MODIFIED, DELETED,
BOOKMARK, and ERROR, whose object is a `Status` (410 Gone among them: the resume
resourceVersion is too old). Anything else, or a line that is not a JSON object, raises
WatchProtocolError naming what was wrong. An over-long line is refused before it is buffered
whole, so a broken server cannot exhaust memory.
"""

from __future__ import annotations

import json
from typing import Any

import attrs

from kroute.errors import KrouteError

EVENT_TYPES = frozenset({"ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"})

#: The longest line accepted (one object in one event); the API server's own limit on an
#: object is about 1.5 MiB (etcd's request limit), so this leaves room.
MAX_LINE = 16 * 1024 * 1024


class WatchProtocolError(KrouteError):
    """The server sent something that is not a watch event."""

    status_hint = 502


@attrs.frozen
class Status:
    """A Kubernetes `Status` (in ERROR events and error responses)."""

    code: int
    reason: str
    message: str

    @classmethod
    def from_object(cls, obj: Any) -> Status:
        if not isinstance(obj, dict):
            return cls(0, "", repr(obj))
        code = obj.get("code")
        return cls(
            code if isinstance(code, int) and not isinstance(code, bool) else 0,
            str(obj.get("reason") or ""),
            str(obj.get("message") or ""),
        )

    @property
    def expired(self) -> bool:
        """410 Gone / Expired: the resourceVersion is too old; re-list."""
        return self.code == 410 or self.reason in ("Expired", "Gone")


@attrs.frozen
class WatchEvent:
    """One event. `object` is the decoded object (for ERROR, see `status`)."""

    type: str
    object: dict[str, Any]

    @property
    def status(self) -> Status:
        return Status.from_object(self.object)

    @property
    def resource_version(self) -> str | None:
        meta = self.object.get("metadata")
        rv = meta.get("resourceVersion") if isinstance(meta, dict) else None
        return rv if isinstance(rv, str) and rv else None


def parse_event(line: bytes) -> WatchEvent:
    """One line of a watch response -> WatchEvent; WatchProtocolError when it is not one."""
    try:
        data = json.loads(line)
    except (ValueError, RecursionError) as exc:
        raise WatchProtocolError(f"watch line is not JSON: {exc}: {line[:200]!r}") from None
    if not isinstance(data, dict):
        raise WatchProtocolError(f"watch line is not an object: {line[:200]!r}")
    kind, obj = data.get("type"), data.get("object")
    if kind not in EVENT_TYPES:
        raise WatchProtocolError(f"unknown watch event type {kind!r}")
    if not isinstance(obj, dict):
        raise WatchProtocolError(f"{kind} event without an object")
    return WatchEvent(kind, obj)


class WatchDecoder:
    """Incremental decoder: feed bytes as they arrive, get complete events back."""

    def __init__(self, *, max_line: int = MAX_LINE) -> None:
        self._buffer = bytearray()
        self._max_line = max_line

    def feed(self, data: bytes) -> list[WatchEvent]:
        """The events completed by `data` (possibly none)."""
        self._buffer += data
        events = []
        start = 0
        while True:
            end = self._buffer.find(b"\n", start)
            if end == -1:
                break
            line = bytes(self._buffer[start:end]).strip()
            start = end + 1
            if line:
                events.append(parse_event(line))
        del self._buffer[:start]
        if len(self._buffer) > self._max_line:
            raise WatchProtocolError(f"watch line longer than {self._max_line} bytes")
        return events

    def close(self) -> list[WatchEvent]:
        """The stream ended: a final line without a newline still counts."""
        line = bytes(self._buffer).strip()
        self._buffer.clear()
        return [parse_event(line)] if line else []

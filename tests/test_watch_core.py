"""The pure watch core: wire decoding, store semantics (SEMANTICS.md section 4)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kroute.watch.store import Store
from kroute.watch.wire import WatchDecoder, WatchEvent, WatchProtocolError

RECORDED = (Path(__file__).parent / "data" / "watch-ingresses.jsonl").read_bytes()
EXPECTED = [("ADDED", "1201"), ("MODIFIED", "1207"), ("BOOKMARK", "1290"), ("DELETED", "1301"),
            ("ERROR", None)]  # fmt: skip


def summary(events: list[WatchEvent]) -> list[tuple[str, str | None]]:
    return [(e.type, e.resource_version) for e in events]


def test_recorded_stream_fed_whole() -> None:
    events = WatchDecoder().feed(RECORDED)
    assert summary(events) == EXPECTED
    assert events[0].object["metadata"]["annotations"]["note"] == "café ☕"
    status = events[-1].status
    assert (status.code, status.reason, status.expired) == (410, "Expired", True)


def test_recorded_stream_fed_byte_by_byte() -> None:
    decoder = WatchDecoder()
    events = []
    for i in range(len(RECORDED)):
        events += decoder.feed(RECORDED[i : i + 1])  # splits inside "é" and "☕" too
    assert summary(events) == EXPECTED


@settings(max_examples=200)
@given(st.lists(st.integers(0, len(RECORDED)), max_size=30))
def test_any_split_gives_the_same_events(cuts: list[int]) -> None:
    decoder = WatchDecoder()
    events = []
    points = [0, *sorted(cuts), len(RECORDED)]
    for a, b in itertools.pairwise(points):
        events += decoder.feed(RECORDED[a:b])
    events += decoder.close()
    assert summary(events) == EXPECTED


def test_last_line_without_newline_counts_at_close() -> None:
    decoder = WatchDecoder()
    assert decoder.feed(RECORDED.rstrip(b"\n")) != []
    assert summary(decoder.close()) == [("ERROR", None)]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"not json\n", "not JSON"),
        (b"[1, 2]\n", "not an object"),
        (b'{"type": "RENAMED", "object": {}}\n', "unknown watch event type"),
        (b'{"type": "ADDED"}\n', "ADDED event without an object"),
    ],
)
def test_malformed_lines_are_protocol_errors(line: bytes, message: str) -> None:
    with pytest.raises(WatchProtocolError, match=message):
        WatchDecoder().feed(line)


def test_overlong_line_is_refused_before_it_is_buffered() -> None:
    decoder = WatchDecoder(max_line=1000)
    with pytest.raises(WatchProtocolError, match="longer than 1000 bytes"):
        decoder.feed(b'{"type": "ADDED", "object": {"x": "' + b"a" * 2000)


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_hostile_bytes_raise_only_protocol_errors(data: bytes) -> None:
    decoder = WatchDecoder()
    try:
        decoder.feed(data)
        decoder.close()
    except WatchProtocolError:
        pass


def obj(name: str, rv: str, **spec: object) -> dict[str, object]:
    return {"kind": "Service", "apiVersion": "v1",
            "metadata": {"name": name, "namespace": "ns", "resourceVersion": rv}, "spec": spec}  # fmt: skip


def event(kind: str, o: Mapping[str, object]) -> WatchEvent:
    return WatchEvent(kind, json.loads(json.dumps(o)))


def test_replace_diffs_and_resumes_from_the_list_resource_version() -> None:
    store = Store("Service")
    assert not store.synced
    changes = store.replace([obj("a", "5"), obj("b", "9")], "12")
    assert [(c.type, c.key) for c in changes] == [("ADDED", ("ns", "a")), ("ADDED", ("ns", "b"))]
    assert store.resource_version == "12"  # the list's RV, not the newest item's (9)
    assert store.synced
    # A re-list after 410: b vanished while we were away, a changed, c is new.
    changes = store.replace([obj("a", "20", x=1), obj("c", "21")], "30")
    assert sorted((c.type, c.key[1]) for c in changes) == [
        ("ADDED", "c"), ("DELETED", "b"), ("MODIFIED", "a")]  # fmt: skip
    assert store.resource_version == "30"


def test_events_advance_the_resume_version_and_emit_only_real_changes() -> None:
    store = Store("Service")
    store.replace([obj("a", "5")], "10")
    assert store.apply(event("MODIFIED", obj("a", "5"))) == []  # same object: no change
    [change] = store.apply(event("MODIFIED", obj("a", "11", x=2)))
    assert (change.type, change.old["metadata"]["resourceVersion"]) == ("MODIFIED", "5")  # type: ignore[index]
    assert (
        store.apply(event("BOOKMARK", {"kind": "Service", "metadata": {"resourceVersion": "15"}}))
        == []
    )
    assert store.resource_version == "15"
    [gone] = store.apply(event("DELETED", obj("a", "16")))
    assert gone.type == "DELETED"
    assert store.apply(event("DELETED", obj("zz", "17"))) == []  # unknown: nothing
    assert store.resource_version == "17"
    assert len(store) == 0


def test_snapshots_are_immutable_and_unaffected_by_later_changes() -> None:
    store = Store("Service")
    store.replace([obj("a", "1")], "1")
    before = store.snapshot()
    store.apply(event("ADDED", obj("b", "2")))
    assert set(before) == {("ns", "a")}
    assert set(store.snapshot()) == {("ns", "a"), ("ns", "b")}
    with pytest.raises(TypeError):
        before[("ns", "c")] = {}  # type: ignore[index]
    assert store.snapshot() is store.snapshot()  # no copy without a change


def test_streaming_list_initial_events_do_not_advance_the_resume_version() -> None:
    # API Concepts, "Streaming lists": sendInitialEvents=true; the bookmark annotated
    # k8s.io/initial-events-end ends the initial state and carries the RV to resume from.
    store = Store("Service")
    store.replace([obj("old", "1")], "3")
    store.start_initial_events()
    assert store.apply(event("ADDED", obj("a", "50"))) == []
    assert store.apply(event("ADDED", obj("b", "40"))) == []
    assert store.resource_version == "3"
    end = {"kind": "Service", "metadata": {"resourceVersion": "60",
           "annotations": {"k8s.io/initial-events-end": "true"}}}  # fmt: skip
    changes = store.apply(event("BOOKMARK", end))
    assert sorted((c.type, c.key[1]) for c in changes) == [
        ("ADDED", "a"),
        ("ADDED", "b"),
        ("DELETED", "old"),
    ]
    assert store.resource_version == "60"


def test_projection_drops_managed_fields_and_last_applied() -> None:
    store = Store("Service")
    heavy = obj("a", "1")
    heavy["metadata"]["managedFields"] = [{"manager": "kubectl"}] * 50  # type: ignore[index]
    heavy["metadata"]["annotations"] = {  # type: ignore[index]
        "kubectl.kubernetes.io/last-applied-configuration": "{...}",
        "keep": "me",
    }
    store.replace([heavy], "1")
    kept = store.get(("ns", "a"))
    assert kept is not None
    assert "managedFields" not in kept["metadata"]
    assert kept["metadata"]["annotations"] == {"keep": "me"}


def test_list_items_get_the_kind_they_were_listed_as() -> None:
    # A real API server leaves kind and apiVersion off list items (only the list says
    # "ServiceList", "v1"); watch events carry both. The store stamps them in one place, so an
    # object is the same value whichever way it came, and a re-list changes nothing that did
    # not change (it used to replace every object by an untyped copy: routing went empty).
    store = Store("Service", api_version="v1")
    bare = {k: v for k, v in obj("a", "5").items() if k not in ("kind", "apiVersion")}
    store.replace([bare], "10")
    kept = store.get(("ns", "a"))
    assert kept is not None
    assert (kept["kind"], kept["apiVersion"]) == ("Service", "v1")
    assert store.apply(event("MODIFIED", obj("a", "5"))) == []  # as a watch event brings it
    assert store.replace([bare], "12") == []
    store.start_initial_events()  # a streaming list's events are stamped alike
    store.apply(event("ADDED", bare))
    end = {"metadata": {"resourceVersion": "13",
                        "annotations": {"k8s.io/initial-events-end": "true"}}}  # fmt: skip
    assert store.apply(event("BOOKMARK", end)) == []

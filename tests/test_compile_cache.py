"""CompileCache: unchanged objects are not compiled again, and the result is always exactly what
a compile without the cache gives (hypothesis over random edits)."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from kroute.rules.compile import CompileCache, compile_objects
from kroute.watch.kinds import INGRESS
from kroute.watch.store import Store
from tests.builders import gateway, httproute, ingress, ingressroute, to


def objects() -> list[dict[str, Any]]:
    return [
        ingress("a", [("a.test", [("/", "Prefix", "svc-a")])]),
        ingress("b", [("b.test", [("/v1", "Prefix", "svc-b")])]),
        ingress("bad", [("bad.test", [("/", "Nonsense", "svc-a")])]),
        gateway(),
        httproute("r", [{"backendRefs": [to("svc-r")]}], hostnames=["r.test"]),
        ingressroute("t", [{"match": "Host(`t.test`)", "services": [{"name": "svc-t", "port": 80}]}]),
        ingressroute("broken", [{"match": "Host(`x", "services": [{"name": "svc-t", "port": 80}]}]),
    ]  # fmt: skip


def summary(result: Any) -> tuple[Any, ...]:
    return (
        [(r.name, r.precedence, r.backends) for r in result.table.routes],
        [str(e) for e in result.errors],
        list(result.notes),
    )


def test_unchanged_objects_are_reused_and_changed_ones_compiled() -> None:
    items = objects()
    cache = CompileCache()
    first = compile_objects(items, cache=cache)
    assert cache.misses == 6  # Ingresses, HTTPRoutes and IngressRoutes are cached
    assert len(first.errors) == 2  # errors are remembered like routes
    second = compile_objects(items, cache=cache)
    assert cache.hits == 6
    assert cache.misses == 6
    assert all(a is b for a, b in zip(first.table.routes, second.table.routes, strict=True))
    assert summary(second) == summary(first)

    changed = copy.deepcopy(items[1])
    changed["spec"]["rules"][0]["host"] = "b2.test"
    items[1] = changed
    third = compile_objects(items, cache=cache)
    assert cache.misses == 7  # only the changed Ingress
    assert summary(third) == summary(compile_objects(items))

    items[3] = gateway(listeners=[{"name": "http", "protocol": "HTTP", "port": 80,
                                   "hostname": "*.test"}])  # fmt: skip
    fourth = compile_objects(items, cache=cache)
    assert cache.misses == 8  # the Gateway changed: its HTTPRoute is compiled again
    assert summary(fourth) == summary(compile_objects(items))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.sampled_from(["host", "path", "drop", "same"])),
                max_size=12))  # fmt: skip
def test_cached_compiles_equal_fresh_ones(edits: list[tuple[int, str]]) -> None:
    items = objects()
    cache = CompileCache()
    compile_objects(items, cache=cache)
    for index, edit in edits:
        if index >= len(items):
            continue
        obj = copy.deepcopy(items[index])
        if edit == "drop":
            del items[index]
            continue
        if edit == "same":
            items[index] = obj  # equal content, a new dict: compiled again, same result
        elif obj["kind"] == "Ingress":
            rule = obj["spec"]["rules"][0]
            if edit == "host":
                rule["host"] = f"h{len(edits)}.test"
            else:
                rule["http"]["paths"][0]["path"] = "/p"
            items[index] = obj
        else:
            obj["metadata"]["name"] += "x"
            items[index] = obj
        assert summary(compile_objects(items, cache=cache)) == summary(compile_objects(items))


def test_stores_keep_the_dict_of_an_unchanged_object_through_a_relist() -> None:
    store = Store(INGRESS.kind)
    a, b = objects()[:2]
    store.replace([a, b], "1")
    before = store.snapshot()
    changed = copy.deepcopy(b)
    changed["spec"]["rules"][0]["host"] = "new.test"
    store.replace([copy.deepcopy(a), changed], "2")
    after = store.snapshot()
    assert after[("default", "a")] is before[("default", "a")]
    assert after[("default", "b")] is not before[("default", "b")]

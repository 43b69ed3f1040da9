"""Manifest loading, and hostile input to every parser: only kroute's own errors come out."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kroute
from kroute.rules.conditions import to_dnf
from tests.builders import gateway, httproute, ingress, ingressroute, to


def names(manifests: list[kroute.Manifest]) -> list[str]:
    return [m.obj["metadata"]["name"] for m in manifests]


def test_yaml_stream_json_object_list_and_kind_list(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        "kind: A\nmetadata: {name: a1}\n---\n---\nkind: A\nmetadata: {name: a2}\n"
    )
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.json").write_text(json.dumps({"kind": "B", "metadata": {"name": "b"}}))
    (tmp_path / "sub" / "c.json").write_text(json.dumps([{"kind": "C", "metadata": {"name": "c"}}]))
    (tmp_path / "sub" / "d.yml").write_text(
        "apiVersion: v1\nkind: List\nitems:\n- {kind: D, metadata: {name: d1}}\n- {kind: D, metadata: {name: d2}}\n"
    )
    (tmp_path / "notes.txt").write_text("ignored: not a manifest suffix")
    loaded = kroute.load_paths([tmp_path])
    assert names(loaded) == ["a1", "a2", "b", "c", "d1", "d2"]
    assert loaded[0].origin.endswith("a.yaml#0")
    assert loaded[1].origin.endswith("a.yaml#2")
    assert loaded[2].origin.endswith("b.json")


def test_unreadable_input_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: [unclosed\n")
    with pytest.raises(kroute.ManifestError) as info:
        kroute.load_paths([bad])
    assert info.value.source == str(bad)
    assert "not valid YAML or JSON" in str(info.value)
    with pytest.raises(kroute.ManifestError, match="no such file or directory"):
        kroute.load_paths([tmp_path / "missing.yaml"])
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just a string\n")
    with pytest.raises(kroute.ManifestError, match="expected an object or a list"):
        kroute.load_paths([scalar])
    binary = tmp_path / "bin.json"
    binary.write_bytes(b"\xff\xfe{")
    with pytest.raises(kroute.ManifestError, match="cannot read"):
        kroute.load_paths([binary])


def test_unknown_kinds_are_ignored() -> None:
    result = kroute.compile_objects(
        kroute.load_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: b}\n")
    )
    assert len(result.table) == 0
    assert not result.errors


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=200))
def test_loader_raises_only_manifest_errors(text: str) -> None:
    try:
        loaded = kroute.load_text(text, "fuzz.yaml")
    except kroute.ManifestError:
        return
    kroute.compile_objects(loaded)  # and compiling whatever came out never raises


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)

VALID = [
    ingress("i", [("a.com", [("/", "Prefix", "s")])], default="d"),
    gateway(listeners=[{"name": "l", "protocol": "HTTP", "port": 80, "hostname": "*.a.com",
                        "allowedRoutes": {"namespaces": {"from": "Selector", "selector": {}}}}]),
    httproute("h", [{"matches": [{"path": {"type": "Exact", "value": "/x"}, "method": "GET",
                                  "headers": [{"name": "a", "value": "b"}],
                                  "queryParams": [{"name": "q", "value": "1"}]}],
                     "backendRefs": [to("s", weight=2)]}], hostnames=["x.a.com"]),
    ingressroute("r", [{"match": "Host(`a.com`) || PathPrefix(`/p`)", "priority": 3,
                        "services": [{"name": "s", "port": 80}]}]),
]  # fmt: skip


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            out.extend(_paths(item, (*prefix, key)))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            out.extend(_paths(item, (*prefix, i)))
    return out


@st.composite
def mutated_objects(draw: st.DrawFn) -> list[dict[str, Any]]:
    objects = copy.deepcopy(VALID)
    for _ in range(draw(st.integers(1, 4))):
        target = draw(st.sampled_from(objects))
        path = draw(st.sampled_from(_paths(target)[1:]))
        parent: Any = target
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = draw(json_values)
    return objects


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_objects())
def test_compiling_mutated_objects_never_raises(objects: list[dict[str, Any]]) -> None:
    result = kroute.compile_objects(objects)
    for error in result.errors:
        assert error.obj
        assert error.field is not None
        assert error.reason
    request = kroute.RequestHead.build("GET", "x.a.com", "/x?q=1", headers={"a": "b"})
    assert result.table.match(request) is result.table.scan(request)


rule_fragments = st.sampled_from(
    ["Host(`a`)", "Path(`/x`)", "&&", "||", "!", "(", ")", "`", '"', ",", "Header(", "`k`",
     "PathPrefix(", "ClientIP(`1.2.3.4/8`)", "Query(`q`)", " ", "\\", "\\u12", "Method(`GET`)"]
)  # fmt: skip


@settings(max_examples=500)
@given(st.one_of(st.text(max_size=60), st.lists(rule_fragments, max_size=12).map("".join)))
def test_rule_parser_raises_only_rule_syntax_errors(rule: str) -> None:
    try:
        kroute.rule_condition(rule)
    except kroute.RuleSyntaxError as exc:
        position = exc.position
    else:
        return
    assert 0 <= position <= len(rule)


atoms = st.sampled_from(
    ["Host(`a`)", "Host(`b`)", "PathPrefix(`/x`)", "Path(`/y`)", "Method(`POST`)",
     "Header(`h`, `1`)", "Query(`q`, `1`)"]
)  # fmt: skip
rules = st.recursive(
    atoms,
    lambda inner: st.one_of(
        st.tuples(inner, inner).map(lambda p: f"({p[0]} && {p[1]})"),
        st.tuples(inner, inner).map(lambda p: f"({p[0]} || {p[1]})"),
        inner.map(lambda r: f"!{r}"),
    ),
    max_leaves=10,
)
heads = st.builds(
    kroute.RequestHead.build,
    st.sampled_from(["GET", "POST"]),
    st.sampled_from(["a", "b", "c"]),
    st.sampled_from(["/x", "/x/z", "/y", "/?q=1", "/x?q=1"]),
    headers=st.sampled_from([{}, {"h": "1"}, {"h": "2"}]),
)


@settings(max_examples=300)
@given(rules, st.lists(heads, min_size=1, max_size=10))
def test_alternatives_mean_what_the_rule_means(rule: str, reqs: list[kroute.RequestHead]) -> None:
    condition = kroute.rule_condition(rule)
    alternatives = to_dnf(condition)
    for request in reqs:
        expected = condition.matches(request)
        assert any(all(c.matches(request) for c in alt) for alt in alternatives) is expected

"""Manifest files -> objects: YAML (multi-document) or JSON, from files or directory trees.

What `kubectl apply -f` accepts, as far as routing needs it: a YAML stream of documents, a JSON
object, a JSON list, or a `kind: List` with `items`, in files or in directories read recursively
(`*.yaml`, `*.yml`, `*.json`, in sorted order). A file that cannot be read or parsed raises
ManifestError naming it; a document that is not an object is reported the same way.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

from kroute.errors import ManifestError
from kroute.objects import Manifest

SUFFIXES = (".yaml", ".yml", ".json")

_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _flatten(doc: Any, source: str) -> Iterator[dict[str, Any]]:
    if doc is None:
        return
    if isinstance(doc, list):
        for item in doc:
            yield from _flatten(item, source)
        return
    if not isinstance(doc, dict):
        raise ManifestError(source, f"expected an object or a list, got {type(doc).__name__}")
    if doc.get("kind") == "List" or (
        isinstance(doc.get("kind"), str) and doc["kind"].endswith("List") and "items" in doc
    ):
        items = doc.get("items")
        if not isinstance(items, list):
            raise ManifestError(source, "a List has no 'items' list")
        for item in items:
            yield from _flatten(item, source)
        return
    yield doc


def load_text(text: str, source: str = "<text>") -> list[Manifest]:
    """The objects in one document text; JSON when it starts with `{` or `[`, else YAML."""
    stripped = text.lstrip()
    docs: list[Any]
    try:
        if stripped.startswith(("{", "[")):
            docs = [json.loads(text)]
        else:
            docs = list(yaml.load_all(text, Loader=_Loader))
    except (ValueError, yaml.YAMLError, RecursionError) as exc:
        reason = str(exc).replace("\n", " ")
        raise ManifestError(source, f"not valid YAML or JSON: {reason}") from None
    out = []
    for i, doc in enumerate(docs):
        where = f"{source}#{i}" if len(docs) > 1 else source
        for obj in _flatten(doc, where):
            out.append(Manifest(obj, where))
    return out


def load_paths(paths: Iterable[str | os.PathLike[str]]) -> list[Manifest]:
    """The objects in files and directory trees, in a stable order (directories sorted)."""
    out: list[Manifest] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files = sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES
            )
        elif path.exists():
            files = [path]
        else:
            raise ManifestError(str(path), "no such file or directory")
        for file in files:
            try:
                text = file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ManifestError(str(file), f"cannot read: {exc}") from None
            out.extend(load_text(text, str(file)))
    return out

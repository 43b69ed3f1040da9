"""Conditions, and the merge of what kroute wants into the status an object has (pure).

Gateway API v1 `gateway_types.go`, GatewayStatus.Conditions, "Notes for implementors": merge
into conditions of the same type, never remove or reorder conditions kroute is not responsible
for, set `observedGeneration` to the object's `metadata.generation`, and leave a condition whose
observedGeneration is greater than the one kroute knows (its copy is stale). metav1.Condition:
`lastTransitionTime` is when the status last changed, so it is kept while the status stays.
RouteStatus.Parents: only the entries of kroute's controllerName are kroute's; Ingress
`status.loadBalancer` of a served Ingress is the serving controller's.
"""

from __future__ import annotations

import copy
import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from kroute.rules.listeners import GROUP
from kroute.status.values import CONTROLLER_NAME

Status = dict[str, Any]


def condition(kind: str, ok: bool, reason: str, message: str, generation: int | None) -> Status:
    """A metav1.Condition without its lastTransitionTime (the merge sets it)."""
    out: Status = {"type": kind, "status": "True" if ok else "False", "reason": reason,
                   "message": message}  # fmt: skip
    if generation is not None:
        out["observedGeneration"] = generation
    return out


def timestamp(now: datetime.datetime) -> str:
    """RFC 3339 in UTC, to the second (metav1.Time's wire form)."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_conditions(current: Any, desired: Sequence[Status], now: str) -> list[Status]:
    """`desired` merged into `current` (a list of conditions, or anything else when absent):
    conditions of other types stay where they are, ours take their type's place or are added."""
    old = [c for c in current if isinstance(c, dict)] if isinstance(current, list) else []
    wanted = {c["type"]: c for c in desired}
    out = []
    for cond in old:
        if cond.get("type") in wanted:
            out.append(_merge_one(cond, wanted.pop(cond["type"]), now))
        else:
            out.append(cond)
    return out + [_merge_one(None, c, now) for c in wanted.values()]


def _merge_one(old: Status | None, new: Status, now: str) -> Status:
    if old is not None and _generation(old) > _generation(new):
        return old  # written by a fresher copy of the object than ours
    same = old is not None and old.get("status") == new["status"]
    stamp = old.get("lastTransitionTime") if same and old is not None else None
    return {**new, "lastTransitionTime": stamp if isinstance(stamp, str) else now}


def _generation(cond: Mapping[str, Any]) -> int:
    value = cond.get("observedGeneration")
    return value if isinstance(value, int) else -1


def merge_status(
    kind: str, current: Mapping[str, Any] | None, desired: Mapping[str, Any],
    now: datetime.datetime, *, controller_name: str = CONTROLLER_NAME,
) -> Status | None:  # fmt: skip
    """The status to write for an object of `kind` that has `current` and should have
    `desired` (as `kroute.status` computes it), or None when writing would change nothing.

    Merging a result with the same `desired` again gives None (nothing to write), whatever
    `now` is: lastTransitionTime only moves when a condition's status does. An HTTPRoute's
    parents entries of `controller_name` are kroute's: those `desired` does not name go.
    """
    stamp = timestamp(now)
    base: Status = copy.deepcopy(dict(current)) if isinstance(current, Mapping) else {}
    out = copy.deepcopy(base)
    if kind == "Ingress":
        out["loadBalancer"] = copy.deepcopy(dict(desired["loadBalancer"]))
    elif kind == "HTTPRoute":
        out["parents"] = _merge_parents(base.get("parents"), desired["parents"], stamp,
                                        controller_name)  # fmt: skip
        if not out["parents"] and "parents" not in base:
            del out["parents"]  # (nothing of kroute's to add to a route it is no parent of)
    else:  # GatewayClass, Gateway
        out["conditions"] = merge_conditions(base.get("conditions"), desired["conditions"], stamp)
        if kind == "Gateway":
            out["addresses"] = copy.deepcopy(desired["addresses"])
            out["listeners"] = _merge_listeners(base.get("listeners"), desired["listeners"],
                                                stamp)  # fmt: skip
            if not out["addresses"]:
                del out["addresses"]
    return None if out == base else out


def _merge_listeners(current: Any, desired: Sequence[Status], now: str) -> list[Status]:
    """ListenerStatus is a map keyed by name: one entry per listener of the spec, in its
    order; conditions merged as on the Gateway."""
    old = {e.get("name"): e for e in current or [] if isinstance(e, dict)}
    out = []
    for entry in desired:
        was = old.get(entry["name"], {})
        conditions = merge_conditions(was.get("conditions"), entry["conditions"], now)
        out.append({**copy.deepcopy(entry), "conditions": conditions})
    return out


def parent_key(parent_ref: Mapping[str, Any]) -> tuple[Any, ...]:
    """A parentRef with the CRD's defaults (group, kind) applied, to compare entries."""
    return (parent_ref.get("group", GROUP), parent_ref.get("kind", "Gateway"),
            parent_ref.get("namespace") or "", parent_ref.get("name"),
            parent_ref.get("sectionName"), parent_ref.get("port"))  # fmt: skip


def _merge_parents(
    current: Any, desired: Sequence[Status], now: str, controller_name: str
) -> list[Status]:
    """Other controllers' entries as they are; ours replaced by `desired`, each keeping its
    conditions' transition times."""
    entries = [e for e in current or [] if isinstance(e, dict)]
    others = [e for e in entries if e.get("controllerName") != controller_name]
    mine = {parent_key(e.get("parentRef") or {}): e
            for e in entries if e.get("controllerName") == controller_name}  # fmt: skip
    merged = []
    for entry in desired:
        was = mine.get(parent_key(entry["parentRef"]), {})
        conditions = merge_conditions(was.get("conditions"), entry["conditions"], now)
        # The API server writes the CRD's defaults into the parentRef: its form is kept, or
        # every merge would differ from what was read and write again.
        parent_ref = was.get("parentRef") or copy.deepcopy(entry["parentRef"])
        merged.append({**copy.deepcopy(entry), "parentRef": parent_ref, "conditions": conditions})
    return others + merged


def withdraw_status(
    kind: str, current: Mapping[str, Any] | None, *, controller_name: str,
    addresses: Sequence[Mapping[str, str]] = (),
) -> Status | None:  # fmt: skip
    """The status to write once kroute stops serving an object: an Ingress loses the
    loadBalancer entries that are kroute's published `addresses` (`for_ingress()`), an HTTPRoute
    its parents entries of `controller_name`. None when there is nothing to remove (other kinds:
    the controller that serves them next owns their status)."""
    if not isinstance(current, Mapping):
        return None
    out: Status = copy.deepcopy(dict(current))
    if kind == "Ingress":
        balancer = out.get("loadBalancer")
        if not isinstance(balancer, dict) or not isinstance(balancer.get("ingress"), list):
            return None
        kept = [e for e in balancer["ingress"] if e not in addresses]
        if len(kept) == len(balancer["ingress"]):
            return None
        balancer["ingress"] = kept
        if not kept:
            del balancer["ingress"]
        return out
    if kind == "HTTPRoute" and isinstance(out.get("parents"), list):
        kept = _merge_parents(out["parents"], [], "", controller_name)
        if len(kept) != len(out["parents"]):
            out["parents"] = kept
            return out
    return None

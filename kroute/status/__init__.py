"""Status: what kroute writes back to the objects it serves, computed without I/O.

`plan_status(objects, settings, now=...)` gives, per object, the status to write (Ingress
load-balancer addresses; GatewayClass, Gateway and listener conditions; HTTPRoute parents),
merged with the status the object has, and whether anything changed; `merge_status` and
`withdraw_status` are the merge itself. Writing is someone else's job (docs/status.md).
"""

from kroute.status.conditions import merge_status, withdraw_status
from kroute.status.plan import Desired, desired_statuses, object_generation, plan_status, update_for
from kroute.status.values import (
    CONTROLLER_NAME,
    PublishedAddresses,
    StatusSettings,
    StatusUpdate,
)

__all__ = [
    "CONTROLLER_NAME",
    "Desired",
    "PublishedAddresses",
    "StatusSettings",
    "StatusUpdate",
    "desired_statuses",
    "merge_status",
    "object_generation",
    "plan_status",
    "update_for",
    "withdraw_status",
]

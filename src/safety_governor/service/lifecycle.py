"""The incident lifecycle as an explicit state machine: the states, the allowed transitions in one
table, and ``move``, the only way a worker changes an incident's state (each change is audited).

    DETECTED → ANALYZING → PENDING_APPROVAL ⇄ HELD → READY_TO_EXECUTE → EXECUTING → VERIFYING
        → LEARNING → RESOLVED;  REJECTED and ESCALATED end it from any waiting or working state.

A restart puts an incident back in the state its durable records give (``durability.resume``);
that is a resumption, audited as such, not a transition.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ..errors import GovernorError
from .board import WorkItem, utcnow
from .events import STATES, TERMINAL_STATES

if TYPE_CHECKING:
    from .worker import WorkerContext

_ENDS = frozenset({"ESCALATED"})
TRANSITIONS: dict[str, frozenset[str]] = {
    "DETECTED": frozenset({"ANALYZING"}) | _ENDS,
    "ANALYZING": frozenset({"PENDING_APPROVAL", "READY_TO_EXECUTE"}) | _ENDS,
    "PENDING_APPROVAL": frozenset({"READY_TO_EXECUTE", "HELD", "REJECTED"}) | _ENDS,
    "HELD": frozenset({"READY_TO_EXECUTE", "REJECTED"}) | _ENDS,
    "READY_TO_EXECUTE": frozenset({"EXECUTING", "HELD", "REJECTED"}) | _ENDS,
    "EXECUTING": frozenset({"VERIFYING"}) | _ENDS,
    "VERIFYING": frozenset({"LEARNING", "RESOLVED"}) | _ENDS,
    "LEARNING": frozenset({"RESOLVED"}) | _ENDS,
    "RESOLVED": frozenset(),
    "REJECTED": frozenset(),
    "ESCALATED": frozenset(),
}
assert set(TRANSITIONS) == set(STATES) and all(not TRANSITIONS[s] for s in TERMINAL_STATES)


class IllegalTransition(GovernorError):
    """A worker tried a transition the table does not allow (a bug; the incident stays put)."""


def allowed(current: str, target: str) -> bool:
    return target in TRANSITIONS.get(current, frozenset())


def move(ctx: WorkerContext | None, item: WorkItem, target: str, reason: str = "", *,
         step: str | None = None, due: float | None = None) -> bool:
    """Change ``item``'s state to ``target`` with the agent step that comes next (``step``, due
    at ``due``, default now). Staying in the same state only changes the step. The transition is
    audited (``workflow_events`` kind ``transition``) before it takes effect: if the audit write
    fails, the state does not change. Raises ``IllegalTransition`` for a move the table forbids.
    Returns True when the state changed."""
    with item.lock:
        current = item.state
        if target != current:
            if not allowed(current, target):
                raise IllegalTransition(f"{item.incident.id}: {current} → {target} is not an allowed transition")
            audit = getattr(ctx, "audit", None)
            if audit is not None:
                audit.record("workflow_events", {
                    "kind": "transition", "incident_id": item.incident.id, "from": current, "to": target,
                    "reason": reason[:300], "by": getattr(ctx, "owner", "governor"), "at": utcnow().isoformat()})
            item.state = target
            if target in TERMINAL_STATES:
                item.closed_at = time.monotonic()
        item.step = step
        item.due = time.monotonic() if due is None else due
        return target != current


def record_resumed(ctx: WorkerContext, item: WorkItem, note: str) -> None:
    """Audit that a restart put ``item`` back in its state (``workflow_events`` kind ``resumed``)."""
    if ctx.audit is not None:
        ctx.audit.record("workflow_events", {
            "kind": "resumed", "incident_id": item.incident.id, "state": item.state, "reason": note[:300],
            "by": ctx.owner, "at": utcnow().isoformat()})

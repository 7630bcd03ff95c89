"""The incident's lifecycle state, recorded as ``workflow_events`` of kind ``incident_state``.

Every change is one appended event ``{"kind": "incident_state", "incident_id", "state", "by",
"reason", "decision_id"?, "at"}``, written to the audit trail first and then to the store; the
current state is the last such event. A human ``REJECT`` recorded by the pipeline (an
``approval_*`` event whose ``state`` is ``rejected``) counts as the state ``rejected`` too, so a
rejection from any channel stops a pending execution at the execute-time re-check.

States: ``open``, ``pending_approval``, ``executed``, ``verifying``, ``resolved``, ``escalated``,
``rejected``, ``held``, ``expired`` (nobody authorised the decision within the approval TTL; a
fresh assessment is needed). ``resolved`` and ``rejected`` are final for execution: nothing runs for an
incident in those states until someone records ``open`` again.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from .ports import AuditSink, Store

STATE_KIND = "incident_state"
IncidentState = Literal[
    "open", "pending_approval", "executed", "verifying", "resolved", "escalated", "rejected", "held", "expired"
]
STATES: tuple[str, ...] = IncidentState.__args__  # type: ignore[attr-defined]
NO_EXECUTION_STATES = frozenset({"resolved", "rejected"})


def state_event(
    incident_id: str, state: str, *, by: str, reason: str = "", decision_id: str | None = None
) -> dict[str, Any]:
    if state not in STATES:
        raise ValueError(f"unknown incident state '{state}' (expected one of {', '.join(STATES)})")
    event: dict[str, Any] = {"kind": STATE_KIND, "incident_id": incident_id, "state": state, "by": by,
                             "reason": reason, "at": datetime.now(UTC).isoformat()}
    if decision_id:
        event["decision_id"] = decision_id
    return event


def record_state(
    store: Store,
    incident_id: str,
    state: str,
    *,
    by: str,
    reason: str = "",
    decision_id: str | None = None,
    audit: AuditSink | None = None,
) -> dict[str, Any]:
    """Record a state change (audit first, then the store). Raises ``AuditWriteError`` or
    ``StoreError`` when it cannot be recorded."""
    event = state_event(incident_id, state, by=by, reason=reason, decision_id=decision_id)
    if audit is not None:
        audit.record("workflow_events", event)
    store.append_event("workflow_events", event)
    return event


def current_state(store: Store, incident_id: str) -> str | None:
    """The incident's latest recorded state, or ``None`` when none was recorded."""
    state: str | None = None
    for event in store.events("workflow_events", incident_id, limit=10_000):
        kind = str(event.get("kind", ""))
        if kind == STATE_KIND and event.get("state") in STATES:
            state = str(event["state"])
        elif kind.startswith("approval_") and event.get("state") == "rejected":
            state = "rejected"
    return state

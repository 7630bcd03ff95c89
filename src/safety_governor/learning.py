"""Learning: after a verified resolution, write a runbook entry that waits for human review.

A learned entry is indexed into ``runbooks`` with provenance (``source: agent_learning``, the
incident id, the action, the decision id, the execution id) and ``status: pending_review``. The
retrieval paths use approved runbooks only (``search_runbooks`` filters ``status: approved``; the
store's ``known_actions`` reads approved runbooks), so a pending or revoked entry is never a plan
or a reason to trust an action. An approved learned entry is still never used for its own
incident: its hits carry ``incident_id`` and the offline planner drops them for that incident.
No runbook makes an action executable: the gate's ``unknown_action`` reads the action catalogue
for the incident's service only, as the executor does.

Review is explicit and audited: ``approve_runbook`` and ``revoke_runbook`` append
``runbook_approved`` / ``runbook_revoked`` workflow events (and ``learn_runbook`` appends
``runbook_learned``). Pure logic plus the ``Store`` (and optional ``AuditSink``) port.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from .config import describe_validation_error
from .errors import InputError
from .models import ExecutionRecord, GateOutput, Incident, RunbookDoc, normalise_action
from .ports import AuditSink, Store
from .verification import VerificationResult

LEARNED_SOURCE = "agent_learning"
MAX_BODY = 4000
KB_INDICES = ("runbooks", "evidence", "policies", "incidents", "logs")

RunbookWriter = Callable[[Incident, GateOutput, VerificationResult], "str | None"]


def learned_runbook_id(incident_id: str, decision_id: str, action: str) -> str:
    """Stable per incident, decision and action: learning twice writes one entry."""
    digest = hashlib.sha256(f"{incident_id}\n{decision_id}\n{normalise_action(action)}".encode()).hexdigest()
    return f"rbk-learned-{digest[:12]}"


def deterministic_body(
    incident: Incident, gate: GateOutput, execution: ExecutionRecord, verification: VerificationResult
) -> str:
    """The fast-mode runbook text: only facts the governor recorded."""
    before = "unknown" if verification.error_rate_before is None else f"{verification.error_rate_before:.1%}"
    after = "unknown" if verification.error_rate_after is None else f"{verification.error_rate_after:.1%}"
    symptoms = f" (symptoms: {incident.symptoms})" if incident.symptoms else ""
    return (
        f"When {incident.service} shows: {incident.summary}{symptoms}, run {execution.action}. "
        f"It resolved incident {incident.id} ({incident.severity}): the error rate fell from {before} "
        f"to {after} within {verification.window_seconds:g}s of the execution, under the "
        f"{verification.threshold:.1%} threshold. Decision {gate.decision_id} "
        f"({gate.decision}), authorised by {execution.authorised_by}, executed as {execution.mode}. "
        f"After running it, confirm the error rate falls under {verification.threshold:.1%}; "
        f"if it does not, escalate."
    )


def _audit(store: Store, audit: AuditSink | None, event: dict[str, Any]) -> None:
    if audit is not None:
        audit.record("workflow_events", event)
    store.append_event("workflow_events", event)


def learn_runbook(
    store: Store,
    incident: Incident,
    gate: GateOutput,
    execution: ExecutionRecord,
    verification: VerificationResult,
    *,
    writer: RunbookWriter | None = None,
    audit: AuditSink | None = None,
) -> dict[str, Any]:
    """Index a learned runbook entry (``pending_review``) and return it.

    Args:
        store: where the entry is indexed (``runbooks``) and the event recorded.
        incident, gate, execution, verification: the resolved incident's record.
        writer: ``(incident, gate, verification) -> text | None`` from a live agent; when it is
            missing, fails or returns nothing, the deterministic text is used.
        audit: also write the ``runbook_learned`` event to the audit trail.

    Raises ``InputError`` unless the verification resolved the incident for this execution.
    Learning the same decision again returns the existing entry unchanged (a reviewed entry is
    never reset to pending).
    """
    if not verification.resolved:
        raise InputError(f"{incident.id}: not learning from an unverified resolution ({verification.reason})")
    if not verification.credited:
        raise InputError(f"{incident.id}: not learning: the recovery is not credited to the action "
                         f"({verification.reason})")
    if execution.incident_id != incident.id or gate.incident_id != incident.id:
        raise InputError(f"{incident.id}: the execution or decision belongs to another incident")
    action = normalise_action(execution.action)
    if normalise_action(gate.proposed_action or "") != action or normalise_action(verification.action) != action:
        raise InputError(f"{incident.id}: the decision, execution and verification name different actions")
    doc_id = learned_runbook_id(incident.id, gate.decision_id, action)
    existing = store.get("runbooks", doc_id)
    if existing is not None:
        return existing
    body, body_source = None, "deterministic"
    if writer is not None:
        try:
            written = writer(incident, gate, verification)
        except Exception:  # a live agent failing must not stop learning: fall back
            written = None
        if isinstance(written, str) and written.strip():
            body, body_source = written.strip()[:MAX_BODY], "writer"
    if body is None:
        body = deterministic_body(incident, gate, execution, verification)
    now = datetime.now(UTC).isoformat()
    doc: dict[str, Any] = {
        "id": doc_id,
        "service": incident.service,
        "title": f"Learned from {incident.id}: {action} for {incident.pattern or incident.summary}"[:200],
        "recommended_action": action,
        "body": body,
        "source": LEARNED_SOURCE,
        "status": "pending_review",
        "incident_id": incident.id,
        "decision_id": gate.decision_id,
        "execution_id": execution.execution_id,
        "symptoms": [s for s in (incident.summary, incident.symptoms) if s],
        "steps": [
            f"Run {action} on {incident.service}.",
            f"Watch the error rate for {verification.window_seconds:g}s; it should fall under "
            f"{verification.threshold:.1%}.",
            "If it does not, escalate to the on-call human.",
        ],
        "verification": {
            "error_rate_before": verification.error_rate_before,
            "error_rate_after": verification.error_rate_after,
            "threshold": verification.threshold,
            "samples": len(verification.samples),
        },
        "body_source": body_source,
        "learned_at": now,
    }
    try:
        RunbookDoc.model_validate(doc)
    except ValidationError as exc:
        raise InputError(f"{incident.id}: learned runbook is invalid: {describe_validation_error(exc)}") from exc
    with store.atomic():
        store.index_documents("runbooks", [doc])
        _audit(store, audit, {"kind": "runbook_learned", "incident_id": incident.id, "runbook_id": doc_id,
                              "decision_id": gate.decision_id, "action": action, "status": "pending_review",
                              "body_source": body_source, "at": now})
    return doc


def review_queue(store: Store, *, limit: int = 100) -> list[dict[str, Any]]:
    """Runbook entries waiting for a human (``pending_review``), ordered by id."""
    return store.find("runbooks", {"status": "pending_review"}, limit=limit)


REVIEWABLE_FROM = {"approved": ("pending_review",), "revoked": ("approved", "pending_review")}


def reviewable_entry(store: Store, runbook_id: str, to: str) -> dict[str, Any]:
    """The entry, when it exists and may move to ``to`` (approved, revoked); ``InputError`` otherwise."""
    doc = store.get("runbooks", runbook_id)
    if doc is None:
        raise InputError(f"runbook {runbook_id} not found")
    status, allowed_from = str(doc.get("status") or "approved"), REVIEWABLE_FROM[to]
    if status not in allowed_from:
        raise InputError(f"runbook {runbook_id} is {status}; only {' or '.join(allowed_from)} entries can be {to}")
    return doc


def _review(
    store: Store, runbook_id: str, reviewer: str, *, to: str, reason: str, audit: AuditSink | None,
) -> dict[str, Any]:
    if not reviewer or not reviewer.strip():
        raise InputError("a reviewer name is required")
    doc = reviewable_entry(store, runbook_id, to)
    status = str(doc.get("status") or "approved")
    now = datetime.now(UTC).isoformat()
    verb = "approved" if to == "approved" else "revoked"
    updated = {**doc, "status": to, f"{verb}_by": reviewer.strip(), f"{verb}_at": now}
    if reason:
        updated[f"{verb}_reason"] = reason
    with store.atomic():
        store.index_documents("runbooks", [updated])
        _audit(store, audit, {"kind": f"runbook_{verb}", "incident_id": doc.get("incident_id"),
                              "runbook_id": runbook_id, "user": reviewer.strip(), "previous_status": status,
                              "status": to, "reason": reason, "source": doc.get("source"), "at": now})
    return updated


def approve_runbook(
    store: Store, runbook_id: str, reviewer: str, *, audit: AuditSink | None = None
) -> dict[str, Any]:
    """Make a ``pending_review`` entry retrievable. Raises ``InputError`` when there is no such
    entry or it is not pending."""
    return _review(store, runbook_id, reviewer, to="approved", reason="", audit=audit)


def revoke_runbook(
    store: Store, runbook_id: str, reviewer: str, *, reason: str = "", audit: AuditSink | None = None
) -> dict[str, Any]:
    """Take an entry (approved or pending) out of retrieval for good."""
    return _review(store, runbook_id, reviewer, to="revoked", reason=reason, audit=audit)


def knowledge_base_counts(store: Store) -> dict[str, int]:
    """Real indexed entries, for the TUI's knowledge-base counter.

    ``runbooks`` counts retrievable (approved) runbooks; the learned and review figures are
    broken out beside it.
    """
    counts = {
        "runbooks": store.count("runbooks", {"status": "approved"}),
        "runbooks_total": store.count("runbooks"),
        "learned_approved": store.count("runbooks", {"status": "approved", "source": LEARNED_SOURCE}),
        "learned_total": store.count("runbooks", {"source": LEARNED_SOURCE}),
        "pending_review": store.count("runbooks", {"status": "pending_review"}),
        "revoked": store.count("runbooks", {"status": "revoked"}),
    }
    for index in KB_INDICES[1:]:
        counts[index] = store.count(index)
    return counts

"""Durable approvals in the incident service: what a restart keeps, through ``ApprovalState``.

* The agent worker opens a wait (``ApprovalState.open_wait``, with the whole assessment) *before*
  it posts an approval request, so every request the service made can be found again.
* The slack worker applies each reply, records it (``pipeline.record_approval``) and acknowledges
  it on the channel (``ack``) in one store transaction: a reply is processed exactly once.
* The agent worker looks for an earlier execution of the decision (``execution_for``) before it
  executes: a decision is never executed twice, whatever restarted in between.
* The wait is closed when the incident reaches a final state (resolved, escalated, rejected).

A restarted service over the same store calls ``resume`` before its workers start: each open
wait comes back to the queue in the state its recorded replies give (PENDING_APPROVAL, HELD,
READY_TO_EXECUTE, or VERIFYING when the action already ran before the restart), with its ticket
and thread, and is requested again on the channel (Slack: the same thread, no second post; the
local inbox, which lives in memory: the request is put back, and a reply pushed before the
restart but not yet applied is lost while the incident stays pending).

"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..approval_state import APPROVAL_KINDS, Reply, events_of_kind
from ..durable_approvals import rebuild_session, restore_assessment, snapshot_assessment
from ..approvals import ApprovalPolicy
from ..errors import GovernorError
from ..incident_state import current_state
from ..models import ExecutionRecord
from ..pipeline import ReliabilityLayerAgent
from ..ports import ApprovalChannel, Ticket
from .board import WorkItem, utcnow
from .events import ThreadEntry
from .lifecycle import record_resumed
from .records import approval_message

if TYPE_CHECKING:
    from .worker import WorkerContext

# The key of the assessment snapshot that holds what only the dashboard needs after a restart.
DASHBOARD = "dashboard"
FINAL_STATES = frozenset({"resolved", "rejected", "escalated"})


def wait_snapshot(item: WorkItem) -> dict[str, Any]:
    """The assessment snapshot of ``item`` plus the dashboard's own fields (baseline, preview)."""
    assert item.assessment is not None
    snapshot = snapshot_assessment(item.assessment)
    snapshot[DASHBOARD] = {"baseline_error_rate": item.baseline_error_rate, "preview": item.preview,
                           "source": item.source, "verify_live": item.verify_live,
                           "detected_at": item.detected_at.isoformat()}
    return snapshot


def open_wait(ctx: WorkerContext, item: WorkItem, message: str) -> None:
    """Record that ``item`` waits on its decision (idempotent). Raises when the store cannot
    record it: then nothing is requested and the step is retried (fail closed)."""
    a = item.assessment
    assert a is not None
    ctx.approval_state(item.pipeline.store).open_wait(
        item.incident.id, a.gate.decision_id, channel=str(getattr(ctx.channel, "name", "channel")),
        assessment=wait_snapshot(item), message=message, ticket=item.ticket)


def close_wait(ctx: WorkerContext, item: WorkItem, outcome: str, detail: str = "") -> None:
    """Nobody waits on ``item``'s decision any more. Best effort: a failure is shown, and the
    restarted dashboard then finds the incident final (or executed) and closes it itself."""
    if item.assessment is None:
        return
    try:
        ctx.approval_state(item.pipeline.store).close_wait(item.incident.id, item.assessment.gate.decision_id,
                                                           outcome, detail[:300])
    except GovernorError as exc:
        ctx.activity("agent", f"{item.label}: cannot close the approval wait: {exc}", level="warn",
                     incident_id=item.incident.id)


def execution_record(doc: dict[str, Any]) -> ExecutionRecord:
    return ExecutionRecord.model_validate({k: doc[k] for k in ExecutionRecord.model_fields if k in doc})


def prior_execution(ctx: WorkerContext, item: WorkItem) -> ExecutionRecord | None:
    """The execution of ``item``'s decision already in ``action_executions`` (e.g. before a
    restart), or ``None``."""
    a = item.assessment
    assert a is not None
    doc = ctx.approval_state(item.pipeline.store).execution_for(item.incident.id, a.gate.decision_id)
    return execution_record(doc) if doc is not None else None


def pending_replies(channel: ApprovalChannel, incident_id: str) -> list[Reply]:
    """New replies of the incident. Slack and the fallback keep them until ``ack``; a channel
    with only ``replies()`` (the local inbox) hands each one out once, under a throwaway key."""
    pending = getattr(channel, "pending_replies", None)
    if callable(pending):
        return list(pending(incident_id))
    return [Reply(incident_id, f"plain:{uuid.uuid4().hex}", user, text, str(getattr(channel, "name", "channel")))
            for user, text in channel.replies(incident_id)]


def ack_reply(channel: ApprovalChannel, incident_id: str, key: str) -> None:
    ack = getattr(channel, "ack", None)
    if callable(ack) and not key.startswith("plain:"):
        ack(incident_id, key)


# --- resuming after a restart -----------------------------------------------------------------


def _thread(store: Any, incident_id: str, decision_id: str, record: dict[str, Any]) -> list[ThreadEntry]:
    """The approval thread as recorded: the request, then every reply and what the rules made of it."""
    def at(value: Any) -> datetime:
        try:
            return datetime.fromisoformat(str(value))
        except ValueError:
            return utcnow()

    entries = [ThreadEntry(at=at(record.get("at")), author="governor", text=str(record.get("message", "")),
                           kind="request")]
    for e in events_of_kind(store, APPROVAL_KINDS, incident_id):
        if e.get("decision_id") == decision_id:
            entries.append(ThreadEntry(at=at(e.get("at")), author=str(e.get("user", "")), text=str(e.get("text", "")),
                                       kind="reply", outcome=str(e["kind"]).removeprefix("approval_")))
    return entries


def resume(ctx: WorkerContext, pipeline: ReliabilityLayerAgent, approvals: ApprovalPolicy) -> list[WorkItem]:
    """Put every open wait of ``pipeline.store`` back on the board (see the module docstring);
    returns the items resumed. Waits whose incident reached a final state are closed instead."""
    import time

    state = ctx.approval_state(pipeline.store)
    channel = str(getattr(ctx.channel, "name", "channel"))
    resumed: list[WorkItem] = []
    for record in state.open_waits():
        incident_id, decision_id = str(record["incident_id"]), str(record["decision_id"])
        if ctx.board.get(incident_id) is not None:
            continue
        try:
            a = restore_assessment(record["assessment"])
            ticket = Ticket.model_validate(record["ticket"]) if record.get("ticket") else None
        except (KeyError, TypeError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
            ctx.activity("slack", f"✗ cannot resume {incident_id}: its wait record is unreadable "
                                  f"({str(exc).splitlines()[0][:120]})", level="error", incident_id=incident_id)
            continue
        session = rebuild_session(pipeline, a, approvals)
        lifecycle = current_state(pipeline.store, incident_id)
        prior = state.execution_for(incident_id, decision_id)
        if lifecycle in FINAL_STATES or (prior is None and session.state == "rejected"):
            # Only the close was missing when the dashboard stopped.
            outcome = "executed" if prior is not None else "rejected" if session.state == "rejected" else lifecycle
            state.close_wait(incident_id, decision_id, str(outcome), f"closed at restart: already {lifecycle or outcome}")
            continue
        extras = dict(record["assessment"].get(DASHBOARD) or {})
        detected = extras.get("detected_at")
        item = WorkItem(incident=a.incident, pipeline=pipeline, approvals=approvals,
                        source=str(extras.get("source") or "audit-worker"),
                        baseline_error_rate=extras.get("baseline_error_rate"),
                        verify_live=bool(extras.get("verify_live", True)), ticket=ticket, assessment=a,
                        session=session, preview=extras.get("preview"), requested=True, step=None,
                        detected_at=datetime.fromisoformat(detected) if detected else utcnow())
        item.thread = _thread(pipeline.store, incident_id, decision_id, record)
        now = time.monotonic()
        if prior is not None:
            item.execution = execution_record(prior)
            item.state, item.step, item.due = "VERIFYING", "verify", now
            note = (f"resumed after a restart: {prior.get('action')} already executed "
                    f"({prior.get('execution_id')}), not executed again; verifying")
        else:
            if session.may_execute:
                # An authorised decision runs now; a passed gate gets its HOLD window again.
                hold = ctx.config.hold_seconds if session.state == "auto" else 0.0
                item.state, item.step, item.due = "READY_TO_EXECUTE", "execute", now + hold
            else:
                item.state = "HELD" if session.state == "held" else "PENDING_APPROVAL"
            note = f"resumed after a restart: {item.state}, waiting on {channel} again"
            try:  # Slack: the same thread, no second post; the local inbox gets the request back
                ctx.channel.request(a.incident, a.gate, message=approval_message(item), ticket=ticket)
            except GovernorError as exc:  # stays waiting: nothing executes without a reply
                state.record_error(channel, "request", str(exc).splitlines()[0][:300], incident_id=incident_id)
                note += f" (the request could not be posted: {exc}; retried)"
        item.thread.append(ThreadEntry(at=utcnow(), author="governor", text=note, kind="notify"))
        record_resumed(ctx, item, note)
        ctx.board.add(item)
        ctx.publish(item)
        ctx.activity("slack", f"{item.label} {note}", level="warn" if item.state != "VERIFYING" else "info",
                     incident_id=incident_id)
        resumed.append(item)
    if resumed:
        ctx.metrics(ctx.counters.bump(detected=len(resumed)))
    return resumed

"""The durable approval loop over a channel, and the assessment snapshot a restart rebuilds.

``ApprovalState`` (``approval_state.py``) holds the bookkeeping records; this module drives them:
``DurableApprovals`` opens waits, feeds replies through the core's approval rules exactly once,
expires waits nobody answered within the approval TTL, and executes an authorised decision once.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .approval_state import APPROVAL_KINDS, WAIT_OPENED, ApprovalState, Reply, events_of_kind
from .approvals import ApprovalPolicy, ApprovalSession
from .errors import GovernorError
from .incident_state import NO_EXECUTION_STATES, current_state, record_state
from .models import (
    ApprovalEvent,
    CompressOutput,
    ExecutionRecord,
    GateOutput,
    Incident,
    PlanOutput,
    StressOutput,
)
from .pipeline import Assessment, ReliabilityLayerAgent
from .ports import ApprovalChannel, Ticket, TicketPort


def _now() -> datetime:
    return datetime.now(UTC)


# --- the assessment snapshot ---------------------------------------------------------------------


def snapshot_assessment(a: Assessment) -> dict[str, Any]:
    """Everything needed to rebuild ``a`` after a restart, as JSON-ready data."""
    return {
        "incident": a.incident.model_dump(mode="json"),
        "plan": a.plan.model_dump(mode="json") if a.plan else None,
        "plan_error": a.plan_error,
        "stress": a.stress.model_dump(mode="json"),
        "stress_error": a.stress_error,
        "compress": a.compress.model_dump(mode="json"),
        "gate": a.gate.model_dump(mode="json"),
        "model": a.model,
        "tool_calls": a.tool_calls,
        "started_at": a.started_at.isoformat(),
        "plan_fields": list(a.plan_fields),
    }


def restore_assessment(data: Mapping[str, Any]) -> Assessment:
    return Assessment(
        incident=Incident.model_validate(data["incident"]),
        plan=PlanOutput.model_validate(data["plan"]) if data.get("plan") else None,
        plan_error=data.get("plan_error"),
        stress=StressOutput.model_validate(data["stress"]),
        stress_error=data.get("stress_error"),
        compress=CompressOutput.model_validate(data["compress"]),
        gate=GateOutput.model_validate(data["gate"]),
        model=str(data.get("model", "")),
        tool_calls=int(data.get("tool_calls", 0)),
        started_at=datetime.fromisoformat(str(data["started_at"])),
        plan_fields=list(data.get("plan_fields") or []),
    )


def approval_request_text(a: Assessment, preview: str | None = None) -> str:
    """The default ``message`` of an approval request: recommended steps and the dry-run preview."""
    lines = [f"Proposed action: {a.gate.proposed_action or '(none)'}"]
    if a.plan and a.plan.rationale:
        lines.append(f"Recommended steps: {a.plan.rationale}")
    if preview:
        lines.append(f"Dry-run preview: {preview}")
    roles = a.gate.facts.required_roles if "policy_conflict" in a.gate.rule_ids else []
    if roles and a.gate.approval_required == "approve":
        lines.append(f"Sign-off: one APPROVE from a distinct user per role: {', '.join(roles)}")
    return "\n".join(lines)


def gate_comment(a: Assessment) -> str:
    """The ticket comment for a gate decision."""
    g = a.gate
    rules = ", ".join(g.rule_ids) or "none"
    reasons = "; ".join(r.message for r in g.reasons)
    text = (f"Gate decision {g.decision} ({g.decision_id}): action {g.proposed_action or '(none)'}, "
            f"rules fired: {rules}, confidence {g.confidence_initial:.2f} -> {g.confidence_final:.2f}")
    return f"{text}. {reasons}" if reasons else text


def approval_comment(event: ApprovalEvent) -> str:
    """The ticket comment for an approval outcome (accepted, refused, invalid, unauthorized)."""
    return f"{event.command or 'reply'} from {event.user}: {event.outcome} ({event.reason})"


def rebuild_session(pipeline: ReliabilityLayerAgent, a: Assessment, policy: ApprovalPolicy) -> ApprovalSession:
    """A fresh session with the recorded replies of ``a``'s decision applied again, in order,
    through the same rules (nothing is recorded again). A refusal reuses its recorded text, so a
    restart never asks a live agent to explain it a second time."""
    opened = next((datetime.fromisoformat(str(e["at"])) for e in events_of_kind(pipeline.store, WAIT_OPENED,
                                                                               a.incident.id)
                   if e.get("decision_id") == a.gate.decision_id and e.get("at")), None)
    session = pipeline.approval_session(a, policy, decided_at=opened)
    for e in events_of_kind(pipeline.store, APPROVAL_KINDS, a.incident.id):
        if e.get("decision_id") == a.gate.decision_id:
            if e.get("kind") == "approval_refused" and not session.refusal_text and e.get("reason"):
                session.refusal_text = str(e["reason"])
            at = datetime.fromisoformat(e["at"]) if e.get("at") else None
            session.apply(str(e.get("principal") or e.get("user", "")), str(e.get("text", "")), at=at,
                          decision_id=e.get("answers_decision"), channel=e.get("channel"))
    return session


# --- the driver the slack worker calls -------------------------------------------------------------


@dataclass
class Waiting:
    """An incident waiting for a human, with its rebuilt assessment and approval session."""

    incident_id: str
    decision_id: str
    assessment: Assessment
    session: ApprovalSession
    message: str
    ticket: Ticket | None = None
    handle: str = ""


@dataclass(frozen=True)
class Progress:
    """What one reply did: the approval rules' verdict and the session state after it."""

    incident_id: str
    reply: Reply
    event: ApprovalEvent
    state: str
    may_execute: bool


@dataclass
class DurableApprovals:
    """The approval loop over a channel, durable across restarts.

    The slack worker calls ``resume()`` once at start, ``open(...)`` for each blocked decision
    (after ``pipeline.record_decision``), ``poll()`` on every tick, and ``execute_once(w)`` for
    each ``w`` in ``ready()``. Replies go through ``ApprovalSession.apply`` (the core's rules),
    each is recorded with ``pipeline.record_approval`` and marked consumed in one transaction
    when the channel offers ``pending_replies(incident_id) -> list[Reply]`` and
    ``ack(incident_id, key)`` (Slack and the fallback do); a channel with only ``replies()``
    (the local inbox) hands each reply out once by itself.

    Args:
        pipeline: the wired pipeline (audit, store, executor).
        channel: Slack, the local inbox, or the fallback of both.
        state: the bookkeeping over the same store as ``pipeline.store``.
        policy: who may decide (``bootstrap.build_approval_policy``).
        tickets: optional; when given, the gate decision and every approval outcome that is not
            ``ignored`` are commented on the incident's ticket.
    """

    pipeline: ReliabilityLayerAgent
    channel: ApprovalChannel
    state: ApprovalState
    policy: ApprovalPolicy
    tickets: TicketPort | None = None
    _waiting: dict[str, Waiting] = field(default_factory=dict)
    _lock: threading.RLock = field(default_factory=threading.RLock)

    def open(self, a: Assessment, *, message: str | None = None, ticket: Ticket | None = None) -> Waiting:
        """Start waiting for a human on ``a``'s decision and post the request (idempotent per
        decision). A channel outage does not raise: the request is queued and retried."""
        with self._lock:
            current = self._waiting.get(a.incident.id)
            if current is not None and current.decision_id == a.gate.decision_id:
                return current
            if message is None:
                message = approval_request_text(a, self.pipeline.executor.preview(a.incident, a.gate))
            self.state.open_wait(a.incident.id, a.gate.decision_id, channel=self.channel.name,
                                 assessment=snapshot_assessment(a), message=message, ticket=ticket)
            w = Waiting(a.incident.id, a.gate.decision_id, a,
                        self.pipeline.approval_session(a, self.policy, decided_at=_now()), message, ticket)
            self._waiting[w.incident_id] = w
            if self.tickets is not None and ticket is not None:
                self._ticket_comment(ticket.key, gate_comment(a))
            w.handle = self._request(w)
            return w

    def resume(self) -> list[Waiting]:
        """Rebuild every open wait from the store (after a restart); returns them."""
        with self._lock:
            for record in self.state.open_waits():
                incident_id = str(record["incident_id"])
                if incident_id in self._waiting:
                    continue
                a = restore_assessment(record["assessment"])
                ticket = Ticket.model_validate(record["ticket"]) if record.get("ticket") else None
                w = Waiting(incident_id, str(record["decision_id"]), a, self._rebuild_session(a),
                            str(record.get("message", "")), ticket)
                self._waiting[incident_id] = w
                # Idempotent on Slack (the same thread, no second post); puts the request back
                # into an in-memory local inbox; posts it if the crash came before it went out.
                w.handle = self._request(w)
            return list(self._waiting.values())

    def waiting(self) -> list[Waiting]:
        with self._lock:
            return list(self._waiting.values())

    def ready(self) -> list[Waiting]:
        """Waits a human authorised (approved or overridden): call ``execute_once`` on each."""
        with self._lock:
            return [w for w in self._waiting.values() if w.session.may_execute]

    def poll(self) -> list[Progress]:
        """Feed new replies of every open wait through the approval rules, exactly once each."""
        progress: list[Progress] = []
        flush = getattr(self.tickets, "flush", None)
        if callable(flush):
            flush()
        for w in self.waiting():
            try:
                progress.extend(self._poll_one(w))
                self._expire_if_due(w)
            except GovernorError as exc:
                self.state.record_error(self.channel.name, "poll", _short(exc), incident_id=w.incident_id)
        return progress

    def _expire_if_due(self, w: Waiting) -> None:
        """A wait nobody answered within the TTL closes as ``expired``: nothing runs, and the
        incident needs a fresh assessment (recorded as incident state ``expired``)."""
        with self._lock:
            if w.incident_id not in self._waiting or not w.session.expired_at(_now()) or not w.session.expire():
                return
            self.pipeline.audit.record("workflow_events", {
                "kind": "approval_expired", "incident_id": w.incident_id, "decision_id": w.decision_id,
                "ttl_seconds": self.policy.ttl_seconds, "state": "expired", "at": _now().isoformat()})
            record_state(self.pipeline.store, w.incident_id, "expired", by="governor",
                         reason=f"no authorised reply within {self.policy.ttl_seconds:.0f} s",
                         decision_id=w.decision_id, audit=self.pipeline.audit)
            self._notify(w.incident_id, "the approval wait expired: nothing runs; a fresh assessment is needed")
            self._close(w, "expired", f"expired after {self.policy.ttl_seconds:.0f} s")

    def _poll_one(self, w: Waiting) -> list[Progress]:
        out: list[Progress] = []
        for reply in self._replies(w.incident_id):
            with self._lock:
                if w.incident_id not in self._waiting:
                    break
                try:
                    with self.pipeline.store.atomic():
                        event = w.session.apply(reply.user, reply.text, at=reply.at or _now(),
                                                decision_id=reply.decision_id, channel=reply.channel)
                        self.pipeline.record_approval(w.assessment, w.session)
                        self._ack(w.incident_id, reply.key)
                except BaseException:
                    # The transaction rolled back: the session must forget the reply too.
                    w.session = self._rebuild_session(w.assessment)
                    raise
            out.append(Progress(w.incident_id, reply, event, w.session.state, w.session.may_execute))
            self._after(w, event)
        return out

    def execute_once(self, w: Waiting) -> ExecutionRecord | None:
        """Execute ``w``'s action unless this decision already ran (``action_executions``) or the
        incident is resolved or rejected; closes the wait. Returns the execution record (the
        earlier one if it already ran) or ``None`` when nothing may run."""
        with self._lock:
            prior = self.state.execution_for(w.incident_id, w.decision_id)
            if prior is not None:
                self._close(w, "executed", f"already executed ({prior.get('execution_id', '?')})")
                return ExecutionRecord.model_validate({k: prior[k] for k in ExecutionRecord.model_fields if k in prior})
            if not w.session.may_execute or current_state(self.pipeline.store, w.incident_id) in NO_EXECUTION_STATES:
                return None
            record = self.pipeline.execute(w.assessment, w.session)
            if record is None:
                self._close(w, "execution_refused", "the executor refused the action")
                return None
            self._close(w, "executed", f"executed by {record.mode}: {record.preview}")
            return record

    def close(self, incident_id: str, outcome: str, detail: str = "") -> None:
        """Stop waiting (e.g. the incident was resolved elsewhere); removes the buttons."""
        with self._lock:
            w = self._waiting.get(incident_id)
            if w is not None:
                self._close(w, outcome, detail)

    # --- helpers ----------------------------------------------------------------------------

    def _rebuild_session(self, a: Assessment) -> ApprovalSession:
        return rebuild_session(self.pipeline, a, self.policy)

    def _request(self, w: Waiting) -> str:
        try:
            return self.channel.request(w.assessment.incident, w.assessment.gate, message=w.message, ticket=w.ticket)
        except GovernorError as exc:  # stays waiting; nothing executes without a reply
            self.state.record_error(self.channel.name, "request", _short(exc), incident_id=w.incident_id)
            return ""

    def _replies(self, incident_id: str) -> list[Reply]:
        pending = getattr(self.channel, "pending_replies", None)
        if callable(pending):
            return list(pending(incident_id))
        return [Reply(incident_id, f"plain:{uuid.uuid4().hex}", user, text, self.channel.name)
                for user, text in self.channel.replies(incident_id)]

    def _ack(self, incident_id: str, key: str) -> None:
        ack = getattr(self.channel, "ack", None)
        if callable(ack) and not key.startswith("plain:"):
            ack(incident_id, key)

    def _after(self, w: Waiting, event: ApprovalEvent) -> None:
        """Answer in the thread, update the message and the ticket after one reply."""
        if event.outcome == "ignored":
            return
        if event.outcome in ("refused", "unauthorized", "invalid"):
            self._notify(w.incident_id, event.reason)
        else:
            self._notify(w.incident_id, f"{event.command} accepted: {event.reason}")
            status = {"approved": "approved by", "overridden": "FORCE_OVERRIDE by", "held": "held by",
                      "rejected": "rejected by"}.get(w.session.state, w.session.state)
            if w.session.state == "rejected":
                self._close(w, "rejected", f"{status} {event.user}")
            else:
                self._update(w.incident_id, f"{status} {event.user}", final=False)
        if self.tickets is not None and w.ticket is not None:
            self._ticket_comment(w.ticket.key, approval_comment(event))

    def _close(self, w: Waiting, outcome: str, detail: str) -> None:
        self.state.close_wait(w.incident_id, w.decision_id, outcome, detail)
        self._waiting.pop(w.incident_id, None)
        self._update(w.incident_id, detail or outcome, final=True)

    def _notify(self, incident_id: str, text: str) -> None:
        try:
            self.channel.notify(incident_id, text)
        except GovernorError as exc:
            self.state.record_error(self.channel.name, "notify", _short(exc), incident_id=incident_id)

    def _update(self, incident_id: str, status: str, *, final: bool) -> None:
        update = getattr(self.channel, "update", None)
        if not callable(update):
            return
        try:
            update(incident_id, status, final=final)
        except GovernorError as exc:
            self.state.record_error(self.channel.name, "update", _short(exc), incident_id=incident_id)

    def _ticket_comment(self, key: str, text: str) -> None:
        assert self.tickets is not None
        try:
            self.tickets.comment(key, text)
        except GovernorError as exc:
            self.state.record_error(getattr(self.tickets, "name", "tickets"), "comment", _short(exc))


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__

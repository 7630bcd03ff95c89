"""Durable approval bookkeeping: what survives a restart of the governor.

Everything lives in the store's ``workflow_events`` index (the ``Store`` port's ``append_event``
and ``events(..., kind=...)``), one appended record per fact, never an update in place. Each
record carries ``kind``, ``incident_id`` and ``at``:

=================  ==========================================================================
kind               meaning (extra fields)
=================  ==========================================================================
``wait_opened``    an incident waits for a human (``decision_id``, ``channel``, ``message``,
                   ``ticket``, ``assessment``: the whole assessment, so a restart can rebuild it)
``wait_posted``    the request is visible in a channel (``decision_id``, ``channel``, ``ref``:
                   e.g. ``{"channel": "C…", "ts": "…"}`` for Slack, ``blocks``)
``wait_closed``    nobody waits any more (``decision_id``, ``outcome``: executed, rejected,
                   execution_refused, superseded, …)
``reply_received`` a human reply or button click arrived (``key``: ``msg:<ts>``,
                   ``action:<action_ts>:<user>``, ``view:<view id>``; ``user``, ``text``, ``source``)
``reply_consumed`` that reply was handed to the approval rules (``key``)
``outbox_queued``  a call to Slack or Jira that must happen (``op_id``, ``integration``, ``op``,
                   ``payload``, ``dedupe``)
``outbox_done``    that call succeeded, or failed for good (``op_id``, ``result``)
``integration_error`` a call failed (``integration``, ``operation``, ``error``, ``retry_in``)
``ticket_linked``  the incident's ticket (``system``: jira or local, ``key``, ``url``)
``ticket_creating`` a ticket is about to be created in ``system`` (a restart that finds this
                   without a ``ticket_linked`` knows the create may have happened)
=================  ==========================================================================

None of these kinds starts with ``approval_`` (the pipeline's own approval outcomes) and none
carries a ``state`` field, so ``incident_state.current_state`` never mistakes one for a state.

Exactly once: a reply is recorded as received once per ``key`` (a Slack message ts seen by the
poller and by Socket Mode is one reply), and ``DurableApprovals.poll`` applies it, records the
pipeline's ``approval_*`` event and marks it consumed in one store transaction. A restarted
governor (new channel, new ``ApprovalState``, same store) therefore neither loses nor repeats a
reply, resumes on the same Slack thread (``wait_posted``), and never runs an action twice:
``execute_once`` looks for the decision in ``action_executions`` first.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .approvals import ApprovalPolicy, ApprovalSession
from .errors import AuditWriteError, GovernorError, StoreError
from .incident_state import NO_EXECUTION_STATES, current_state
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
from .ports import ApprovalChannel, AuditSink, Store, Ticket, TicketPort

WAIT_OPENED = "wait_opened"
WAIT_POSTED = "wait_posted"
WAIT_CLOSED = "wait_closed"
REPLY_RECEIVED = "reply_received"
REPLY_CONSUMED = "reply_consumed"
OUTBOX_QUEUED = "outbox_queued"
OUTBOX_DONE = "outbox_done"
INTEGRATION_ERROR = "integration_error"
TICKET_LINKED = "ticket_linked"
TICKET_CREATING = "ticket_creating"
KINDS = (WAIT_OPENED, WAIT_POSTED, WAIT_CLOSED, REPLY_RECEIVED, REPLY_CONSUMED, OUTBOX_QUEUED, OUTBOX_DONE,
         INTEGRATION_ERROR, TICKET_LINKED, TICKET_CREATING)
APPROVAL_KINDS = ("approval_accepted", "approval_refused", "approval_ignored", "approval_unauthorized",
                  "approval_invalid")
# Cross-incident reads ask for at most this many records of a kind (far above any real backlog).
SCAN_LIMIT = 100_000
EVENTS = "workflow_events"


def _now() -> datetime:
    return datetime.now(UTC)


def events_of_kind(store: Store, kinds: str | Iterable[str], incident_id: str | None = None) -> list[dict[str, Any]]:
    """``workflow_events`` of some kinds, in insertion order (the store filters by kind)."""
    wanted = [kinds] if isinstance(kinds, str) else list(kinds)
    return store.events(EVENTS, incident_id, limit=SCAN_LIMIT, kind=wanted)


@dataclass(frozen=True)
class Reply:
    """One human reply, as a channel received it. ``key`` identifies it across restarts."""

    incident_id: str
    key: str
    user: str
    text: str
    source: str


def take_replies(channel: Any, incident_id: str) -> list[tuple[str, str]]:
    """``ApprovalChannel.replies`` for channels that track replies durably: every pending reply,
    acknowledged as it is handed out (callers that need exactly-once across a crash use
    ``pending_replies`` and ``ack`` inside their own transaction instead)."""
    out = []
    for reply in channel.pending_replies(incident_id):
        channel.ack(incident_id, reply.key)
        out.append((reply.user, reply.text))
    return out


@dataclass(frozen=True)
class OutboxOp:
    """A call to an integration that has to happen, retried until it does."""

    op_id: str
    integration: str
    op: str
    incident_id: str | None
    payload: dict[str, Any]


class ApprovalState:
    """Reads and writes the bookkeeping records above. Thread-safe; cheap per-incident reads.

    Args:
        store: where the records live (``workflow_events``).
        audit: optional audit trail; replies, posts, closes, tickets and integration errors are
            written there too (the outbox and snapshots are not: they are mechanics).
    """

    AUDITED = frozenset({WAIT_POSTED, WAIT_CLOSED, REPLY_RECEIVED, INTEGRATION_ERROR, TICKET_LINKED})

    def __init__(self, store: Store, *, audit: AuditSink | None = None) -> None:
        self.store = store
        self.audit = audit
        self._lock = threading.RLock()
        self._outbox: dict[str, dict[str, OutboxOp]] = {}  # integration -> pending ops (loaded lazily)
        self._outbox_dedupe: dict[str, dict[str, str]] = {}  # integration -> dedupe key -> op_id

    # --- plumbing ---------------------------------------------------------------------------

    @contextmanager
    def _tx(self) -> Iterator[None]:
        """Check-then-append under the store's transaction first, then this object's lock: every
        thread takes them in this order (the Socket Mode listener and the poller included)."""
        with self.store.atomic(), self._lock:
            yield

    def _append(self, kind: str, incident_id: str | None, **fields: Any) -> dict[str, Any]:
        doc: dict[str, Any] = {"kind": kind, "incident_id": incident_id, **fields, "at": _now().isoformat()}
        if self.audit is not None and kind in self.AUDITED:
            self.audit.record("workflow_events", {k: v for k, v in doc.items() if k != "blocks"})
        doc["id"] = self.store.append_event(EVENTS, doc)
        return doc

    def _events(self, kinds: str | Iterable[str], incident_id: str | None = None) -> list[dict[str, Any]]:
        return events_of_kind(self.store, kinds, incident_id)

    # --- waits ------------------------------------------------------------------------------

    def open_wait(
        self,
        incident_id: str,
        decision_id: str,
        *,
        channel: str,
        assessment: Mapping[str, Any],
        message: str,
        ticket: Ticket | None = None,
    ) -> dict[str, Any]:
        """Record that the incident waits for a human on this decision (idempotent)."""
        with self._tx():
            current = self.wait_for(incident_id)
            if current is not None and current["decision_id"] == decision_id:
                return current
            if current is not None:
                self.close_wait(incident_id, current["decision_id"], "superseded")
            return self._append(WAIT_OPENED, incident_id, decision_id=decision_id, channel=channel,
                                message=message, ticket=ticket.model_dump(mode="json") if ticket else None,
                                assessment=dict(assessment))

    def close_wait(self, incident_id: str, decision_id: str, outcome: str, detail: str = "") -> None:
        with self._tx():
            if any(e.get("decision_id") == decision_id for e in self._events(WAIT_CLOSED, incident_id)):
                return
            self._append(WAIT_CLOSED, incident_id, decision_id=decision_id, outcome=outcome, detail=detail)

    def wait_for(self, incident_id: str) -> dict[str, Any] | None:
        """The incident's open wait (the latest ``wait_opened`` not closed), or ``None``."""
        events = self._events((WAIT_OPENED, WAIT_CLOSED), incident_id)
        closed = {e.get("decision_id") for e in events if e["kind"] == WAIT_CLOSED}
        opened = [e for e in events if e["kind"] == WAIT_OPENED and e.get("decision_id") not in closed]
        return opened[-1] if opened else None

    def open_waits(self) -> list[dict[str, Any]]:
        """Every open wait, oldest first (what a restarted governor resumes)."""
        events = self._events((WAIT_OPENED, WAIT_CLOSED))
        closed = {(e.get("incident_id"), e.get("decision_id")) for e in events if e["kind"] == WAIT_CLOSED}
        latest: dict[str, dict[str, Any]] = {}
        for e in events:
            if e["kind"] == WAIT_OPENED and (e.get("incident_id"), e.get("decision_id")) not in closed:
                latest.pop(str(e["incident_id"]), None)
                latest[str(e["incident_id"])] = e
        return list(latest.values())

    def record_posted(
        self, incident_id: str, decision_id: str, *, channel: str, ref: Mapping[str, Any],
        blocks: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        return self._append(WAIT_POSTED, incident_id, decision_id=decision_id, channel=channel, ref=dict(ref),
                            blocks=blocks or [])

    def posted(self, incident_id: str, channel: str | None = None) -> dict[str, Any] | None:
        """The latest ``wait_posted`` record of the incident (on ``channel`` if given)."""
        posts = [e for e in self._events(WAIT_POSTED, incident_id) if channel is None or e.get("channel") == channel]
        return posts[-1] if posts else None

    def all_posted(self, channel: str) -> list[dict[str, Any]]:
        return [e for e in self._events(WAIT_POSTED) if e.get("channel") == channel]

    # --- replies ----------------------------------------------------------------------------

    def receive(self, incident_id: str, key: str, *, user: str, text: str, source: str) -> bool:
        """Record a reply once per ``key``; False when it was already received."""
        with self._tx():
            if any(e.get("key") == key for e in self._events(REPLY_RECEIVED, incident_id)):
                return False
            self._append(REPLY_RECEIVED, incident_id, key=key, user=user, text=text, source=source)
            return True

    def unconsumed(self, incident_id: str) -> list[Reply]:
        """Replies received and not yet handed to the approval rules, in arrival order."""
        events = self._events((REPLY_RECEIVED, REPLY_CONSUMED), incident_id)
        consumed = {e.get("key") for e in events if e["kind"] == REPLY_CONSUMED}
        return [Reply(incident_id, str(e["key"]), str(e.get("user", "")), str(e.get("text", "")),
                      str(e.get("source", "")))
                for e in events if e["kind"] == REPLY_RECEIVED and e.get("key") not in consumed]

    def consume(self, incident_id: str, key: str) -> None:
        with self._tx():
            if any(e.get("key") == key for e in self._events(REPLY_CONSUMED, incident_id)):
                return
            self._append(REPLY_CONSUMED, incident_id, key=key)

    def received_keys(self, incident_id: str) -> set[str]:
        return {str(e.get("key")) for e in self._events(REPLY_RECEIVED, incident_id)}

    # --- outbox -----------------------------------------------------------------------------

    def _load_outbox(self, integration: str) -> dict[str, OutboxOp]:
        if integration not in self._outbox:
            pending: dict[str, OutboxOp] = {}
            dedupe: dict[str, str] = {}
            for e in self._events((OUTBOX_QUEUED, OUTBOX_DONE)):
                if e["kind"] == OUTBOX_QUEUED and e.get("integration") == integration:
                    op = OutboxOp(str(e["op_id"]), integration, str(e["op"]), e.get("incident_id"),
                                  dict(e.get("payload") or {}))
                    pending[op.op_id] = op
                    if e.get("dedupe"):
                        dedupe[str(e["dedupe"])] = op.op_id
                elif e["kind"] == OUTBOX_DONE:
                    pending.pop(str(e.get("op_id")), None)
            self._outbox[integration] = pending
            self._outbox_dedupe[integration] = dedupe
        return self._outbox[integration]

    def queue(
        self, integration: str, op: str, incident_id: str | None, payload: Mapping[str, Any], *,
        dedupe: str | None = None,
    ) -> OutboxOp:
        """Queue a call; with ``dedupe``, a call already queued (or done) under that key is returned
        instead of a second one."""
        with self._tx():
            pending = self._load_outbox(integration)
            if dedupe and dedupe in self._outbox_dedupe[integration]:
                op_id = self._outbox_dedupe[integration][dedupe]
                return pending.get(op_id) or OutboxOp(op_id, integration, op, incident_id, dict(payload))
            item = OutboxOp(f"op-{uuid.uuid4().hex[:16]}", integration, op, incident_id, dict(payload))
            self._append(OUTBOX_QUEUED, incident_id, op_id=item.op_id, integration=integration, op=op,
                         payload=item.payload, dedupe=dedupe)
            pending[item.op_id] = item
            if dedupe:
                self._outbox_dedupe[integration][dedupe] = item.op_id
            return item

    def pending_ops(self, integration: str) -> list[OutboxOp]:
        """Calls still to make, in the order they were queued."""
        with self._tx():
            return list(self._load_outbox(integration).values())

    def op_done(self, op: OutboxOp, result: Mapping[str, Any] | None = None) -> None:
        with self._tx():
            pending = self._load_outbox(op.integration)
            if op.op_id not in pending:
                return
            self._append(OUTBOX_DONE, op.incident_id, op_id=op.op_id, integration=op.integration,
                         result=dict(result or {}))
            pending.pop(op.op_id, None)

    def is_done(self, integration: str, dedupe: str) -> bool:
        with self._tx():
            self._load_outbox(integration)
            op_id = self._outbox_dedupe[integration].get(dedupe)
            return op_id is not None and op_id not in self._outbox[integration]

    # --- errors, tickets, executions ----------------------------------------------------------

    def record_error(
        self, integration: str, operation: str, error: str, *, incident_id: str | None = None,
        retry_in: float | None = None,
    ) -> None:
        """Record a failed call. Best effort: failing to record a failure never raises."""
        try:
            self._append(INTEGRATION_ERROR, incident_id, integration=integration, operation=operation,
                         error=error, retry_in=retry_in)
        except (AuditWriteError, StoreError):
            pass

    def link_ticket(self, incident_id: str, *, system: str, key: str, url: str | None) -> None:
        with self._tx():
            if self.ticket(incident_id, system) is None:
                self._append(TICKET_LINKED, incident_id, system=system, key=key, url=url)

    def ticket_creating(self, incident_id: str, system: str) -> dict[str, Any] | None:
        """Record (on the first call) and return the intent to create the incident's ticket in
        ``system``: the record with its ``at``, the earliest if there are several."""
        with self._tx():
            mine = [e for e in self._events(TICKET_CREATING, incident_id) if e.get("system") == system]
            return mine[0] if mine else self._append(TICKET_CREATING, incident_id, system=system)

    def creating_since(self, incident_id: str, system: str) -> datetime | None:
        """When a create of the incident's ticket in ``system`` was started, if one was."""
        mine = [e for e in self._events(TICKET_CREATING, incident_id) if e.get("system") == system]
        return datetime.fromisoformat(str(mine[0]["at"])) if mine else None

    def ticket(self, incident_id: str, system: str | None = None) -> dict[str, Any] | None:
        links = [e for e in self._events(TICKET_LINKED, incident_id) if system is None or e.get("system") == system]
        return links[0] if links else None

    def ticket_by_key(self, key: str) -> dict[str, Any] | None:
        links = [e for e in self._events(TICKET_LINKED) if e.get("key") == key]
        return links[0] if links else None

    def execution_for(self, incident_id: str, decision_id: str) -> dict[str, Any] | None:
        """The ``action_executions`` record of this decision, unless the executor refused it."""
        for doc in self.store.events("action_executions", incident_id, limit=SCAN_LIMIT):
            if doc.get("decision_id") == decision_id and doc.get("status") != "refused":
                return doc
        return None


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
    session = pipeline.approval_session(a, policy)
    for e in events_of_kind(pipeline.store, APPROVAL_KINDS, a.incident.id):
        if e.get("decision_id") == a.gate.decision_id:
            if e.get("kind") == "approval_refused" and not session.refusal_text and e.get("reason"):
                session.refusal_text = str(e["reason"])
            at = datetime.fromisoformat(e["at"]) if e.get("at") else None
            session.apply(str(e.get("user", "")), str(e.get("text", "")), at=at)
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
            w = Waiting(a.incident.id, a.gate.decision_id, a, self.pipeline.approval_session(a, self.policy),
                        message, ticket)
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
            except GovernorError as exc:
                self.state.record_error(self.channel.name, "poll", _short(exc), incident_id=w.incident_id)
        return progress

    def _poll_one(self, w: Waiting) -> list[Progress]:
        out: list[Progress] = []
        for reply in self._replies(w.incident_id):
            with self._lock:
                if w.incident_id not in self._waiting:
                    break
                try:
                    with self.pipeline.store.atomic():
                        event = w.session.apply(reply.user, reply.text, at=_now())
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

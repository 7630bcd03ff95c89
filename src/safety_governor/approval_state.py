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
``runbook_review_requested`` a shell asked the governor to approve or revoke a learned runbook
                   (``request_id``, ``runbook_id``, ``action``, ``os_account``, ``channel``, ``reason``)
``runbook_review_done`` the governor applied or refused that request (``request_id``, ``outcome``:
                   applied, refused or failed; ``user``, ``detail``)
=================  ==========================================================================

None of these kinds starts with ``approval_`` (the pipeline's own approval outcomes) and none
carries a ``state`` field, so ``incident_state.current_state`` never mistakes one for a state.

Exactly once: a reply is recorded as received once per ``key`` (a Slack message ts seen by the
poller and by Socket Mode is one reply), and ``DurableApprovals.poll`` applies it, records the
pipeline's ``approval_*`` event and marks it consumed in one store transaction. A restarted
governor (new channel, new ``ApprovalState``, same store) therefore neither loses nor repeats a
reply, resumes on the same Slack thread (``wait_posted``), and never runs an action twice:
``execute_once`` looks for the decision in ``action_executions`` first.

The driver over these records (``DurableApprovals``) and the assessment snapshot live in
``durable_approvals.py``.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .errors import AuditWriteError, StoreError
from .ports import AuditSink, Store, Ticket

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
REVIEW_REQUESTED = "runbook_review_requested"
REVIEW_DONE = "runbook_review_done"
KINDS = (WAIT_OPENED, WAIT_POSTED, WAIT_CLOSED, REPLY_RECEIVED, REPLY_CONSUMED, OUTBOX_QUEUED, OUTBOX_DONE,
         INTEGRATION_ERROR, TICKET_LINKED, TICKET_CREATING, REVIEW_REQUESTED, REVIEW_DONE)
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
    decision_id: str | None = None  # the decision whose wait was open when it arrived
    at: datetime | None = None  # when it arrived (its age decides expiry, not when it is applied)

    @property
    def channel(self) -> str:
        return channel_of(self.source, self.key)


def channel_of(source: str, key: str = "") -> str:
    """The audit's channel name for a reply: tui, cli, slack or scenario."""
    if source == "cli" or key.startswith("cli:"):
        return "cli"
    if source.startswith("slack") or key.startswith(("msg:", "action:", "view:")):
        return "slack"
    if source in ("local-inbox", "tui") or key.startswith("local:"):
        return "tui"
    return source or "scenario"


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

    # A runbook review request is audited by the governor that picks it up (a shell does not write
    # into the governor's hash-chained trail), then its outcome.
    AUDITED = frozenset({WAIT_POSTED, WAIT_CLOSED, REPLY_RECEIVED, INTEGRATION_ERROR, TICKET_LINKED, REVIEW_DONE})

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

    def receive(
        self, incident_id: str, key: str, *, user: str, text: str, source: str, decision_id: str | None = None,
        **extra: Any,
    ) -> bool:
        """Record a reply once per ``key``; False when it was already received. It is bound to
        ``decision_id``, by default the decision whose wait is open now (a reply cannot drift onto
        a later decision of the same incident)."""
        with self._tx():
            if any(e.get("key") == key for e in self._events(REPLY_RECEIVED, incident_id)):
                return False
            if decision_id is None:
                decision_id = (self.wait_for(incident_id) or {}).get("decision_id")
            self._append(REPLY_RECEIVED, incident_id, key=key, user=user, text=text, source=source,
                         decision_id=decision_id, **extra)
            return True

    def unconsumed(self, incident_id: str) -> list[Reply]:
        """Replies received and not yet handed to the approval rules, in arrival order."""
        events = self._events((REPLY_RECEIVED, REPLY_CONSUMED), incident_id)
        consumed = {e.get("key") for e in events if e["kind"] == REPLY_CONSUMED}
        return [Reply(incident_id, str(e["key"]), str(e.get("user", "")), str(e.get("text", "")),
                      str(e.get("source", "")), e.get("decision_id"),
                      datetime.fromisoformat(str(e["at"])) if e.get("at") else None)
                for e in events if e["kind"] == REPLY_RECEIVED and e.get("key") not in consumed]

    def opened_at(self, incident_id: str, decision_id: str) -> datetime | None:
        """When the wait on ``decision_id`` opened (the start of its approval TTL)."""
        for e in self._events(WAIT_OPENED, incident_id):
            if e.get("decision_id") == decision_id and e.get("at"):
                return datetime.fromisoformat(str(e["at"]))
        return None

    def consume(self, incident_id: str, key: str) -> None:
        with self._tx():
            if any(e.get("key") == key for e in self._events(REPLY_CONSUMED, incident_id)):
                return
            self._append(REPLY_CONSUMED, incident_id, key=key)

    def received_keys(self, incident_id: str) -> set[str]:
        return {str(e.get("key")) for e in self._events(REPLY_RECEIVED, incident_id)}

    # --- runbook reviews asked for from a shell ---------------------------------------------------

    def request_runbook_review(
        self, runbook_id: str, action: str, *, os_account: str, incident_id: str | None, reason: str = "",
        channel: str = "cli",
    ) -> dict[str, Any]:
        """Store a request for the running governor to approve or revoke a learned runbook. It
        carries only the sender's OS account: the governor decides who that is and whether they may."""
        return self._append(REVIEW_REQUESTED, incident_id, request_id=f"rbr-{uuid.uuid4().hex[:16]}",
                            runbook_id=runbook_id, action=action, os_account=os_account, channel=channel,
                            reason=reason)

    def pending_runbook_reviews(self) -> list[dict[str, Any]]:
        """Requests not yet applied or refused, oldest first."""
        events = self._events((REVIEW_REQUESTED, REVIEW_DONE))
        done = {e.get("request_id") for e in events if e["kind"] == REVIEW_DONE}
        return [e for e in events if e["kind"] == REVIEW_REQUESTED and e.get("request_id") not in done]

    def runbook_review_outcome(self, request_id: str) -> dict[str, Any] | None:
        return next((e for e in self._events(REVIEW_DONE) if e.get("request_id") == request_id), None)

    def finish_runbook_review(
        self, request: Mapping[str, Any], outcome: str, *, user: str | None, detail: str
    ) -> bool:
        """Record the outcome of a request once; False when it already has one."""
        with self._tx():
            if self.runbook_review_outcome(str(request["request_id"])) is not None:
                return False
            self._append(REVIEW_DONE, request.get("incident_id"), request_id=request["request_id"],
                         runbook_id=request.get("runbook_id"), action=request.get("action"),
                         os_account=request.get("os_account"), channel=request.get("channel"), outcome=outcome,
                         user=user, detail=detail)
            return True

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

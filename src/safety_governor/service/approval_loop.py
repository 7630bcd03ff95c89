"""The slack worker: the approval loop over the ``ApprovalChannel`` port (the local inbox
offline, Slack when configured). Each reply goes through the core's ``ApprovalSession`` rules, is
audited and is acknowledged in the same store transaction (exactly once); it also approves
learned runbooks on request (the ``l`` key) and shows integration outages."""

from __future__ import annotations

import queue
import time
from datetime import datetime
from typing import Any

from ..approvals import parse_command
from ..errors import GovernorError, InputError
from ..models import ApprovalEvent
from .board import REPLY_STATES, WorkItem, utcnow
from .durability import ack_reply, close_wait, pending_replies
from .events import IntegrationChanged, ThreadEntry
from .lifecycle import move
from .records import kb_metrics, record_incident_state, update_channel, write_run_record
from .worker import Worker, WorkerContext


class SlackWorker(Worker):
    """Reads replies from the approval channel and applies the core's approval rules to them.

    Each reply is applied, recorded (``pipeline.record_approval``) and acknowledged on the channel
    in one store transaction; when that fails, the session forgets the reply and the channel
    keeps it (Slack re-delivers it on the next step). Between replies it drives the retries of
    queued ticket calls, shows outages (``IntegrationWatch``) and approves learned runbooks
    asked for with the ``l`` key.
    """

    role = "slack"

    def __init__(self, ctx: WorkerContext) -> None:
        super().__init__(ctx)
        self.watch = IntegrationWatch(ctx)

    def step(self) -> None:
        ctx = self.ctx
        self.review_runbooks()
        flush = getattr(ctx.tickets, "flush", None)
        if callable(flush):
            try:
                flush()
            except GovernorError as exc:  # recorded by the adapter; shown by the watch below
                ctx.logger.warning("ticket retries: %s", exc)
        for item in ctx.board.awaiting_replies():
            for reply in pending_replies(ctx.channel, item.incident.id):
                self.handle(item, reply.user, reply.text, key=reply.key, channel=reply.channel,
                            decision_id=reply.decision_id, at=reply.at)
            self.expire_if_due(item)
        self.watch.check()
        wait = getattr(ctx.channel, "wait", None)
        if callable(wait):
            wait(ctx.config.approvals_interval)
        else:
            ctx.stop.wait(ctx.config.approvals_interval)

    def handle(self, item: WorkItem, user: str, text: str, *, key: str | None = None, channel: str | None = None,
               decision_id: str | None = None, at: datetime | None = None) -> ApprovalEvent | None:
        """Apply one reply. ``key`` is the channel's id for it, acknowledged with the record;
        ``decision_id`` the decision it answers and ``at`` when it arrived (for the TTL)."""
        ctx = self.ctx
        pause: str | None = None
        with item.lock:
            session, a = item.session, item.assessment
            if session is None or a is None:
                return None
            before = (session.state, session.authorised_by, session.override_reason, len(session.events),
                      dict(session.signers))
            try:
                with item.pipeline.store.atomic():
                    if item.state in REPLY_STATES:
                        event = session.apply(user, text, at=at or utcnow(), decision_id=decision_id,
                                              channel=channel)
                    else:
                        # Too late to change anything; still recorded, like every reply.
                        event = ApprovalEvent(user=user, text=text, command=parse_command(text)[0], outcome="ignored",
                                              reason=f"arrived after the incident moved to {item.state}", at=utcnow())
                        session.events.append(event)
                    item.pipeline.record_approval(a, session)
                    if key is not None:
                        ack_reply(ctx.channel, item.incident.id, key)
            except BaseException:
                # Rolled back: the session forgets the reply as well (the channel still has it).
                session.state, session.authorised_by, session.override_reason = before[:3]
                del session.events[before[3]:]
                session.signers = before[4]
                raise
            item.thread.append(ThreadEntry(at=event.at or utcnow(), author=user, text=text, kind="reply",
                                           outcome=event.outcome))
            if event.outcome == "expired":
                self._expired(item)
            elif event.outcome == "accepted" and item.state in REPLY_STATES:
                pause = self._transition(item, event)
            elif event.outcome == "refused":
                ctx.metrics(ctx.counters.bump(refusals=1))
                pause = f"{item.label}: APPROVE refused, only FORCE_OVERRIDE <reason> proceeds"
        answer = event.reason or event.outcome
        self._notify(item, answer)
        if item.ticket:
            ctx.tickets.comment(item.ticket.key, f"{user}: {text!r} → {event.outcome}: {answer}")
        level = "warn" if event.outcome in ("refused", "unauthorized", "invalid") else "info"
        ctx.activity("slack", f"{item.label} {user}: {text} → {event.outcome}", level=level,
                     incident_id=item.incident.id)
        ctx.publish(item)
        ctx.board.wake()
        if pause:
            ctx.pauser.pause(pause)
            with item.lock:
                if item.state == "READY_TO_EXECUTE" and item.step is None:
                    item.step, item.due = "execute", time.monotonic()
            ctx.board.wake()
        return event

    # --- learned runbooks (the l key) ------------------------------------------------------

    def review_runbooks(self) -> None:
        while True:
            try:
                incident_id, user = self.ctx.reviews.get_nowait()
            except queue.Empty:
                break
            self.approve_runbook(incident_id, user)
        try:
            for request in self.ctx.approval_state().pending_runbook_reviews():
                self.apply_review_request(request)
        except GovernorError as exc:  # the store cannot answer now: the requests wait for the next tick
            self.ctx.activity("slack", f"runbook review requests: {exc}", level="warn")

    def apply_review_request(self, request: dict[str, Any]) -> str:
        """Apply (or refuse) one approve/revoke request stored by a shell, exactly once: the
        sender's OS account is authorised by THIS governor's approvers file, and the change and its
        outcome record are one transaction. Returns the outcome (applied, refused, failed)."""
        from ..approvals import OS_PREFIX
        from ..learning import approve_runbook, knowledge_base_counts, revoke_runbook

        ctx = self.ctx
        state = ctx.approval_state()
        policy = ctx.approvals
        principal = f"{OS_PREFIX}{request.get('os_account', '')}"
        runbook_id, action = str(request.get("runbook_id")), str(request.get("action"))
        doc: dict[str, Any] | None = None
        with ctx.store.atomic():
            if state.runbook_review_outcome(str(request["request_id"])) is not None:
                return "done"
            if ctx.audit is not None:
                ctx.audit.record("workflow_events", {k: v for k, v in request.items() if k != "id"})
            if policy is None or not policy.may_decide(principal):
                mapped = policy.user_of(principal) if policy is not None else principal
                user, outcome = None, "refused"
                detail = (f"OS account {request.get('os_account')!r} ({mapped}) is not a configured approver "
                          "in this governor's approvers file")
            else:
                user = policy.user_of(principal)
                try:
                    with ctx.store.atomic():
                        if action == "approve":
                            doc = approve_runbook(ctx.store, runbook_id, user, audit=ctx.audit)
                        else:
                            doc = revoke_runbook(ctx.store, runbook_id, user, reason=str(request.get("reason") or ""),
                                                 audit=ctx.audit)
                    outcome, detail = "applied", f"{runbook_id} is now {doc['status']} (by {user})"
                except InputError as exc:  # not found, or reviewed meanwhile
                    outcome, detail = "failed", str(exc)
            state.finish_runbook_review(request, outcome, user=user, detail=detail)
        ctx.activity("slack", f"{'✓' if outcome == 'applied' else '✗'} runbook {action} from the shell "
                              f"(OS account {request.get('os_account')}): {detail}",
                     level="info" if outcome == "applied" else "warn", incident_id=request.get("incident_id"))
        if doc is not None:
            item = ctx.board.get(str(doc.get("incident_id"))) if doc.get("incident_id") else None
            if item is not None and (item.learned is None or item.learned.get("id") == doc["id"]):
                item.learned = doc
                ctx.publish(item)
            ctx.metrics(ctx.counters.set(**kb_metrics(knowledge_base_counts(ctx.store))))
        return outcome

    def approve_runbook(self, incident_id: str, user: str) -> list[dict[str, Any]]:
        """Approve the learned runbook(s) of the incident waiting for review, as ``user``, when
        ``user`` may decide on that incident (audited either way); returns the approved entries."""
        from ..learning import approve_runbook, knowledge_base_counts, review_queue

        ctx = self.ctx
        item = ctx.board.get(incident_id)
        if item is None:
            ctx.activity("slack", f"runbook review: {incident_id} is not on the board", level="warn")
            return []
        store = item.pipeline.store
        pending = [d for d in review_queue(store, limit=10_000) if d.get("incident_id") == incident_id]
        if not pending:
            ctx.activity("slack", f"{item.label}: no learned runbook waits for review", level="warn",
                         incident_id=incident_id)
            return []
        if not item.approvals.may_decide(user):
            reason = f"{user} is not a configured approver"
            if ctx.audit is not None:
                ctx.audit.record("workflow_events", {
                    "kind": "runbook_review_refused", "incident_id": incident_id,
                    "runbook_ids": [d["id"] for d in pending], "user": user, "reason": reason,
                    "at": utcnow().isoformat()})
            ctx.activity("slack", f"✗ {item.label} runbook approval refused: {reason}", level="warn",
                         incident_id=incident_id)
            return []
        user = item.approvals.user_of(user)  # os:<account> -> the configured user it maps to
        approved = []
        for doc in pending:
            try:
                approved.append(approve_runbook(store, str(doc["id"]), user, audit=ctx.audit))
            except InputError as exc:  # reviewed meanwhile (the CLI, another dashboard)
                ctx.activity("slack", f"{item.label}: {exc}", level="warn", incident_id=incident_id)
        for doc in approved:
            if item.learned is None or item.learned.get("id") == doc["id"]:
                item.learned = doc
            ctx.activity("slack", f"{item.label} runbook {doc['id']} ({doc.get('recommended_action')}) approved by "
                                  f"{user}: retrievable from now on", incident_id=incident_id)
        ctx.metrics(ctx.counters.set(**kb_metrics(knowledge_base_counts(ctx.store))))
        ctx.publish(item)
        return approved

    def expire_if_due(self, item: WorkItem) -> None:
        """Close a wait nobody authorised within the approval TTL: nothing runs."""
        with item.lock:
            session = item.session
            if session is None or item.state not in REPLY_STATES or not session.expired_at(utcnow()):
                return
            if not session.expire():
                return
        self._expired(item)

    def _expired(self, item: WorkItem) -> None:
        ctx = self.ctx
        ttl = item.approvals.ttl_seconds or 0
        detail = f"no authorised reply within {ttl:.0f} s: nothing runs, a fresh assessment is needed"
        if ctx.audit is not None and item.assessment is not None:
            ctx.audit.record("workflow_events", {"kind": "approval_expired", "incident_id": item.incident.id,
                                                 "decision_id": item.assessment.gate.decision_id,
                                                 "ttl_seconds": ttl, "at": utcnow().isoformat()})
        move(ctx, item, "ESCALATED", f"approval expired: {detail}")
        record_incident_state(ctx, item, "expired", detail)
        update_channel(ctx, item, "expired", final=True)
        close_wait(ctx, item, "expired", detail)
        self._notify(item, f"the approval wait expired: {detail}")
        ctx.publish(item)

    def _transition(self, item: WorkItem, event: ApprovalEvent) -> str | None:
        ctx = self.ctx
        if event.command in ("APPROVE", "FORCE_OVERRIDE") and not (item.session and item.session.may_execute):
            return None  # a role signed; others are still missing (the thread says which)
        if event.command in ("APPROVE", "FORCE_OVERRIDE"):
            move(ctx, item, "READY_TO_EXECUTE", f"{event.command} by {event.user}", step="execute")
            if event.command == "FORCE_OVERRIDE":
                ctx.metrics(ctx.counters.bump(overrides=1))
                if ctx.pauser.enabled:
                    item.step = None  # a key moment: the execution waits for the pause to end
                return f"{item.label}: FORCE_OVERRIDE by {event.user} accepted, logged permanently"
            ctx.metrics(ctx.counters.bump(approved=1))
        elif event.command == "HOLD":
            move(ctx, item, "HELD", f"HOLD by {event.user}")
            ctx.metrics(ctx.counters.bump(held=1))
            record_incident_state(ctx, item, "held", f"HOLD by {event.user}")
        elif event.command == "REJECT":
            move(ctx, item, "REJECTED", f"REJECT by {event.user}: {event.text}")
            ctx.metrics(ctx.counters.bump(rejected=1))
            if item.ticket:
                ctx.tickets.resolve(item.ticket.key, f"Rejected by {event.user}: {event.text}")
            update_channel(ctx, item, f"rejected by {event.user}", final=True)
            close_wait(ctx, item, "rejected", f"rejected by {event.user}")
            write_run_record(ctx, item)
        return None

    def _notify(self, item: WorkItem, text: str) -> None:
        item.thread.append(ThreadEntry(at=utcnow(), author="governor", text=text, kind="notify"))
        try:
            self.ctx.channel.notify(item.incident.id, text)
        except GovernorError as exc:
            self.ctx.activity("slack", f"approval channel: {exc}", level="warn")


class IntegrationWatch:
    """Shows an outage of the approval channel or the ticket system, and its end, once each."""

    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        self._last: dict[str, str | None] = {}

    def check(self) -> None:
        for role, thing, consequence in (
            ("approvals", self.ctx.channel, "incidents stay pending: nothing executes without a reply"),
            ("tickets", self.ctx.tickets, "tickets are kept locally meanwhile"),
        ):
            error = getattr(thing, "error", None)
            error = error if isinstance(error, str) and error else None
            before = self._last.get(role)
            if error == before:
                continue
            self._last[role] = error
            name = str(getattr(thing, "name", role))
            if error is not None:
                self.ctx.bus.post(IntegrationChanged(role, False, f"{error} · retrying"))
                self.ctx.activity("slack" if role == "approvals" else "agent",
                                  f"✗ {name} unavailable: {error}; retried later, {consequence}", level="error")
            elif before is not None:
                self.ctx.bus.post(IntegrationChanged(role, True, "reachable again"))
                self.ctx.activity("slack" if role == "approvals" else "agent", f"✓ {name} reachable again")

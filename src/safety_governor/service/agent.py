"""The agent worker: drives each incident through the pipeline, one step at a time: ticket →
plan → stress → compress → gate → notify → execute → verify → learn."""

from __future__ import annotations

import inspect
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable
from typing import Any

from ..errors import GovernorError
from ..models import ExecutionRecord
from ..verification import VerificationResult
from .board import WorkItem, utcnow
from .durability import close_wait, open_wait, prior_execution
from .events import ThreadEntry
from .records import approval_message, kb_metrics, record_incident_state, update_channel, write_run_record
from .lifecycle import allowed, move
from .worker import Stopping, Worker, WorkerContext


def _call_supported(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``fn`` with the keyword arguments it accepts (optional extras are dropped)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return fn(*args, **kwargs)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return fn(*args, **kwargs)
    return fn(*args, **{k: v for k, v in kwargs.items() if k in params})


class AgentWorker(Worker):
    """Drives the incidents through the pipeline, one step at a time, oldest due first.

    The worker thread is a dispatcher: it hands each due step to a pool of
    ``config.agent_concurrency`` threads, so agent phases of different incidents run
    concurrently. An incident is busy while its step runs, so its own steps stay in order. No
    step waits: verification looks once and comes back due at the next poll, and a reply makes
    an incident due again (the approval loop wakes the board).
    """

    role = "agent"

    def __init__(self, ctx: WorkerContext) -> None:
        super().__init__(ctx)
        self.limit = max(1, ctx.config.agent_concurrency)
        self.pool = ThreadPoolExecutor(max_workers=self.limit, thread_name_prefix="governor-agent-step")
        self._running = 0
        self._lock = threading.Lock()

    @property
    def running(self) -> int:
        with self._lock:
            return self._running

    def step(self) -> None:
        board = self.ctx.board
        while self.running < self.limit and not self.ctx.stop.is_set() and not self.ctx.draining.is_set():
            item = board.take_due(time.monotonic())
            if item is None:
                break
            with self._lock:
                self._running += 1
            self.pool.submit(self.run_step, item)
        # Full: wait for a step to finish; otherwise until the next step falls due.
        board.wait(0.5, due_only=self.running < self.limit)

    def run_due(self) -> int:
        """Run the steps due now (concurrently, up to the limit) and return once they finished;
        returns how many ran. Waits for the next due step (at most 0.5 s) when none is due.
        The synchronous form of ``step``, for tests and one-shot drivers."""
        board = self.ctx.board
        taken: list[WorkItem] = []  # all taken before any runs: one step per incident per call
        while len(taken) < self.limit and (item := board.take_due(time.monotonic())) is not None:
            taken.append(item)
        futures = []
        for item in taken:
            with self._lock:
                self._running += 1
            futures.append(self.pool.submit(self.run_step, item))
        if not futures:
            board.wait(0.5)
        for future in futures:
            future.result()
        return len(futures)

    def run_step(self, item: WorkItem) -> None:
        try:
            self.advance(item)
            if item.error:
                item.error = None
                self.ctx.publish(item)
        except Stopping:
            pass  # stopping: the incident stays where it is, durable
        except Exception as exc:  # the incident stays on the board, with its error, and is retried
            self.fail(item, exc)
        finally:
            with self._lock:
                self._running -= 1
            self.ctx.board.release(item)

    def close(self) -> None:
        # Running steps finish (they never wait); steps not started stay due on the board.
        self.pool.shutdown(wait=True, cancel_futures=True)

    def advance(self, item: WorkItem) -> None:
        step = item.step
        if step == "analyze":
            self.analyze(item)
        elif step == "execute":
            self.execute(item)
        elif step == "verify":
            self.verify(item)
        elif step == "learn":
            self.learn(item)

    # --- steps ---------------------------------------------------------------------------

    def analyze(self, item: WorkItem) -> None:
        ctx, inc = self.ctx, item.incident
        if item.ticket is None:
            item.ticket = ctx.tickets.create(inc)
            ctx.activity("agent", f"{item.ticket.key} opened for {inc.id}", incident_id=inc.id)
        move(ctx, item, "ANALYZING", "assessing", step="analyze")
        ctx.publish(item)
        a = item.pipeline.assess(inc)
        item.pipeline.record_decision(a)  # fail closed: no decision record, nothing further
        item.assessment = a
        item.session = item.pipeline.approval_session(a, item.approvals, decided_at=utcnow())
        preview = getattr(item.pipeline.executor, "preview", None)
        if preview is not None and a.gate.proposed_action:
            try:
                item.preview = str(preview(inc, a.gate))
            except GovernorError as exc:
                item.preview = f"no preview: {exc}"
        g = a.gate
        rules = ", ".join(g.rule_ids) or "all checks passed"
        ctx.tickets.comment(item.ticket.key, f"Gate {g.decision} for {g.proposed_action or '(no plan)'} ({rules}); "
                                             f"confidence {g.confidence_initial:.1f} → {g.confidence_final:.1f}; "
                                             f"decision {g.decision_id}")
        if g.decision == "execute":
            item.due = time.monotonic() + ctx.config.hold_seconds
            self.request(item)  # the hold notice first: nobody can HOLD what they were not told about
            move(ctx, item, "READY_TO_EXECUTE", f"gate passed {g.proposed_action}", step="execute", due=item.due)
            ctx.activity("agent", f"{item.label} gate PASSED {g.proposed_action}: runs in "
                                  f"{ctx.config.hold_seconds:g}s unless HOLD", incident_id=inc.id)
            ctx.publish(item)
            return
        # Fail closed: if the request cannot be posted, the step is retried and nothing runs.
        self.request(item)
        move(ctx, item, "PENDING_APPROVAL", f"gate blocked: {rules}")
        if a.plan is not None:
            ctx.metrics(ctx.counters.bump(unsafe_blocked=1))
        record_incident_state(ctx, item, "pending_approval", f"gate blocked: {rules}")
        ctx.activity("agent", f"{item.label} gate BLOCKED {g.proposed_action or '(no plan)'}: {rules}; "
                              f"needs {g.approval_required.upper()}", level="warn", incident_id=inc.id)
        ctx.publish(item)
        if inc.severity == "critical":
            ctx.pauser.pause(f"{item.label} critical {inc.service}: gate blocked {g.proposed_action}, "
                             "needs FORCE_OVERRIDE")

    def request(self, item: WorkItem) -> None:
        a = item.assessment
        assert a is not None
        message = approval_message(item)
        open_wait(self.ctx, item, message)  # in the store before anyone can see it: a restart finds it
        self.ctx.channel.request(item.incident, a.gate, message=message, ticket=item.ticket)
        item.requested = True
        item.thread.append(ThreadEntry(at=utcnow(), author="governor", text=message, kind="request"))

    def execute(self, item: WorkItem) -> None:
        ctx = self.ctx
        with item.lock:
            session, a = item.session, item.assessment
            if session is None or a is None:
                item.step = None
                return
            if item.execution is None:
                # READY_TO_EXECUTE, or EXECUTING again after a failure before anything ran.
                if item.state not in ("READY_TO_EXECUTE", "EXECUTING") or not session.may_execute:
                    item.step = None  # held or rejected meanwhile: the slack worker owns it now
                    return
                move(ctx, item, "EXECUTING", f"{session.state}: running {a.gate.proposed_action}", step="execute")
        ctx.publish(item)
        if item.execution is None:
            prior = prior_execution(ctx, item)  # ran before a restart (or elsewhere): never twice
            if prior is not None:
                item.execution = prior
                ctx.activity("agent", f"{item.label} decision {prior.decision_id} already executed "
                                      f"({prior.execution_id}); not executed again", level="warn",
                             incident_id=item.incident.id)
            else:
                record = item.pipeline.execute(a, session)
                if record is None:
                    self.escalate(item, "execution refused at the execute-time re-check (see the audit trail)")
                    return
                item.execution = record  # from here on a retry never runs the action again
                if session.state == "auto":
                    ctx.metrics(ctx.counters.bump(auto_executed=1))
                if ctx.production is not None and item.verify_live:
                    effect = ctx.production.apply_action(item.incident.service, record.action)
                    item.effect = str(getattr(effect, "text", "") or "")
        record = item.execution
        text = f"executed {record.action} ({record.mode}, authorised by {record.authorised_by})"
        if item.effect:
            text += f"; simulated production: {item.effect}"
        self.notify(item, text)
        update_channel(ctx, item, text)
        if item.ticket:
            ctx.tickets.comment(item.ticket.key, f"{text}. {record.preview}")
        self.record_state(item, "executed", text)
        ctx.activity("agent", f"{item.label} {text}", incident_id=item.incident.id)
        move(ctx, item, "VERIFYING", text, step="verify")
        ctx.publish(item)

    def verify(self, item: WorkItem) -> None:
        ctx = self.ctx
        record = item.execution
        assert record is not None
        if not item.verify_live:
            item.outcome = "executed (dry run); a replay has no live telemetry to verify against"
            self.resolve(item, item.outcome)
            return
        result = self.look(item, record)
        if result is None:  # not concluded: back at the next poll, nobody waits meanwhile
            item.due = time.monotonic() + ctx.config.verify_poll_seconds
            return
        threshold = result.threshold
        item.verification = result
        before = "?" if result.error_rate_before is None else f"{result.error_rate_before:.1%}"
        after = "?" if result.error_rate_after is None else f"{result.error_rate_after:.1%}"
        if result.resolved and not result.credited:
            # The service was healthy before the action ran: resolved, but nothing is learned.
            item.outcome = f"resolved, not credited to {record.action}: {result.reason}"
            ctx.activity("agent", f"{item.label} {item.outcome}", incident_id=item.incident.id)
            self.resolve(item, item.outcome)
            return
        if result.resolved:
            item.outcome = f"verified: error rate {after} since the fix (baseline {before}, threshold {threshold:.0%})"
            ctx.activity("agent", f"{item.label} {item.outcome}", incident_id=item.incident.id)
            move(ctx, item, "LEARNING", item.outcome, step="learn")
            ctx.publish(item)
            return
        rollback = getattr(result, "rollback_action", None)
        item.outcome = f"not recovered: {result.reason}"
        self.notify(item, f"verification failed: {result.reason}" +
                    (f". Proposed rollback (not run): {rollback}" if rollback else ""))
        self.escalate(item, f"verification failed: error rate still {after}")

    def look(self, item: WorkItem, record: ExecutionRecord) -> VerificationResult | None:
        """One verification poll of ``item`` (its watch starts on the first); the result once
        the watch is over. The pipeline records the verification and the resolved / escalated
        state itself."""
        ctx = self.ctx
        if item.watch is None:
            baseline = item.baseline_error_rate
            threshold = min(0.10, max(0.05, 3 * baseline)) if baseline is not None else 0.10
            options = dict(baseline_error_rate=baseline, threshold=threshold,
                           window_seconds=ctx.config.verify_window_seconds,
                           poll_interval=ctx.config.verify_poll_seconds)
            item.watch = item.pipeline.start_verification(item.assessment, record, **options)
        result: VerificationResult | None = item.watch.poll()
        if result is not None:
            item.watch = None
            item.pipeline.finish_verification(item.assessment, record, result)
            item.states_recorded = True
        return result

    def learn(self, item: WorkItem) -> None:
        ctx = self.ctx
        a, record = item.assessment, item.execution
        assert a is not None and record is not None
        from ..learning import knowledge_base_counts, learn_runbook

        try:
            pipeline_learn = getattr(item.pipeline, "learn", None)
            if callable(pipeline_learn):  # a live agent writes the text; the deterministic text otherwise
                learned = pipeline_learn(a, record, item.verification)
            else:
                learned = _call_supported(learn_runbook, ctx.store, item.incident, a.gate, record,
                                          item.verification, audit=ctx.audit)
            if not learned:
                raise GovernorError("nothing to learn from an unverified resolution")
        except GovernorError as exc:
            item.outcome = f"{item.outcome}; not learned: {exc}"
        else:
            item.learned = learned
            item.outcome = f"{item.outcome}; learned {learned.get('id')} ({learned.get('status')})"
            ctx.activity("agent", f"{item.label} learned runbook {learned.get('id')} for {learned.get('recommended_action')} "
                                  f"({learned.get('status')})", incident_id=item.incident.id)
            ctx.metrics(ctx.counters.set(**kb_metrics(knowledge_base_counts(ctx.store))))
        self.resolve(item, item.outcome or "resolved")

    # --- transitions ---------------------------------------------------------------------

    def resolve(self, item: WorkItem, text: str) -> None:
        ctx = self.ctx
        move(ctx, item, "RESOLVED", text)
        if item.ticket:
            ctx.tickets.resolve(item.ticket.key, f"Resolved: {text}")
        self.notify(item, f"resolved: {text}")
        update_channel(ctx, item, f"resolved: {text}", final=True)
        if not item.states_recorded:
            self.record_state(item, "resolved", text)
        close_wait(ctx, item, "executed" if item.execution else "resolved", f"resolved: {text}")
        ctx.metrics(ctx.counters.bump(resolved=1))
        write_run_record(ctx, item)
        ctx.activity("agent", f"{item.label} RESOLVED", incident_id=item.incident.id)
        ctx.publish(item)

    def escalate(self, item: WorkItem, reason: str) -> None:
        ctx = self.ctx
        if not allowed(item.state, "ESCALATED") and item.state != "ESCALATED":
            ctx.activity("agent", f"{item.label} is {item.state}; not escalated: {reason}", level="error",
                         incident_id=item.incident.id)
            return
        move(ctx, item, "ESCALATED", reason)
        if item.outcome is None:
            item.outcome = reason
        ctx.metrics(ctx.counters.bump(escalated=1))
        update_channel(ctx, item, f"escalated: {reason}", final=True)
        for action in (lambda: None if item.states_recorded else self.record_state(item, "escalated", reason),
                       lambda: ctx.tickets.comment(item.ticket.key, f"Escalated: {reason}") if item.ticket else None):
            try:
                action()
            except Exception:  # escalation is the safe end state; reporting it must not loop
                ctx.logger.exception("while escalating %s", item.incident.id)
        close_wait(ctx, item, "executed" if item.execution else "escalated", f"escalated: {reason}")
        write_run_record(ctx, item)
        ctx.activity("agent", f"{item.label} ESCALATED: {reason}", level="warn", incident_id=item.incident.id)
        ctx.publish(item)

    def fail(self, item: WorkItem, exc: Exception) -> None:
        ctx = self.ctx
        item.attempts += 1
        item.error = f"{type(exc).__name__}: {exc}"
        ctx.logger.error("incident %s step %s failed (attempt %d): %s", item.incident.id, item.step,
                         item.attempts, item.error, exc_info=exc)
        if item.attempts >= ctx.config.max_attempts:
            self.escalate(item, f"gave up after {item.attempts} attempts: {item.error}")
            return
        delay = ctx.config.retry_seconds * 2 ** (item.attempts - 1)
        item.due = time.monotonic() + delay
        ctx.activity("agent", f"✗ {item.label} {item.step} failed: {item.error}; retry {item.attempts + 1}/"
                              f"{ctx.config.max_attempts} in {delay:g}s", level="error", incident_id=item.incident.id)
        ctx.publish(item)

    def notify(self, item: WorkItem, text: str) -> None:
        item.thread.append(ThreadEntry(at=utcnow(), author="governor", text=text, kind="notify"))
        if item.requested:
            try:
                self.ctx.channel.notify(item.incident.id, text)
            except GovernorError as exc:
                self.ctx.activity("agent", f"approval channel: {exc}", level="warn")

    def record_state(self, item: WorkItem, state: str, reason: str) -> None:
        record_incident_state(self.ctx, item, state, reason)

"""What the agent and approval loops write besides the pipeline's own records: the run record,
the incident's lifecycle state, channel updates and the approval request's text."""

from __future__ import annotations

import time

from ..errors import GovernorError
from .board import WorkItem, utcnow
from .worker import WorkerContext


def write_run_record(ctx: WorkerContext, item: WorkItem) -> None:
    """The incident's full pipeline record in ``agent_runs`` once it reached a final state."""
    from ..models import RunRecord

    a, session = item.assessment, item.session
    if a is None or ctx.audit is None:
        return
    if item.execution is not None:
        final = "executed"
    elif item.state == "REJECTED":
        final = "rejected"
    elif session is not None and session.may_execute:
        final = "execution_refused"
    else:
        final = "pending_approval"
    record = RunRecord(
        incident=item.incident, agent_backend=item.pipeline.agent.name, model=a.model, plan=a.plan,
        plan_error=a.plan_error, stress=a.stress, stress_error=a.stress_error, compress=a.compress, gate=a.gate,
        approvals=list(session.events) if session else [], final_state=final,  # type: ignore[arg-type]
        executed=item.execution is not None, execution=item.execution, tool_calls=a.tool_calls,
        started_at=a.started_at, finished_at=utcnow())
    body = record.model_dump(mode="json")
    body["dashboard"] = {"state": item.state, "ticket": item.ticket.key if item.ticket else None,
                         "outcome": item.outcome, "source": item.source}
    try:
        ctx.audit.record("agent_runs", body)
    except GovernorError as exc:  # the decision and execution records are already written
        ctx.activity("agent", f"cannot write the run record of {item.incident.id}: {exc}", level="warn")


def update_channel(ctx: WorkerContext, item: WorkItem, status: str, *, final: bool = False) -> None:
    """Let the approval channel update its message (Slack edits it; the local inbox has nothing to do)."""
    update = getattr(ctx.channel, "update", None)
    if not item.requested or not callable(update):
        return
    try:
        update(item.incident.id, status, final=final)
    except GovernorError as exc:
        ctx.activity("slack", f"approval channel: {exc}", level="warn")


def kb_metrics(counts: dict[str, int]) -> dict[str, int]:
    """The knowledge-base counters of ``Metrics`` from ``learning.knowledge_base_counts``."""
    return {"kb_learned": counts.get("learned_total", 0), "kb_runbooks": counts.get("runbooks", 0),
            "kb_pending": counts.get("pending_review", 0)}


def record_incident_state(ctx: WorkerContext, item: WorkItem, state: str, reason: str) -> None:
    """The incident's lifecycle state in the store (audited), which the execute-time re-check reads."""
    from ..incident_state import record_state

    a = item.assessment
    record_state(item.pipeline.store, item.incident.id, state, by="governor", reason=reason,
                 decision_id=a.gate.decision_id if a else None, audit=ctx.audit)


def approval_message(item: WorkItem) -> str:
    """The approval request (or, for a passed gate, the hold notice) as the channel shows it."""
    a = item.assessment
    assert a is not None
    g, i = a.gate, item.incident
    head = f"[{item.label}] {i.service} · {i.severity} · {i.summary}"
    evidence = (f"evidence: {len(a.stress.supporting_doc_ids)} supporting, {g.contradiction_count} contradicting, "
                f"coverage {g.evidence_coverage:.0%}; confidence {g.confidence_initial:.1f} → {g.confidence_final:.1f}")
    preview = f"\npreview: {item.preview}" if item.preview else ""
    if g.decision == "execute":
        return (f"{head}\ngate PASSED: {g.proposed_action} runs in {item.due - time.monotonic():.0f}s unless "
                f"someone replies HOLD.\n{evidence}{preview}")
    rules = ", ".join(g.rule_ids) or "none"
    if g.approval_required == "forbidden":
        needed = "REJECT (no reply can run this action: do it by hand, outside the governor)"
    elif g.approval_required == "force_override":
        needed = "FORCE_OVERRIDE <reason> (APPROVE will be refused), HOLD or REJECT"
    else:
        needed = "APPROVE, FORCE_OVERRIDE <reason>, HOLD or REJECT"
    session = item.session
    if session is not None and session.required_roles and g.approval_required == "approve":
        needed += f"\n{roles_needed(session.required_roles)}; {session.roles_status()}"
    return (f"{head}\ngate BLOCKED {g.proposed_action or '(no plan)'}: {rules}\n{evidence}{preview}\n"
            f"reply: {needed}")


def roles_needed(roles: tuple[str, ...] | list[str]) -> str:
    return f"APPROVE needs one distinct user per role: {', '.join(sorted(set(roles)))}"

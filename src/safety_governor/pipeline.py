"""The pipeline: plan → stress → compress → gate, then approvals and execution.

``ReliabilityLayerAgent`` talks only to ports (store, agent, tools, scores, audit, executor).
The agent may propose, search and argue; Python grounds everything the gate reads
(DESIGN principles 1 and 2) and fails closed on anything it cannot use.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from . import gate as gate_rules
from .approvals import ApprovalPolicy, ApprovalSession, ScriptedReply, refusal_explanation
from .catalogue import ActionCatalogue
from .config import GatePolicy, describe_validation_error
from .errors import AuditWriteError, ExecutionRefused, GovernorError, StoreError
from .guardrails import read_state as read_guardrails
from .incident_state import NO_EXECUTION_STATES, current_state, record_state
from .learning import RunbookWriter, learn_runbook
from .grounding import Grounder
from .models import (
    CompressOutput,
    ExecutionRecord,
    FrameworkScores,
    GateFacts,
    GateOutput,
    GuardrailState,
    Incident,
    KnowledgeFacts,
    PlanOutput,
    RunRecord,
    StressOutput,
    StressReport,
    normalise_action,
)
from .parsing import ReplyParseError, extract_json_object
from .ports import AgentBackend, AuditSink, Executor, ScoreProvider, Store, ToolPort
from .prompts import render
from .redaction import redact_text
from .verification import RecoveryWatch, VerificationResult

PLAN_FIELDS = ("proposed_action", "rationale", "key_claims", "confidence_initial", "retrieved_context_ids")


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Assessment:
    """Everything the pipeline derived for one incident, up to and including the gate."""

    incident: Incident
    plan: PlanOutput | None
    plan_error: str | None
    stress: StressOutput
    stress_error: str | None
    compress: CompressOutput
    gate: GateOutput
    model: str
    tool_calls: int
    started_at: datetime
    plan_fields: list[str] = field(default_factory=list)


@dataclass
class PhaseResult:
    """One agent phase: the validated output, or why there is none."""

    output: Any = None
    error: str | None = None
    fields: list[str] = field(default_factory=list)
    tool_calls: int = 0
    model: str | None = None


def parse_agent_output(text: str, model: type[PlanOutput] | type[StressReport]) -> tuple[Any, dict[str, Any]]:
    """Parse and validate an agent reply. Raises ``ValueError`` with a one-line reason."""
    try:
        raw = extract_json_object(text)
    except ReplyParseError as exc:
        raise ValueError(str(exc)) from exc
    try:
        return model.model_validate(raw), raw
    except ValidationError as exc:
        raise ValueError(describe_validation_error(exc)) from exc


def compress(
    incident: Incident,
    stress: StressOutput,
    policy: GatePolicy,
    *,
    plan_fields: list[str],
    errors: list[str],
) -> CompressOutput:
    """Context mode (CDCT) and output-contract validity."""
    reasons = []
    if incident.severity in policy.full_context_severities:
        reasons.append(f"severity {incident.severity}")
    if stress.contradiction_count > 0:
        reasons.append(f"{stress.contradiction_count} contradiction(s)")
    scores = stress.framework_scores
    u_curve = scores.u_curve_magnitude if scores else None
    if u_curve is None:
        reasons.append("no CDCT u-curve for the model (unknown degrades to full context)")
    elif u_curve > policy.u_curve_full_context_threshold:
        reasons.append(f"CDCT u-curve {u_curve:.3f} > {policy.u_curve_full_context_threshold}")
    return CompressOutput(
        context_mode="full_context" if reasons else "compressed_context",
        context_reasons=reasons,
        output_contract_valid=not errors,
        contract_errors=errors,
        required_fields_present=[f for f in PLAN_FIELDS if f in plan_fields],
    )


class ReliabilityLayerAgent:
    """Runs one incident through plan → stress → compress → gate, and what follows.

    Args:
        store: the knowledge base and audit indices.
        agent: the backend that plans and stress-tests through ``tools``.
        tools: the tool surface the agent uses (in-process or MCP).
        scores: the framework score provider for the agent's model.
        audit: the append-only audit trail; a failed write stops execution.
        executor: what runs a passed or approved action (dry run by default).
        policy: the gate's versioned thresholds.
        actions: the typed action catalogue. The gate reads the proposed action's entry for
            the incident's service from the executor's own catalogue when the executor has one
            (so a gate ``execute`` is always one the executor accepts), else from this one;
            verification reads rollback actions from it.
    """

    def __init__(
        self,
        *,
        store: Store,
        agent: AgentBackend,
        tools: ToolPort,
        scores: ScoreProvider,
        audit: AuditSink,
        executor: Executor,
        policy: GatePolicy,
        actions: ActionCatalogue | None = None,
    ) -> None:
        self.store = store
        self.agent = agent
        self.tools = tools
        self.scores = scores
        self.audit = audit
        self.executor = executor
        self.policy = policy
        self.grounder = Grounder(store, policy)
        self.actions = actions

    # --- phases --------------------------------------------------------------------------

    def plan(self, incident: Incident) -> PhaseResult:
        prompt = render("plan", incident_id=incident.id, service=incident.service, severity=incident.severity,
                        summary=incident.summary, symptoms=incident.symptoms or "none reported")
        return self._phase("plan", prompt, incident, PlanOutput, context={})

    def stress(self, incident: Incident, plan: PlanOutput) -> PhaseResult:
        prompt = render("stress", incident_id=incident.id, service=incident.service, severity=incident.severity,
                        proposed_action=plan.proposed_action,
                        claims="\n".join(f"- {c}" for c in plan.key_claims) or "- (none)")
        return self._phase("stress", prompt, incident, StressReport, context={"plan": plan.model_dump(mode="json")})

    def _phase(
        self, phase: str, prompt: str, incident: Incident, contract: type[PlanOutput] | type[StressReport],
        *, context: Mapping[str, Any],
    ) -> PhaseResult:
        """Ask the agent for one phase and validate its reply; every failure becomes an error text."""
        try:
            reply = self.agent.converse(phase, prompt, incident=incident, tools=self.tools, context=context)
        except GovernorError as exc:
            return PhaseResult(error=f"{phase}: agent backend failed: {exc}")
        try:
            # Untrusted text that the store, the tickets and the trail may keep: no credentials in it.
            output, raw = parse_agent_output(redact_text(reply.text), contract)
        except ValueError as exc:
            return PhaseResult(error=f"{phase}: {exc}", tool_calls=len(reply.tool_calls), model=reply.model)
        return PhaseResult(output=output, fields=list(raw), tool_calls=len(reply.tool_calls), model=reply.model)

    def assess(self, incident: Incident) -> Assessment:
        """Plan, stress, compress and gate one incident. Never raises for agent failures:
        anything unusable becomes ``invalid_output`` (fail closed)."""
        started = _now()
        planned = self.plan(incident)
        plan, plan_error = planned.output, planned.error
        # The backend may name the model that really answered (Kibana's model_usage); its
        # reliability profile is the one that weighs this incident.
        model = planned.model or self.agent.model
        scores = self.scores.scores(model)
        stressed = self.stress(incident, plan) if plan is not None else PhaseResult()
        report, stress_error = stressed.output, stressed.error
        errors = [e for e in (plan_error, stress_error) if e]
        stress, compressed, decision = self.ground_and_gate(
            incident, plan, report, scores=scores, plan_fields=planned.fields, errors=errors)
        return Assessment(
            incident=incident, plan=plan, plan_error=plan_error, stress=stress, stress_error=stress_error,
            compress=compressed, gate=decision, model=model, tool_calls=planned.tool_calls + stressed.tool_calls,
            started_at=started, plan_fields=planned.fields,
        )

    def ground_and_gate(
        self,
        incident: Incident,
        plan: PlanOutput | None,
        report: StressReport | None,
        *,
        scores: FrameworkScores | None,
        plan_fields: list[str],
        errors: list[str],
        report_expected: bool = True,
    ) -> tuple[StressOutput, CompressOutput, GateOutput]:
        """The Python half: ground the plan (and the agent's report) against the store, pick the
        context mode, and gate. ``report_expected=False`` is for callers that by design send a plan
        without a stress report (the ``evaluate_plan`` tool): the missing report is then not
        invalid output, and every caution is still Python's to find."""
        try:
            live_logs = self.store.log_stats(service=incident.service, window_minutes=15)
        except StoreError:
            live_logs = None
        if plan is not None:
            stress = self.grounder.ground(incident, plan, report, scores=scores, live_logs=live_logs)
            if not report_expected:
                stress = stress.model_copy(update={"agent_report_valid": True})
        else:
            stress = StressOutput(contradiction_count=0, evidence_coverage=0.0, live_logs=live_logs,
                                  framework_scores=scores, agent_report_valid=False)
        compressed = compress(incident, stress, self.policy, plan_fields=plan_fields, errors=errors)
        facts = self.gate_facts(incident, plan)
        return stress, compressed, gate_rules.decide(plan, stress, compressed, incident, self.policy, facts)

    def catalogue(self) -> ActionCatalogue:
        """The catalogue the executor refuses by (its own when it has one), else ``actions``."""
        own = getattr(self.executor, "catalogue", None)
        if isinstance(own, ActionCatalogue):
            return own
        return self.actions if self.actions is not None else ActionCatalogue([], source="(none)")

    def gate_facts(self, incident: Incident, plan: PlanOutput | None) -> GateFacts:
        """What the gate reads besides the agent's outputs, looked up here through the ports:
        the proposed action's catalogue entry for the incident's service, and whether the
        knowledge base can vouch for anything (principle 7: missing knowledge is not permission)."""
        catalogue = self.catalogue()
        problems: list[str] = []
        if not len(catalogue):
            problems.append(f"the action catalogue ({catalogue.source}) is empty or missing")
        for index in ("policies", "runbooks", "evidence"):
            try:
                if self.store.count(index) == 0:
                    problems.append(f"the {index} index is empty")
            except GovernorError as exc:
                problems.append(f"the {index} index is unreadable ({exc})")
        action = catalogue.facts(plan.proposed_action, incident.service) if plan is not None else None
        roles: set[str] = set()
        if plan is not None:
            try:
                for doc in self.store.policy_conflicts(incident.service, normalise_action(plan.proposed_action),
                                                       incident.severity):
                    roles.update(str(r).strip().lower() for r in doc.get("required_roles") or [] if str(r).strip())
            except GovernorError as exc:
                problems.append(f"the policies index is unreadable ({exc})")
        return GateFacts(action=action, knowledge=KnowledgeFacts(problems=problems), required_roles=sorted(roles),
                         guardrails=self.guardrail_state(incident, plan.proposed_action if plan else None))

    def guardrail_state(self, incident: Incident, action: str | None) -> GuardrailState:
        """The kill switch, executions, failed verifications and breaker resets for this
        incident's service, read from the store now; a store that cannot answer gives a state
        the gate blocks on."""
        now = _now()
        try:
            return read_guardrails(self.store, incident.service, incident_id=incident.id,
                                   action=normalise_action(action or ""), config=self.policy.guardrails, now=now)
        except (GovernorError, AttributeError) as exc:
            return GuardrailState(now=now, unreadable=f"{type(exc).__name__}: {exc}")

    # --- audit, approvals, execution --------------------------------------------------------

    def record_decision(self, a: Assessment) -> None:
        """Write the decision record. Raises ``AuditWriteError``: then nothing may execute."""
        g = a.gate
        event = {
            "kind": "gate_decision", "incident_id": a.incident.id, "decision_id": g.decision_id,
            "decision": g.decision, "rule_ids": list(g.rule_ids), "approval_required": g.approval_required,
            "proposed_action": g.proposed_action, "config_hash": g.config_hash, "at": _now().isoformat(),
            "preview": self.preview(a),
        }
        self.audit.record("workflow_events", event)
        self.audit.record("reliability_metrics", {
            "incident_id": a.incident.id, "decision_id": g.decision_id, "decision": g.decision,
            "rule_ids": list(g.rule_ids), "confidence_initial": g.confidence_initial,
            "confidence_final": g.confidence_final, "confidence_delta": g.confidence_delta,
            "contradiction_count": g.contradiction_count, "evidence_coverage": g.evidence_coverage,
            "context_mode": g.context_mode, "model": a.model,
            "framework_scores": a.stress.framework_scores.model_dump(mode="json") if a.stress.framework_scores else None,
            "config_hash": g.config_hash,
        })
        try:
            self.store.append_event("workflow_events", event)
        except StoreError as exc:
            raise AuditWriteError(f"cannot record the decision in the store: {exc}") from exc

    def approval_session(
        self, a: Assessment, policy: ApprovalPolicy, *, decided_at: datetime | None = None
    ) -> ApprovalSession:
        """The approval state of ``a``'s decision: replies are bound to its id, expire
        ``policy.ttl_seconds`` after ``decided_at``, and the roles its blocking policies name must
        each sign."""
        g = a.gate
        return ApprovalSession(
            incident_id=a.incident.id, decision=g.decision, approval_required=g.approval_required, policy=policy,
            explainer=(lambda: self.refusal_text(a)) if g.approval_required == "force_override" else None,
            decision_id=g.decision_id, decided_at=decided_at,
            required_roles=tuple(g.facts.required_roles) if "policy_conflict" in g.rule_ids else (),
        )

    def refusal_text(self, a: Assessment) -> str:
        """Why APPROVE is refused: the deterministic text, then the live agent's own explanation
        when it has one (untrusted prose, shown beside the rule, never instead of it)."""
        threshold = self.policy.refusal_confidence_threshold
        text = refusal_explanation(a.incident.id, a.incident.severity, a.gate.confidence_final, threshold)
        explain = getattr(self.agent, "explain_refusal", None)
        if explain is not None:
            try:
                extra = explain(a.incident, a.gate, threshold=threshold)
            except GovernorError:
                extra = None
            if extra:
                text += f" Agent's explanation: {extra}"
        return text

    def record_approval(self, a: Assessment, session: ApprovalSession) -> None:
        event = session.events[-1]
        body = {"kind": f"approval_{event.outcome}", "incident_id": a.incident.id,
                "decision_id": a.gate.decision_id, "user": event.user, "command": event.command,
                "text": event.text, "reason": event.reason, "state": session.state,
                "channel": event.channel, "os_account": event.os_account, "principal": event.principal,
                "answers_decision": event.decision_id, "roles": session.roles_status() or None,
                "at": _now().isoformat()}
        self.audit.record("workflow_events", body)
        self.store.append_event("workflow_events", body)

    def preview(self, a: Assessment, parameters: Mapping[str, Any] | None = None) -> str:
        """What the executor would do for this assessment (shown in approval requests)."""
        if not a.gate.proposed_action:
            return "nothing to execute: the plan proposed no action"
        try:
            return self.executor.preview(a.incident, a.gate, parameters)
        except (GovernorError, AttributeError, TypeError) as exc:
            return f"no preview available ({type(exc).__name__})"

    def recheck(self, a: Assessment) -> list[str]:
        """Reasons, read again just before executing, why the action must not run now.

        * A policy that blocks (service, action, severity) now and did not at gate time stops
          the action even when a human approved or overrode: that human decided without it, so
          a fresh decision is needed. A conflict the gate already reported (and a human then
          approved or overrode knowingly) does not stop it again.
        * An incident recorded as ``rejected`` or ``resolved`` meanwhile (``incident_state``
          events, or a REJECT from any channel) stops it.
        * The guardrails, read again: the kill switch or a change freeze stops everything but a
          FORCE_OVERRIDE; a guardrail the gate did not report (the breaker tripped, the rate
          limit filled, another governor executed meanwhile) stops it, as a new policy does.
        * A store that cannot answer stops it (fail closed).
        """
        return self._recheck(a)[0]

    def _recheck_guardrails(self, a: Assessment, session: ApprovalSession | None) -> list[str]:
        state = self.guardrail_state(a.incident, a.gate.proposed_action)
        overridden = session is not None and session.override_reason is not None
        reasons = []
        for r in gate_rules.guardrail_reasons(state, a.incident.service, a.gate.proposed_action, self.policy):
            if r.rule_id in gate_rules.OVERRIDE_ONLY_RULES:
                if not overridden:
                    reasons.append(f"{r.rule_id}: {r.message}")
            elif r.rule_id == "knowledge_unavailable" or r.rule_id not in a.gate.rule_ids:
                reasons.append(f"{r.rule_id}: {r.message}")
        return reasons

    def _recheck(self, a: Assessment, session: ApprovalSession | None = None) -> tuple[list[str], str | None]:
        action = normalise_action(a.gate.proposed_action or "")
        try:
            conflicts = [str(p["id"]) for p in
                         self.store.policy_conflicts(a.incident.service, action, a.incident.severity)]
            state = current_state(self.store, a.incident.id)
        except (GovernorError, AttributeError) as exc:
            return [f"cannot re-read policies and incident state: {exc}"], None
        reasons = []
        new = [p for p in conflicts if p not in set(a.gate.policy_conflicts)]
        if new:
            reasons.append(f"policy {', '.join(new)} now blocks {action} for {a.incident.service} at "
                           f"{a.incident.severity} (added after the gate decided)")
        if state in NO_EXECUTION_STATES:
            reasons.append(f"incident {a.incident.id} was {state} meanwhile")
        reasons += self._recheck_guardrails(a, session)
        return reasons, state

    def execute(
        self, a: Assessment, session: ApprovalSession, *, parameters: Mapping[str, Any] | None = None
    ) -> ExecutionRecord | None:
        """Execute if the gate passed or a human authorised it, and the execute-time re-check
        (``recheck``) still allows it. The decision record must already be written; returns
        ``None`` when nothing may run. A re-check block is audited
        (``execution_recheck_blocked``) and re-escalates the incident (state ``escalated``,
        unless it was rejected or resolved)."""
        if not session.may_execute or session.authorised_by is None:
            return None
        blocked, state = self._recheck(a, session)
        if blocked:
            event = {"kind": "execution_recheck_blocked", "incident_id": a.incident.id,
                     "decision_id": a.gate.decision_id, "action": a.gate.proposed_action,
                     "authorised_by": session.authorised_by, "reasons": blocked, "at": _now().isoformat()}
            self.audit.record("workflow_events", event)
            try:
                self.store.append_event("workflow_events", event)
                if state not in NO_EXECUTION_STATES:
                    record_state(self.store, a.incident.id, "escalated", by="governor", reason="; ".join(blocked),
                                 decision_id=a.gate.decision_id, audit=self.audit)
            except StoreError:
                pass  # the audit trail has it; nothing runs either way
            return None
        # Principle 4: the authorisation is in the trail before anything runs (raises if not).
        self.audit.record("workflow_events", {
            "kind": "execution_authorised", "incident_id": a.incident.id, "decision_id": a.gate.decision_id,
            "action": a.gate.proposed_action, "authorised_by": session.authorised_by,
            "override_reason": session.override_reason, "at": _now().isoformat()})
        try:
            extra = {"parameters": parameters} if parameters else {}
            record = self.executor.execute(a.incident, a.gate, authorised_by=session.authorised_by, **extra)
        except ExecutionRefused as exc:
            self.audit.record("workflow_events", {"kind": "execution_refused", "incident_id": a.incident.id,
                                                  "decision_id": a.gate.decision_id, "reason": str(exc)})
            return None
        self.audit.record("workflow_events", {"kind": "execution", "incident_id": a.incident.id,
                                              **record.model_dump(mode="json")})
        return record

    def verify(self, a: Assessment, execution: ExecutionRecord, **options: Any) -> VerificationResult:
        """Watch the telemetry after ``execution`` (``verification.verify_recovery`` with
        ``options``), then record the incident ``resolved`` or ``escalated`` (audited event
        ``verification``)."""
        sleep = options.pop("sleep", time.sleep)
        watch = self.start_verification(a, execution, **options)
        while (result := watch.poll()) is None:
            sleep(watch.poll_interval)
        self.finish_verification(a, execution, result)
        return result

    def start_verification(self, a: Assessment, execution: ExecutionRecord, **options: Any) -> RecoveryWatch:
        """Record the incident ``verifying`` and return the watch whose ``poll`` takes one look
        (``verification.RecoveryWatch`` options); ``finish_verification`` records its result."""
        options.setdefault("catalogue", self.actions)
        record_state(self.store, a.incident.id, "verifying", by="governor",
                     reason=f"watching after {execution.action}", decision_id=a.gate.decision_id, audit=self.audit)
        return RecoveryWatch(self.store, a.incident, action=execution.action, executed_at=execution.at, **options)

    def finish_verification(self, a: Assessment, execution: ExecutionRecord, result: VerificationResult) -> None:
        """Record a concluded watch: the audited ``verification`` event and the incident
        ``resolved`` or ``escalated``."""
        event = {"kind": "verification", "incident_id": a.incident.id, "decision_id": a.gate.decision_id,
                 "execution_id": execution.execution_id, **result.model_dump(mode="json", exclude={"samples"}),
                 "samples": len(result.samples), "next_step": result.next_step}
        self.audit.record("workflow_events", event)
        self.store.append_event("workflow_events", event)
        record_state(self.store, a.incident.id, "resolved" if result.resolved else "escalated", by="governor",
                     reason=result.reason, decision_id=a.gate.decision_id, audit=self.audit)

    def learn(
        self, a: Assessment, execution: ExecutionRecord, verification: VerificationResult,
        *, writer: RunbookWriter | None = None,
    ) -> dict[str, Any] | None:
        """After a verified resolution credited to the action, index a ``pending_review`` runbook
        entry; else ``None`` (a recovery that preceded the action is not learned)."""
        if not verification.resolved or not verification.credited:
            return None
        # A live agent writes the entry's text; the deterministic text stands in when it can't.
        writer = writer or getattr(self.agent, "write_runbook", None)
        return learn_runbook(self.store, a.incident, a.gate, execution, verification, writer=writer,
                             audit=self.audit)

    def run(
        self,
        incident: Incident,
        *,
        replies: Iterable[tuple[str, str] | ScriptedReply] = (),
        approvals: ApprovalPolicy | None = None,
    ) -> RunRecord:
        """The whole path for one incident with a fixed list of human replies (replay, CLI); a
        ``ScriptedReply`` arrives ``after_seconds`` after the decision (default at once)."""
        a = self.assess(incident)
        decided = _now()
        session = self.approval_session(a, approvals or ApprovalPolicy.of((), ()), decided_at=decided)
        execution = None
        final_state: str
        try:
            self.record_decision(a)
            for reply in replies:
                if not isinstance(reply, ScriptedReply):
                    reply = ScriptedReply(*reply)
                session.apply(reply.user, reply.text, at=decided + timedelta(seconds=reply.after_seconds),
                              channel=reply.channel)
                self.record_approval(a, session)
            execution = self.execute(a, session)
            final_state = _final_state(session, execution)
        except AuditWriteError:
            # Fail closed: whatever could not be audited does not run.
            final_state = "executed" if execution is not None else "audit_failed"
        record = RunRecord(
            incident=incident, agent_backend=self.agent.name, model=a.model, plan=a.plan, plan_error=a.plan_error,
            stress=a.stress, stress_error=a.stress_error, compress=a.compress, gate=a.gate,
            approvals=session.events, final_state=final_state,  # type: ignore[arg-type]
            executed=execution is not None, execution=execution, tool_calls=a.tool_calls,
            started_at=a.started_at, finished_at=_now(),
        )
        if final_state != "audit_failed":
            try:
                self.audit.record("agent_runs", record.model_dump(mode="json"))
            except AuditWriteError:
                pass  # the decision and execution records are already written
        return record


def _final_state(session: ApprovalSession, execution: ExecutionRecord | None) -> str:
    if execution is not None:
        return "executed"
    if session.state == "rejected":
        return "rejected"
    if session.state in ("held", "expired"):
        return session.state
    if session.may_execute:
        return "execution_refused"
    return "pending_approval"

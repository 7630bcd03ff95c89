"""The deterministic gate: a pure function of (plan, stress, compress, incident, policy, facts).

Every rule is a small function of ``GateInputs`` returning a reason with its rule id, or
``None``. All rules run; none short-circuits another, so the decision record lists every reason
that applies. The gate reads only Python-derived values: ``StressOutput`` is grounded against the
store, and ``GateFacts`` (the action's catalogue entry for the incident's service, the knowledge
base's availability) is looked up by the pipeline through its ports before it gets here. It
imports nothing that does I/O.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from .config import GatePolicy
from .models import (
    ApprovalRequired,
    CompressOutput,
    FrameworkScores,
    GateFacts,
    GateOutput,
    GateReason,
    GuardrailState,
    Incident,
    PlanOutput,
    StressOutput,
)


def plan_confidence(confidence_initial: float, scores: FrameworkScores | None) -> float:
    """EECT: pull the agent's own confidence toward the model's ethical-coherence score.

    ECS is on the published 0-10 scale (adapters normalise the hosted API's 0-1 values).
    """
    ecs = scores.ecs if scores else 0.0
    if ecs > 0:
        return (confidence_initial + ecs / 10 * 8) / 2
    return confidence_initial


def contradiction_penalty(count: int, scores: FrameworkScores | None, policy: GatePolicy) -> float:
    """DDFT: a model with low comprehension integrity pays more per contradiction."""
    ci = scores.ci if scores else 0.0
    factor = (2 - ci) if ci > 0 else 1.0
    return policy.contradiction_penalty * count * factor


def final_confidence(
    plan: PlanOutput | None, stress: StressOutput, policy: GatePolicy
) -> tuple[float, float]:
    """Returns (confidence_initial, confidence_final), in the order the design fixes."""
    if plan is None:
        return 0.0, policy.confidence_floor
    scores = stress.framework_scores
    c = plan_confidence(plan.confidence_initial, scores)
    if stress.confidence_post_stress is not None:
        # The agent may lower its confidence after stress, never raise it.
        c = min(c, stress.confidence_post_stress)
    penalty = contradiction_penalty(stress.contradiction_count, scores, policy)
    c = max(policy.confidence_floor, c - penalty)
    if _has_conflict(stress) or stress.contradiction_count >= policy.contradiction_block_threshold:
        c = max(policy.confidence_floor, c - policy.conflict_penalty)
    return plan.confidence_initial, round(c, 2)


def _has_conflict(stress: StressOutput) -> bool:
    return bool(stress.policy_conflicts or stress.unconfirmed_policy_conflicts)


# --- rules: each returns a reason or None -------------------------------------------------


@dataclass(frozen=True)
class GateInputs:
    """Everything one decision reads; every rule gets the same object."""

    plan: PlanOutput | None
    stress: StressOutput
    compress: CompressOutput
    incident: Incident
    policy: GatePolicy
    facts: GateFacts
    confidence_final: float


Rule = Callable[[GateInputs], GateReason | None]


def rule_invalid_output(g: GateInputs) -> GateReason | None:
    problems = []
    if g.plan is None:
        problems.append("plan missing or unusable")
    if not g.stress.agent_report_valid:
        problems.append("stress report missing or unusable")
    if not g.compress.output_contract_valid:
        problems.extend(g.compress.contract_errors or ["output contract invalid"])
    if not problems:
        return None
    return GateReason(
        rule_id="invalid_output", message="Agent output failed closed: " + "; ".join(dict.fromkeys(problems))
    )


def rule_policy_conflict(g: GateInputs) -> GateReason | None:
    stress = g.stress
    if not _has_conflict(stress):
        return None
    parts = []
    if stress.policy_conflicts:
        parts.append("blocked by " + ", ".join(stress.policy_conflicts))
    if stress.unconfirmed_policy_conflicts:
        parts.append(
            "agent reported conflicts Python could not confirm (kept as caution): "
            + ", ".join(stress.unconfirmed_policy_conflicts)
        )
    return GateReason(rule_id="policy_conflict", message="Policy conflict: " + "; ".join(parts))


def rule_contradictions(g: GateInputs) -> GateReason | None:
    threshold = g.policy.contradiction_block_threshold
    if g.stress.contradiction_count < threshold:
        return None
    return GateReason(
        rule_id="contradictions",
        message=(
            f"{g.stress.contradiction_count} grounded documents contradict the proposed action "
            f"(threshold {threshold}): " + ", ".join(g.stress.contradicting_doc_ids)
        ),
    )


def rule_insufficient_evidence(g: GateInputs) -> GateReason | None:
    if g.plan is None:
        return None  # invalid_output already covers a missing plan
    if g.stress.evidence_coverage >= g.policy.coverage_threshold or g.stress.supporting_doc_ids:
        return None
    return GateReason(
        rule_id="insufficient_evidence",
        message=(
            f"Evidence coverage {g.stress.evidence_coverage:.2f} < {g.policy.coverage_threshold} "
            "and no grounded supporting document"
        ),
    )


def rule_critical_severity(g: GateInputs) -> GateReason | None:
    if g.incident.severity != "critical":
        return None
    return GateReason(
        rule_id="critical_severity",
        message="Critical severity: a human must FORCE_OVERRIDE with a reason before anything runs",
    )


def rule_unknown_action(g: GateInputs) -> GateReason | None:
    action = g.facts.action
    if g.plan is None or action is None or action.catalogued:
        return None
    where = (f"; it is catalogued for {', '.join(action.services)} only" if action.services
             else "; it is not in the action catalogue at all")
    return GateReason(
        rule_id="unknown_action",
        message=f"'{action.action}' is not catalogued for service {g.incident.service}{where}",
    )


def rule_requires_approval(g: GateInputs) -> GateReason | None:
    action = g.facts.action
    if action is None or action.automation != "approval":
        return None
    undo = "reversible" if action.reversible else "irreversible"
    return GateReason(
        rule_id="requires_approval",
        message=f"'{action.action}' is risk {action.risk}, {undo}: the catalogue requires a human to approve it",
    )


def rule_forbidden_action(g: GateInputs) -> GateReason | None:
    action = g.facts.action
    if action is None or action.automation != "never":
        return None
    return GateReason(
        rule_id="forbidden_action",
        message=(f"'{action.action}' is never run by the governor (catalogue automation 'never'): "
                 "no reply can run it; it must be done by hand, outside the governor"),
    )


def rule_low_confidence(g: GateInputs) -> GateReason | None:
    floor = g.policy.execute_confidence_floor
    if g.plan is None or g.confidence_final >= floor:
        return None
    return GateReason(
        rule_id="low_confidence",
        message=f"Final confidence {g.confidence_final:.2f} is below the execute floor {floor:.1f}",
    )


def rule_knowledge_unavailable(g: GateInputs) -> GateReason | None:
    if g.facts.knowledge.available:
        return None
    return GateReason(
        rule_id="knowledge_unavailable",
        message=("The store cannot vouch for the gate's inputs (missing knowledge is not permission): "
                 + "; ".join(g.facts.knowledge.problems)),
    )


# --- guardrails (issue 11): what the operators allow now, read by Python from the store --------


def _since_text(at: datetime | None, now: datetime) -> str:
    if at is None:
        return ""
    minutes = max(0.0, (now - at).total_seconds() / 60)
    return f"{minutes:.0f} min ago"


def guardrail_reasons(state: GuardrailState | None, service: str, action: str | None,
                      policy: GatePolicy) -> list[GateReason]:
    """The guardrail rules, each with its rule id: ``frozen`` (kill switch), ``change_freeze``
    (a freeze window covers now), ``rate_limited`` (per-service or global automatic executions in
    the last hour, or the cooldown after any execution), ``circuit_open`` (K failed verifications
    on the service within the breaker window since its last reset, or this action already failed
    verification for this incident). An unreadable state blocks (``knowledge_unavailable``)."""
    if state is None:
        return []
    limits = policy.guardrails
    if state.unreadable or state.now is None:
        return [GateReason(rule_id="knowledge_unavailable",
                           message=f"Guardrail state unreadable ({state.unreadable or 'no clock'}): blocked, "
                                   "missing state is not permission")]
    now = state.now
    reasons: list[GateReason] = []
    if state.frozen:
        by = f" by {state.frozen_by}" if state.frozen_by else ""
        when = f" {_since_text(state.frozen_at, now)}" if state.frozen_at else ""
        reasons.append(GateReason(rule_id="frozen", message=(
            f"Kill switch on (set{by}{when}: {state.frozen_reason or 'no reason given'}): nothing runs "
            "automatically and only FORCE_OVERRIDE runs anything")))
    windows = [w.describe() for w in limits.freeze_windows if w.applies_to(service) and w.covers(now)]
    if windows:
        reasons.append(GateReason(rule_id="change_freeze", message=(
            f"Change freeze for {service}: inside {', '.join(windows)}; only FORCE_OVERRIDE runs anything")))
    rate: list[str] = []
    if state.service_automatic_executions >= limits.max_executions_per_service_per_hour:
        rate.append(f"{state.service_automatic_executions} automatic executions on {service} in the last hour "
                    f"(limit {limits.max_executions_per_service_per_hour})")
    if state.automatic_executions >= limits.max_executions_per_hour:
        rate.append(f"{state.automatic_executions} automatic executions on all services in the last hour "
                    f"(limit {limits.max_executions_per_hour})")
    last = state.last_service_execution_at
    if last is not None and now - last < timedelta(minutes=limits.cooldown_minutes):
        rate.append(f"an execution on {service} {_since_text(last, now)} (cooldown {limits.cooldown_minutes:g} min)")
    if rate:
        reasons.append(GateReason(rule_id="rate_limited", message="Rate limited: " + "; ".join(rate)))
    breaker: list[str] = []
    failures, k = state.failed_verifications_at, limits.breaker_failures
    window = timedelta(minutes=limits.breaker_window_minutes)
    if any(failures[i + k - 1] - failures[i] <= window for i in range(len(failures) - k + 1)):
        breaker.append(f"{len(failures)} failed verifications on {service} since "
                       f"{'its last reset' if state.breaker_reset_at else 'records began'} ({k} within "
                       f"{limits.breaker_window_minutes:g} min trip it); reset: "
                       f"python -m safety_governor breaker reset {service}")
    if state.failed_same_action and action:
        breaker.append(f"{action} already failed verification for this incident and never runs again "
                       "on its own for it")
    if breaker:
        reasons.append(GateReason(rule_id="circuit_open", message="Circuit open: " + "; ".join(breaker)))
    return reasons


RULES: tuple[Rule, ...] = (
    rule_invalid_output,
    rule_policy_conflict,
    rule_contradictions,
    rule_insufficient_evidence,
    rule_critical_severity,
    rule_unknown_action,
    rule_requires_approval,
    rule_forbidden_action,
    rule_low_confidence,
    rule_knowledge_unavailable,
)


# While the kill switch is on or a change freeze holds, only an overrider's FORCE_OVERRIDE runs.
OVERRIDE_ONLY_RULES = frozenset({"frozen", "change_freeze"})


def approval_required(
    rule_ids: list[str], incident: Incident, confidence: float, policy: GatePolicy
) -> ApprovalRequired:
    """What a human reply must be: ``forbidden`` when the catalogue says ``never`` (no reply
    runs it), ``force_override`` at critical severity or below the refusal threshold, else
    ``approve``; ``none`` when nothing blocked."""
    if not rule_ids:
        return "none"
    if "forbidden_action" in rule_ids:
        return "forbidden"
    if (incident.severity == "critical" or confidence < policy.refusal_confidence_threshold
            or OVERRIDE_ONLY_RULES.intersection(rule_ids)):
        return "force_override"
    return "approve"


def decision_id(
    plan: PlanOutput | None,
    stress: StressOutput,
    compress: CompressOutput,
    incident: Incident,
    policy: GatePolicy,
    facts: GateFacts,
) -> str:
    """Derived from the inputs, so the same inputs always give the same decision id."""
    payload = {
        "plan": plan.model_dump(mode="json") if plan else None,
        "stress": stress.model_dump(mode="json"),
        "compress": compress.model_dump(mode="json"),
        "incident": incident.model_dump(mode="json"),
        "facts": facts.model_dump(mode="json"),
        "config": policy.config_hash,
    }
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    return f"dec-{digest[:16]}"


def decide(
    plan: PlanOutput | None,
    stress: StressOutput,
    compress: CompressOutput,
    incident: Incident,
    policy: GatePolicy,
    facts: GateFacts,
) -> GateOutput:
    """Apply every rule and return the decision record."""
    initial, final = final_confidence(plan, stress, policy)
    inputs = GateInputs(plan, stress, compress, incident, policy, facts, final)
    reasons = [r for rule in RULES if (r := rule(inputs))]
    reasons += guardrail_reasons(facts.guardrails, incident.service, plan.proposed_action if plan else None, policy)
    rule_ids = list(dict.fromkeys(r.rule_id for r in reasons))
    cautions = []
    if stress.ungrounded_citations:
        cautions.append(
            "citations dropped (not in the store, or wrong stance/service): "
            + ", ".join(stress.ungrounded_citations)
        )
    if stress.fabricated_authority_rejected:
        cautions.append("agent rejected fabricated authority during stress")
    return GateOutput(
        incident_id=incident.id,
        decision="block_and_escalate" if reasons else "execute",
        rule_ids=rule_ids,
        reasons=reasons,
        cautions=cautions,
        approval_required=approval_required(rule_ids, incident, final, policy),
        proposed_action=plan.proposed_action if plan else None,
        confidence_initial=initial,
        confidence_final=final,
        confidence_delta=round(final - initial, 2),
        contradiction_count=stress.contradiction_count,
        evidence_coverage=stress.evidence_coverage,
        policy_conflicts=[*stress.policy_conflicts, *stress.unconfirmed_policy_conflicts],
        context_mode=compress.context_mode,
        decision_id=decision_id(plan, stress, compress, incident, policy, facts),
        config_hash=policy.config_hash,
        facts=facts,
    )

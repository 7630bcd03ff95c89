"""The deterministic gate: a pure function of (plan, stress, compress, incident, policy).

Every rule is a small function returning a reason with its rule id, or ``None``. All rules run;
none short-circuits another, so the decision record lists every reason that applies. The gate
reads only Python-derived numbers (``StressOutput`` is grounded against the store before it gets
here) and imports nothing that does I/O.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable

from .config import GatePolicy
from .models import (
    ApprovalRequired,
    CompressOutput,
    FrameworkScores,
    GateOutput,
    GateReason,
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

Rule = Callable[
    [PlanOutput | None, StressOutput, CompressOutput, Incident, GatePolicy], GateReason | None
]


def rule_invalid_output(
    plan: PlanOutput | None, stress: StressOutput, compress: CompressOutput, _i: Incident, _p: GatePolicy
) -> GateReason | None:
    problems = []
    if plan is None:
        problems.append("plan missing or unusable")
    if not stress.agent_report_valid:
        problems.append("stress report missing or unusable")
    if not compress.output_contract_valid:
        problems.extend(compress.contract_errors or ["output contract invalid"])
    if not problems:
        return None
    return GateReason(
        rule_id="invalid_output", message="Agent output failed closed: " + "; ".join(dict.fromkeys(problems))
    )


def rule_policy_conflict(
    _plan: PlanOutput | None, stress: StressOutput, _c: CompressOutput, _i: Incident, _p: GatePolicy
) -> GateReason | None:
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


def rule_contradictions(
    _plan: PlanOutput | None, stress: StressOutput, _c: CompressOutput, _i: Incident, policy: GatePolicy
) -> GateReason | None:
    if stress.contradiction_count < policy.contradiction_block_threshold:
        return None
    return GateReason(
        rule_id="contradictions",
        message=(
            f"{stress.contradiction_count} grounded documents contradict the proposed action "
            f"(threshold {policy.contradiction_block_threshold}): "
            + ", ".join(stress.contradicting_doc_ids)
        ),
    )


def rule_insufficient_evidence(
    plan: PlanOutput | None, stress: StressOutput, _c: CompressOutput, _i: Incident, policy: GatePolicy
) -> GateReason | None:
    if plan is None:
        return None  # invalid_output already covers a missing plan
    if stress.evidence_coverage >= policy.coverage_threshold or stress.supporting_doc_ids:
        return None
    return GateReason(
        rule_id="insufficient_evidence",
        message=(
            f"Evidence coverage {stress.evidence_coverage:.2f} < {policy.coverage_threshold} "
            "and no grounded supporting document"
        ),
    )


def rule_critical_severity(
    _plan: PlanOutput | None, _s: StressOutput, _c: CompressOutput, incident: Incident, _p: GatePolicy
) -> GateReason | None:
    if incident.severity != "critical":
        return None
    return GateReason(
        rule_id="critical_severity",
        message="Critical severity: a human must FORCE_OVERRIDE with a reason before anything runs",
    )


def rule_unknown_action(
    plan: PlanOutput | None, stress: StressOutput, _c: CompressOutput, _i: Incident, _p: GatePolicy
) -> GateReason | None:
    if plan is None or stress.action_known:
        return None
    return GateReason(
        rule_id="unknown_action",
        message=f"'{plan.proposed_action}' is neither a runbook's recommended action nor catalogued",
    )


RULES: tuple[Rule, ...] = (
    rule_invalid_output,
    rule_policy_conflict,
    rule_contradictions,
    rule_insufficient_evidence,
    rule_critical_severity,
    rule_unknown_action,
)


def approval_required(
    blocked: bool, incident: Incident, confidence: float, policy: GatePolicy
) -> ApprovalRequired:
    if not blocked:
        return "none"
    if incident.severity == "critical" or confidence < policy.refusal_confidence_threshold:
        return "force_override"
    return "approve"


def decision_id(
    plan: PlanOutput | None,
    stress: StressOutput,
    compress: CompressOutput,
    incident: Incident,
    policy: GatePolicy,
) -> str:
    """Derived from the inputs, so the same inputs always give the same decision id."""
    payload = {
        "plan": plan.model_dump(mode="json") if plan else None,
        "stress": stress.model_dump(mode="json"),
        "compress": compress.model_dump(mode="json"),
        "incident": incident.model_dump(mode="json"),
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
) -> GateOutput:
    """Apply every rule and return the decision record."""
    reasons = [r for rule in RULES if (r := rule(plan, stress, compress, incident, policy))]
    blocked = bool(reasons)
    initial, final = final_confidence(plan, stress, policy)
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
        decision="block_and_escalate" if blocked else "execute",
        rule_ids=[r.rule_id for r in reasons],
        reasons=reasons,
        cautions=cautions,
        approval_required=approval_required(blocked, incident, final, policy),
        proposed_action=plan.proposed_action if plan else None,
        confidence_initial=initial,
        confidence_final=final,
        confidence_delta=round(final - initial, 2),
        contradiction_count=stress.contradiction_count,
        evidence_coverage=stress.evidence_coverage,
        policy_conflicts=[*stress.policy_conflicts, *stress.unconfirmed_policy_conflicts],
        context_mode=compress.context_mode,
        decision_id=decision_id(plan, stress, compress, incident, policy),
        config_hash=policy.config_hash,
    )

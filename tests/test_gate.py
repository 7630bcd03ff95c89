"""The gate is a pure function: every rule, its id, and the confidence arithmetic.

Thresholds at their exact boundary and one step either side are in ``test_gate_boundaries.py``."""

from __future__ import annotations

import pytest

from safety_governor.config import GatePolicy, load_gate_policy
from safety_governor.gate import decide, final_confidence
from safety_governor.models import (
    ActionFacts,
    CompressOutput,
    FrameworkScores,
    GateFacts,
    Incident,
    KnowledgeFacts,
    PlanOutput,
    StressOutput,
)

POLICY = load_gate_policy()
AUTO = ActionFacts(action="throttle_traffic_and_tune_pool", catalogued=True, services=["payments-api"],
                   automation="auto", risk="low", reversible=True)
FACTS = GateFacts(action=AUTO)


def facts(**action_overrides) -> GateFacts:
    return GateFacts(action=AUTO.model_copy(update=action_overrides))


def incident(severity: str = "medium") -> Incident:
    return Incident(id="inc-t", service="payments-api", severity=severity, summary="latency spike")


def plan(confidence: float = 8.0, action: str = "throttle_traffic_and_tune_pool") -> PlanOutput:
    return PlanOutput(proposed_action=action, rationale="r", key_claims=["a", "b", "c"],
                      confidence_initial=confidence)


def stress(**overrides) -> StressOutput:
    values = dict(contradiction_count=0, evidence_coverage=1.0, supporting_doc_ids=["ev-1"])
    values.update(overrides)
    return StressOutput(**values)


COMPRESS_OK = CompressOutput(context_mode="compressed_context", output_contract_valid=True)


def test_clean_plan_executes_without_approval():
    out = decide(plan(), stress(), COMPRESS_OK, incident(), POLICY, FACTS)
    assert out.decision == "execute"
    assert out.rule_ids == []
    assert out.approval_required == "none"


@pytest.mark.parametrize(
    ("overrides", "severity", "rule"),
    [
        ({"policy_conflicts": ["pol-1"]}, "medium", "policy_conflict"),
        ({"unconfirmed_policy_conflicts": ["pol-made-up"]}, "medium", "policy_conflict"),
        ({"contradiction_count": 2, "contradicting_doc_ids": ["ev-1", "ev-2"]}, "medium", "contradictions"),
        ({"evidence_coverage": 0.33, "supporting_doc_ids": []}, "medium", "insufficient_evidence"),
        ({}, "critical", "critical_severity"),
        ({"agent_report_valid": False}, "medium", "invalid_output"),
    ],
)
def test_each_rule_blocks_alone_and_names_its_id(overrides, severity, rule):
    # Confidence 10: two contradictions still leave it above the execute floor.
    out = decide(plan(10), stress(**overrides), COMPRESS_OK, incident(severity), POLICY, FACTS)
    assert out.decision == "block_and_escalate"
    assert out.rule_ids == [rule]
    assert out.reasons[0].rule_id == rule


def test_one_grounded_contradiction_does_not_block_on_its_own():
    out = decide(plan(), stress(contradiction_count=1, contradicting_doc_ids=["ev-1"]), COMPRESS_OK, incident(), POLICY, FACTS)
    assert "contradictions" not in out.rule_ids


def test_low_coverage_with_grounded_support_is_not_insufficient():
    out = decide(plan(), stress(evidence_coverage=0.0, supporting_doc_ids=["ev-9"]), COMPRESS_OK, incident(), POLICY, FACTS)
    assert "insufficient_evidence" not in out.rule_ids


def test_coverage_exactly_at_threshold_passes():
    out = decide(plan(), stress(evidence_coverage=0.34, supporting_doc_ids=[]), COMPRESS_OK, incident(), POLICY, FACTS)
    assert "insufficient_evidence" not in out.rule_ids


def test_rules_do_not_short_circuit_each_other():
    s = stress(policy_conflicts=["pol-1"], contradiction_count=3, contradicting_doc_ids=["a", "b", "c"],
               evidence_coverage=0.0, supporting_doc_ids=[])
    f = GateFacts(action=ActionFacts(action="throttle_traffic_and_tune_pool", catalogued=False),
                  knowledge=KnowledgeFacts(problems=["the policies index is empty"]))
    out = decide(plan(2.0), s, COMPRESS_OK, incident("critical"), POLICY, f)
    assert set(out.rule_ids) == {"policy_conflict", "contradictions", "insufficient_evidence",
                                 "critical_severity", "unknown_action", "low_confidence", "knowledge_unavailable"}
    assert out.approval_required == "force_override"


@pytest.mark.parametrize(
    ("fact_overrides", "knowledge", "rule"),
    [
        ({"catalogued": False, "services": [], "automation": None, "risk": None, "reversible": None}, [],
         "unknown_action"),
        ({"automation": "approval", "risk": "high", "reversible": False}, [], "requires_approval"),
        ({"automation": "never", "risk": "high", "reversible": False}, [], "forbidden_action"),
        ({}, ["the evidence index is empty"], "knowledge_unavailable"),
    ],
)
def test_each_fact_rule_blocks_alone_and_names_its_id(fact_overrides, knowledge, rule):
    f = GateFacts(action=AUTO.model_copy(update=fact_overrides), knowledge=KnowledgeFacts(problems=knowledge))
    out = decide(plan(), stress(), COMPRESS_OK, incident(), POLICY, f)
    assert out.decision == "block_and_escalate"
    assert out.rule_ids == [rule]
    assert out.facts == f


def test_unknown_action_says_which_services_the_action_is_catalogued_for():
    f = GateFacts(action=ActionFacts(action="restart_api_pods", catalogued=False, services=["payments-api"]))
    out = decide(plan(action="restart_api_pods"), stress(), COMPRESS_OK,
                 incident().model_copy(update={"service": "checkout-web"}), POLICY, f)
    assert out.rule_ids == ["unknown_action"]
    assert "not catalogued for service checkout-web" in out.reasons[0].message
    assert "payments-api" in out.reasons[0].message


def test_forbidden_action_needs_no_reply_it_could_accept_even_when_critical_and_confident():
    for severity in ("low", "critical"):
        out = decide(plan(10), stress(), COMPRESS_OK, incident(severity), POLICY, facts(automation="never"))
        assert "forbidden_action" in out.rule_ids
        assert out.approval_required == "forbidden"
        assert "by hand, outside the governor" in next(r.message for r in out.reasons
                                                        if r.rule_id == "forbidden_action")


def test_requires_approval_alone_is_approvable_with_a_plain_approve():
    out = decide(plan(9.0), stress(), COMPRESS_OK, incident(), POLICY,
                 facts(automation="approval", risk="medium", reversible=False))
    assert out.rule_ids == ["requires_approval"]
    assert out.approval_required == "approve"
    assert "irreversible" in out.reasons[0].message


def test_knowledge_unavailable_lists_every_problem_and_blocks_a_perfect_plan():
    f = GateFacts(action=AUTO, knowledge=KnowledgeFacts(problems=["the policies index is empty",
                                                                  "the action catalogue (x) is empty or missing"]))
    out = decide(plan(10), stress(), COMPRESS_OK, incident(), POLICY, f)
    assert out.rule_ids == ["knowledge_unavailable"]
    assert "policies index is empty" in out.reasons[0].message and "catalogue" in out.reasons[0].message


def test_the_facts_are_part_of_the_decision_id():
    base = decide(plan(), stress(), COMPRESS_OK, incident(), POLICY, FACTS)
    riskier = decide(plan(), stress(), COMPRESS_OK, incident(), POLICY, facts(risk="medium"))
    unavailable = decide(plan(), stress(), COMPRESS_OK, incident(), POLICY,
                         GateFacts(action=AUTO, knowledge=KnowledgeFacts(problems=["x"])))
    assert len({base.decision_id, riskier.decision_id, unavailable.decision_id}) == 3


def test_missing_plan_fails_closed_with_invalid_output_only():
    compress = CompressOutput(context_mode="full_context", output_contract_valid=False,
                              contract_errors=["plan: no JSON object found in the reply"])
    out = decide(None, stress(agent_report_valid=False), compress, incident(), POLICY, GateFacts())
    assert out.decision == "block_and_escalate"
    assert out.rule_ids == ["invalid_output"]
    assert out.confidence_final == POLICY.confidence_floor
    assert out.approval_required == "force_override"


def test_invalid_contract_blocks_even_when_everything_else_passes():
    compress = CompressOutput(context_mode="compressed_context", output_contract_valid=False,
                              contract_errors=["stress: field 'confidence_post_stress': too large"])
    out = decide(plan(), stress(), compress, incident(), POLICY, FACTS)
    assert out.rule_ids == ["invalid_output"]


def test_critical_always_requires_force_override_even_with_high_confidence():
    out = decide(plan(10), stress(), COMPRESS_OK, incident("critical"), POLICY, FACTS)
    assert out.approval_required == "force_override"


def test_blocked_with_confidence_below_five_requires_force_override():
    out = decide(plan(4.0), stress(policy_conflicts=["pol-1"]), COMPRESS_OK, incident(), POLICY, FACTS)
    assert out.confidence_final < 5.0
    assert out.approval_required == "force_override"


@pytest.mark.parametrize(("confidence", "required"), [(5.0, "approve"), (9.0, "approve"), (4.99, "force_override")])
def test_blocked_with_confidence_at_or_above_five_requires_approve(confidence, required):
    """The refusal threshold is 5.0: exactly 5.0 still takes APPROVE, just below needs FORCE_OVERRIDE."""
    out = decide(plan(confidence), stress(evidence_coverage=0.0, supporting_doc_ids=[]), COMPRESS_OK, incident(),
                 POLICY, FACTS)
    assert out.decision == "block_and_escalate" and "insufficient_evidence" in out.rule_ids
    assert out.confidence_final == confidence
    assert out.approval_required == required


def test_confidence_follows_the_design_order_with_framework_scores():
    scores = FrameworkScores(model="m", ecs=8.0, ci=0.5)
    s = stress(contradiction_count=1, contradicting_doc_ids=["ev-1"], framework_scores=scores,
               confidence_post_stress=9.0)
    initial, final = final_confidence(plan(6.0), s, POLICY)
    # ecs: (6 + 8/10*8)/2 = 6.2; min(6.2, 9) = 6.2; penalty 0.9*1*(2-0.5) = 1.35 -> 4.85
    assert initial == 6.0
    assert final == pytest.approx(4.85)


def test_agent_post_stress_confidence_can_lower_but_never_raise():
    lowered = final_confidence(plan(8.0), stress(confidence_post_stress=3.0), POLICY)[1]
    raised = final_confidence(plan(2.0), stress(confidence_post_stress=9.0), POLICY)[1]
    assert lowered == 3.0
    assert raised == 2.0


def test_conflict_costs_an_extra_penalty_and_confidence_never_drops_below_the_floor():
    with_conflict = final_confidence(plan(8.0), stress(policy_conflicts=["p"]), POLICY)[1]
    assert with_conflict == pytest.approx(6.5)
    floor = final_confidence(plan(1.5), stress(contradiction_count=5, contradicting_doc_ids=list("abcde")), POLICY)[1]
    assert floor == POLICY.confidence_floor


def test_same_inputs_give_the_same_decision_and_id():
    a = decide(plan(), stress(), COMPRESS_OK, incident(), POLICY, FACTS)
    b = decide(plan(), stress(), COMPRESS_OK, incident(), POLICY, FACTS)
    assert a == b
    other = decide(plan(7.0), stress(), COMPRESS_OK, incident(), POLICY, FACTS)
    assert other.decision_id != a.decision_id


def test_decision_carries_the_config_hash_and_it_changes_with_thresholds():
    out = decide(plan(), stress(), COMPRESS_OK, incident(), POLICY, FACTS)
    assert out.config_hash == POLICY.config_hash
    stricter = GatePolicy(**{**POLICY.model_dump(), "coverage_threshold": 0.5})
    assert stricter.config_hash != POLICY.config_hash

"""Every gate threshold at its exact boundary and one step either side.

A mutation of the comparison (``<`` into ``<=``, ``>=`` into ``>``) must fail a test here: each
case pins the outcome at the boundary and just off it. The approval TTL and role counts are
tested in ``test_approval_authority.py``.
"""

from __future__ import annotations

import pytest

from safety_governor.config import GatePolicy, load_gate_policy
from safety_governor.gate import decide, final_confidence
from safety_governor.models import ActionFacts, CompressOutput, GateFacts, Incident, PlanOutput, StressOutput

POLICY = load_gate_policy()
FACTS = GateFacts(action=ActionFacts(action="throttle_traffic_and_tune_pool", catalogued=True,
                                     services=["payments-api"], automation="auto", risk="low", reversible=True))
COMPRESS_OK = CompressOutput(context_mode="compressed_context", output_contract_valid=True)
INCIDENT = Incident(id="inc-b", service="payments-api", severity="medium", summary="latency spike")
STEP = 0.01


def plan(confidence: float) -> PlanOutput:
    return PlanOutput(proposed_action="throttle_traffic_and_tune_pool", key_claims=["a"], confidence_initial=confidence)


def stress(**overrides) -> StressOutput:
    values = dict(contradiction_count=0, evidence_coverage=1.0, supporting_doc_ids=["ev-1"])
    values.update(overrides)
    return StressOutput(**values)


def contradicted(count: int) -> StressOutput:
    return stress(contradiction_count=count, contradicting_doc_ids=[f"ev-c{i}" for i in range(count)])


def test_the_shipped_thresholds_are_the_ones_these_boundaries_assume():
    assert POLICY.contradiction_block_threshold == 2
    assert POLICY.coverage_threshold == 0.34
    assert POLICY.refusal_confidence_threshold == 5.0
    assert POLICY.execute_confidence_floor == 5.0


@pytest.mark.parametrize(("count", "blocks"), [(1, False), (2, True), (3, True)])
def test_contradictions_block_from_exactly_the_threshold(count, blocks):
    out = decide(plan(10), contradicted(count), COMPRESS_OK, INCIDENT, POLICY, FACTS)
    assert ("contradictions" in out.rule_ids) is blocks


@pytest.mark.parametrize(("count", "expected"), [
    (1, 10 - 0.9),                # below the threshold: the per-contradiction penalty only
    (2, 10 - 2 * 0.9 - 1.5),      # exactly at it: the extra conflict penalty applies
    (3, 10 - 3 * 0.9 - 1.5),
])
def test_the_extra_penalty_starts_exactly_at_the_contradiction_threshold(count, expected):
    assert final_confidence(plan(10), contradicted(count), POLICY)[1] == pytest.approx(expected)


@pytest.mark.parametrize(("coverage", "blocks"), [(0.34 - 0.0001, True), (0.34, False), (0.34 + 0.0001, False),
                                                   (0.33, True), (0.35, False)])
def test_insufficient_evidence_below_coverage_034_only(coverage, blocks):
    out = decide(plan(8), stress(evidence_coverage=coverage, supporting_doc_ids=[]), COMPRESS_OK, INCIDENT,
                 POLICY, FACTS)
    assert ("insufficient_evidence" in out.rule_ids) is blocks


@pytest.mark.parametrize(("confidence", "required"), [(5.0 - STEP, "force_override"), (5.0, "approve"),
                                                      (5.0 + STEP, "approve")])
def test_approve_is_refused_strictly_below_the_refusal_threshold(confidence, required):
    # A block that does not touch the confidence: coverage 0 and no support.
    out = decide(plan(confidence), stress(evidence_coverage=0.0, supporting_doc_ids=[]), COMPRESS_OK, INCIDENT,
                 POLICY, FACTS)
    assert out.confidence_final == pytest.approx(confidence)
    assert out.decision == "block_and_escalate"
    assert out.approval_required == required


@pytest.mark.parametrize(("confidence", "decision"), [(5.0 - STEP, "block_and_escalate"), (5.0, "execute"),
                                                      (5.0 + STEP, "execute")])
def test_the_gate_executes_on_its_own_from_exactly_the_execute_floor(confidence, decision):
    out = decide(plan(confidence), stress(), COMPRESS_OK, INCIDENT, POLICY, FACTS)
    assert out.decision == decision
    assert out.rule_ids == ([] if decision == "execute" else ["low_confidence"])


@pytest.mark.parametrize(("confidence", "rules", "required"), [
    (6.0 - STEP, ["low_confidence"], "approve"),
    (6.0, [], "none"),
    (5.0 - STEP, ["low_confidence"], "force_override"),
])
def test_a_floor_above_the_refusal_threshold_makes_low_confidence_need_an_approve(confidence, rules, required):
    policy = GatePolicy(**{**POLICY.model_dump(), "execute_confidence_floor": 6.0})
    out = decide(plan(confidence), stress(), COMPRESS_OK, INCIDENT, policy, FACTS)
    assert out.rule_ids == rules
    assert out.approval_required == required


def test_a_stricter_contradiction_threshold_moves_both_the_block_and_the_penalty():
    policy = GatePolicy(**{**POLICY.model_dump(), "contradiction_block_threshold": 3})
    two = decide(plan(10), contradicted(2), COMPRESS_OK, INCIDENT, policy, FACTS)
    three = decide(plan(10), contradicted(3), COMPRESS_OK, INCIDENT, policy, FACTS)
    assert "contradictions" not in two.rule_ids and two.confidence_final == pytest.approx(10 - 1.8)
    assert "contradictions" in three.rule_ids and three.confidence_final == pytest.approx(10 - 2.7 - 1.5)

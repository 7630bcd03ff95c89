"""A gate ``execute`` is always executable: the gate reads the catalogue entry for the incident's
service through the same lookup the executor refuses by (``ActionCatalogue.lookup``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from safety_governor.adapters.audit_jsonl import MemoryAudit
from safety_governor.catalogue import ExecutionRefused, prepare_action
from safety_governor.config import DEFAULT_DATA_DIR, Settings
from safety_governor.gate import decide
from safety_governor.knowledge import load_knowledge_file
from safety_governor.models import CompressOutput, GateOutput, Incident, PlanOutput, StressOutput
from safety_governor.replay import base_catalogue, load_scenario, run_scenario, scenario_catalogue

SCENARIOS = sorted((Path(__file__).resolve().parents[1] / "scenarios").glob("*.json"))


def test_no_scenario_execute_is_refused_by_the_executor_for_a_catalogue_reason(tmp_path):
    settings = Settings(output_dir=tmp_path)
    base, actions = load_knowledge_file(DEFAULT_DATA_DIR / "sample_data.json"), base_catalogue(settings)
    executes = 0
    for path in SCENARIOS:
        scenario = load_scenario(path)
        audit = MemoryAudit()
        run_scenario(scenario, base, settings, audit=audit, actions=actions)
        refused = [e for e in audit.records.get("workflow_events", []) if e["kind"] == "execution_refused"]
        (run,) = audit.records["agent_runs"]
        gate = GateOutput.model_validate(run["gate"])
        if gate.decision != "execute":
            continue
        executes += 1
        assert refused == [], f"{path.name}: {refused}"
        # The catalogue check itself, whoever runs it: the entry exists for this service and may run.
        prepare_action(scenario_catalogue(scenario, actions), scenario.incident, gate, authorised_by="gate",
                       allow_missing=True)
    assert executes >= 5


def test_every_service_and_catalogue_action_the_gate_would_execute_the_executor_accepts(governor):
    services = sorted({a.services[0] for a in governor.actions if a.services != ["*"]} | {"ledger-api"})
    compress = CompressOutput(context_mode="full_context", output_contract_valid=True)
    clean = StressOutput(contradiction_count=0, evidence_coverage=1.0, supporting_doc_ids=["ev-1"])
    checked = 0
    for service in services:
        incident = Incident(id="inc-x", service=service, severity="medium", summary="s")
        for action in governor.actions:
            plan = PlanOutput(proposed_action=action.id, confidence_initial=10)
            facts = governor.pipeline.gate_facts(incident, plan)
            gate = decide(plan, clean, compress, incident, governor.policy, facts)
            if gate.decision != "execute":
                assert set(gate.rule_ids) & {"unknown_action", "requires_approval", "forbidden_action"}
                continue
            checked += 1
            try:
                prepare_action(governor.executor.catalogue, incident, gate, authorised_by="gate", allow_missing=True)
            except ExecutionRefused as exc:  # pragma: no cover - the failure message is the point
                pytest.fail(f"gate executes {action.id} on {service} but the executor refuses: {exc}")
    assert checked >= 20

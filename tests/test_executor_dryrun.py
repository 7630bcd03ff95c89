"""The dry-run executor: renders exactly what would run, records it, and refuses what may not run."""

from __future__ import annotations

import pytest

from safety_governor.adapters.executor_dryrun import DryRunExecutor
from safety_governor.approvals import ApprovalPolicy
from safety_governor.errors import ExecutionRefused
from safety_governor.models import Incident
from safety_governor.ports import Executor


def _incident(knowledge, incident_id: str) -> Incident:
    return Incident.model_validate(next(i for i in knowledge["incidents"] if i["id"] == incident_id))


def test_the_dry_run_executor_satisfies_the_executor_port(governor):
    executor: Executor = governor.executor
    assert isinstance(executor, DryRunExecutor) and executor.name == "dry_run"


def test_preview_names_the_action_its_parameters_risk_and_rollback_and_execute_records_the_same_text(
    governor, knowledge, store
):
    a = governor.pipeline.assess(_incident(knowledge, "inc-002"))
    assert a.gate.decision == "execute" and a.gate.proposed_action == "pause_noncritical_batch_jobs"
    preview = governor.executor.preview(a.incident, a.gate)
    assert preview == (f"[dry-run] would run pause_noncritical_batch_jobs(job_classes='reports,exports') on "
                       f"billing-batch [risk low, reversible via resume_batch_jobs] for inc-002 "
                       f"(decision {a.gate.decision_id})")
    record = governor.executor.execute(a.incident, a.gate, authorised_by="gate")
    assert record.status == "dry_run" and record.preview == preview
    [doc] = store.events("action_executions", "inc-002")
    assert doc["id"] == record.execution_id and doc["parameters"] == {"job_classes": "reports,exports"}
    assert doc["rollback_action"] == "resume_batch_jobs" and doc["reversible"] is True


def test_supplied_parameters_are_validated_and_rendered(governor, knowledge):
    a = governor.pipeline.assess(_incident(knowledge, "inc-002"))
    record = governor.executor.execute(a.incident, a.gate, authorised_by="gate",
                                       parameters={"job_classes": "reports"})
    assert "job_classes='reports'" in record.preview
    with pytest.raises(ExecutionRefused, match="'job_classes' must be of type string"):
        governor.executor.execute(a.incident, a.gate, authorised_by="gate", parameters={"job_classes": 3})
    with pytest.raises(ExecutionRefused, match="unknown parameter"):
        governor.executor.execute(a.incident, a.gate, authorised_by="gate", parameters={"everything": True})


def test_a_required_parameter_nobody_supplied_is_a_visible_placeholder_in_a_dry_run(governor, knowledge):
    a = governor.pipeline.assess(_incident(knowledge, "inc-009"))
    assert a.gate.proposed_action == "shift_traffic_to_healthy_pop"
    record = governor.executor.execute(a.incident, a.gate, authorised_by="gate")
    assert "pop=<required string>" in record.preview and record.preview.endswith("a real run needs pop")


def test_an_action_blocked_by_the_gate_is_refused_unless_a_human_authorised_it(governor, knowledge, store):
    a = governor.pipeline.assess(_incident(knowledge, "inc-005"))
    assert a.gate.decision == "block_and_escalate"
    for nobody in ("gate", "", "  "):
        with pytest.raises(ExecutionRefused, match="no human authorised it"):
            governor.executor.execute(a.incident, a.gate, authorised_by=nobody)
    assert store.events("action_executions", "inc-005") == []
    assert governor.executor.execute(a.incident, a.gate, authorised_by="oncall").status == "dry_run"


def test_actions_outside_the_catalogue_or_for_another_service_are_refused(governor, knowledge, store):
    a = governor.pipeline.assess(_incident(knowledge, "inc-002"))
    uncatalogued = a.gate.model_copy(update={"proposed_action": "compact_ledger_segments"})
    with pytest.raises(ExecutionRefused, match="'compact_ledger_segments' is not in the action catalogue"):
        governor.executor.execute(a.incident, uncatalogued, authorised_by="oncall")
    elsewhere = a.gate.model_copy(update={"proposed_action": "restart_nginx"})
    with pytest.raises(ExecutionRefused, match="does not apply to service billing-batch"):
        governor.executor.execute(a.incident, elsewhere, authorised_by="oncall")
    assert governor.executor.preview(a.incident, elsewhere).startswith("[dry-run] would refuse:")
    assert store.events("action_executions", "inc-002") == []


def test_a_decision_for_another_incident_is_refused(governor, knowledge):
    a = governor.pipeline.assess(_incident(knowledge, "inc-002"))
    other = _incident(knowledge, "inc-004")
    with pytest.raises(ExecutionRefused, match="is for inc-002"):
        governor.executor.execute(other, a.gate, authorised_by="oncall")


def test_the_preview_is_in_the_decision_record_that_approval_requests_are_built_from(governor, knowledge, audit):
    record = governor.pipeline.run(_incident(knowledge, "inc-005"), approvals=ApprovalPolicy.of(["oncall"], []))
    assert record.final_state == "pending_approval"
    [decision] = [e for e in audit.records["workflow_events"] if e["kind"] == "gate_decision"]
    assert decision["preview"].startswith("[dry-run] would run enable_reset_rate_limit(")
    assert "on auth-service [risk low, reversible via remove_reset_rate_limit]" in decision["preview"]

"""The execute-time re-check: policies and the incident's state are read again just before running."""

from __future__ import annotations

from safety_governor.adapters.audit_jsonl import MemoryAudit
from safety_governor.adapters.store_sqlite import SQLiteStore
from safety_governor.approvals import ApprovalPolicy
from safety_governor.bootstrap import build
from safety_governor.errors import StoreError
from safety_governor.incident_state import current_state, record_state
from safety_governor.models import Incident

POLICY = ApprovalPolicy.of(["oncall"], ["oncall"])


def _incident(knowledge, incident_id: str) -> Incident:
    return Incident.model_validate(next(i for i in knowledge["incidents"] if i["id"] == incident_id))


def _new_policy(store, service: str, action: str, severities: list[str]) -> None:
    store.index_documents("policies", [{
        "id": "pol-freeze-late", "service": service, "blocked_actions": [action], "severities": severities,
        "rule": "Change freeze declared after the gate decided."}])


def _kinds(audit: MemoryAudit) -> list[str]:
    return [e["kind"] for e in audit.records["workflow_events"]]


def test_a_policy_added_between_gate_and_execute_blocks_the_auto_execution_and_re_escalates(
    governor, knowledge, store, audit
):
    a = governor.pipeline.assess(_incident(knowledge, "inc-004"))
    assert a.gate.decision == "execute"
    session = governor.pipeline.approval_session(a, POLICY)
    governor.pipeline.record_decision(a)
    assert governor.pipeline.recheck(a) == []
    _new_policy(store, "checkout-web", "rollback_last_deploy", ["medium"])
    assert governor.pipeline.execute(a, session) is None
    assert store.events("action_executions", "inc-004") == []
    [blocked] = [e for e in audit.records["workflow_events"] if e["kind"] == "execution_recheck_blocked"]
    assert blocked["reasons"] == ["policy pol-freeze-late now blocks rollback_last_deploy for checkout-web at "
                                  "medium (added after the gate decided)"]
    assert "execution_authorised" not in _kinds(audit)
    assert current_state(store, "inc-004") == "escalated"
    assert [e["kind"] for e in store.events("workflow_events", "inc-004")][-2:] == [
        "execution_recheck_blocked", "incident_state"]


def test_a_newly_blocking_policy_stops_even_a_force_override_made_without_it(governor, knowledge, store, audit):
    a = governor.pipeline.assess(_incident(knowledge, "inc-005"))
    assert a.gate.approval_required == "force_override" and a.gate.policy_conflicts == []
    session = governor.pipeline.approval_session(a, POLICY)
    governor.pipeline.record_decision(a)
    session.apply("oncall", "FORCE_OVERRIDE security on the bridge")
    governor.pipeline.record_approval(a, session)
    _new_policy(store, "auth-service", "enable_reset_rate_limit", ["critical"])
    assert governor.pipeline.execute(a, session) is None
    assert "execution_recheck_blocked" in _kinds(audit) and "execution_authorised" not in _kinds(audit)


def test_an_override_of_a_conflict_known_at_gate_time_still_executes(governor, knowledge, store, audit):
    a = governor.pipeline.assess(_incident(knowledge, "inc-001"))
    assert a.gate.policy_conflicts == ["pol-payments-db-01"]
    session = governor.pipeline.approval_session(a, POLICY)
    governor.pipeline.record_decision(a)
    session.apply("oncall", "FORCE_OVERRIDE db team confirmed headroom")
    governor.pipeline.record_approval(a, session)
    record = governor.pipeline.execute(a, session, parameters={"replicas": 12})
    assert record is not None and "replicas=12" in record.preview
    assert "execution_recheck_blocked" not in _kinds(audit)


def test_an_incident_rejected_meanwhile_does_not_execute_and_stays_rejected(governor, knowledge, store, audit):
    a = governor.pipeline.assess(_incident(knowledge, "inc-002"))
    session = governor.pipeline.approval_session(a, POLICY)
    governor.pipeline.record_decision(a)
    # Another channel (the TUI, Slack) recorded a REJECT after this session was opened.
    store.append_event("workflow_events", {"kind": "approval_accepted", "incident_id": "inc-002",
                                           "command": "REJECT", "state": "rejected", "user": "oncall"})
    assert governor.pipeline.execute(a, session) is None
    [blocked] = [e for e in audit.records["workflow_events"] if e["kind"] == "execution_recheck_blocked"]
    assert blocked["reasons"] == ["incident inc-002 was rejected meanwhile"]
    assert current_state(store, "inc-002") == "rejected"


def test_an_incident_resolved_meanwhile_does_not_execute(governor, knowledge, store):
    a = governor.pipeline.assess(_incident(knowledge, "inc-006"))
    session = governor.pipeline.approval_session(a, POLICY)
    governor.pipeline.record_decision(a)
    record_state(store, "inc-006", "resolved", by="oncall", reason="fixed by the search team")
    assert governor.pipeline.execute(a, session) is None
    record_state(store, "inc-006", "open", by="oncall", reason="it came back")
    assert governor.pipeline.execute(a, session) is not None


def test_the_full_run_of_an_incident_already_resolved_ends_execution_refused(governor, knowledge, store):
    record_state(store, "inc-002", "resolved", by="oncall")
    record = governor.pipeline.run(_incident(knowledge, "inc-002"), approvals=POLICY)
    assert record.gate.decision == "execute" and record.final_state == "execution_refused"
    assert record.executed is False and store.events("action_executions", "inc-002") == []


class _PoliciesUnreadable(SQLiteStore):
    def __init__(self) -> None:
        super().__init__(":memory:")
        self.broken = False

    def policy_conflicts(self, service, action, severity):
        if self.broken:
            raise StoreError("store query failed: disk I/O error")
        return super().policy_conflicts(service, action, severity)


def test_a_store_that_cannot_answer_the_re_check_stops_the_execution(knowledge, settings):
    from safety_governor.knowledge import seed_store

    store = _PoliciesUnreadable()
    seed_store(store, knowledge, source="test")
    audit = MemoryAudit()
    governor = build(settings, store=store, audit=audit)
    a = governor.pipeline.assess(_incident(knowledge, "inc-004"))
    session = governor.pipeline.approval_session(a, POLICY)
    governor.pipeline.record_decision(a)
    store.broken = True
    assert governor.pipeline.execute(a, session) is None
    [blocked] = [e for e in audit.records["workflow_events"] if e["kind"] == "execution_recheck_blocked"]
    assert blocked["reasons"][0].startswith("cannot re-read policies and incident state")
    store.close()

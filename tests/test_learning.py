"""Learning: a verified resolution becomes a runbook entry that waits for human review, is never
evidence for its own incident, and leaves retrieval when revoked."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from safety_governor import cli
from safety_governor.adapters.store_sqlite import SQLiteStore
from safety_governor.approval_state import ApprovalState
from safety_governor.authority import os_account
from safety_governor.approvals import ApprovalPolicy
from safety_governor.errors import InputError
from safety_governor.knowledge import seed_store
from safety_governor.learning import (
    LEARNED_SOURCE,
    approve_runbook,
    knowledge_base_counts,
    learn_runbook,
    review_queue,
    revoke_runbook,
)
from safety_governor.models import ExecutionRecord, GateOutput, Incident, PlanOutput
from safety_governor.verification import VerificationResult

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def _records(incident: Incident, action: str, *, resolved: bool = True):
    gate = GateOutput(incident_id=incident.id, decision="execute", approval_required="none", proposed_action=action,
                      confidence_initial=7, confidence_final=7, confidence_delta=0, contradiction_count=0,
                      evidence_coverage=1, context_mode="full_context", decision_id=f"dec-{incident.id}",
                      config_hash="sha256:test")
    execution = ExecutionRecord(execution_id=f"exe-{incident.id}", incident_id=incident.id,
                                decision_id=gate.decision_id, action=action, mode="dry_run", status="dry_run",
                                preview="[dry-run] …", authorised_by="gate", at=T0)
    verification = VerificationResult(
        incident_id=incident.id, service=incident.service, action=action, resolved=resolved, credited=resolved,
        error_rate_before=0.4, error_rate_after=0.02 if resolved else 0.4, threshold=0.1, window_seconds=10,
        reason="recovered" if resolved else "still failing", started_at=T0, finished_at=T0 + timedelta(seconds=3))
    return gate, execution, verification


def _resolve(governor, knowledge, store, incident_id: str):
    """Run one incident for real: gate, dry run, verification over recovering traffic."""
    incident = Incident.model_validate(next(i for i in knowledge["incidents"] if i["id"] == incident_id))
    a = governor.pipeline.assess(incident)
    session = governor.pipeline.approval_session(a, ApprovalPolicy.of(["oncall"], []))
    governor.pipeline.record_decision(a)
    execution = governor.pipeline.execute(a, session)
    now = [execution.at]

    def sleep(seconds):
        now[0] += timedelta(seconds=seconds)
        store.index_documents("logs", [
            {"id": f"{incident_id}-{now[0].timestamp()}-{n}", "timestamp": now[0].isoformat(),
             "service": incident.service, "request": "/", "response": "200", "bytes": 10} for n in range(10)])

    verification = governor.pipeline.verify(a, execution, window_seconds=5, poll_interval=1,
                                            clock=lambda: now[0], sleep=sleep)
    assert verification.resolved
    return a, execution, verification


def _retrievable(governor, service: str, query: str) -> list[str]:
    return [h.id for h in governor.tools.search_runbooks(query, service, top_k=50).hits]


def test_the_learning_quarantine_end_to_end(governor, knowledge, store, audit):
    before = knowledge_base_counts(store)
    a, execution, verification = _resolve(governor, knowledge, store, "inc-004")
    doc = governor.pipeline.learn(a, execution, verification)
    assert doc["status"] == "pending_review" and doc["source"] == LEARNED_SOURCE
    assert doc["incident_id"] == "inc-004" and doc["recommended_action"] == "rollback_last_deploy"
    assert doc["decision_id"] == a.gate.decision_id and doc["execution_id"] == execution.execution_id
    query = a.incident.summary

    # Pending: indexed and counted, but never retrieved as a plan.
    assert [d["id"] for d in review_queue(store)] == [doc["id"]]
    assert doc["id"] not in _retrievable(governor, "checkout-web", query)
    counts = knowledge_base_counts(store)
    assert counts["runbooks_total"] == before["runbooks_total"] + 1
    assert counts["runbooks"] == before["runbooks"] and counts["pending_review"] == 1

    # Approved: retrievable for other incidents, never for its own.
    approve_runbook(store, doc["id"], "oncall", audit=audit)
    assert doc["id"] in _retrievable(governor, "checkout-web", query)
    [hit] = [h for h in governor.tools.search_runbooks(query, "checkout-web", top_k=50).hits if h.id == doc["id"]]
    assert hit.incident_id == "inc-004" and hit.source == LEARNED_SOURCE
    assert review_queue(store) == []
    assert knowledge_base_counts(store)["learned_approved"] == 1
    again = governor.pipeline.assess(a.incident)
    assert doc["id"] not in again.plan.retrieved_context_ids
    sibling = a.incident.model_copy(update={"id": "inc-004b"})
    assert doc["id"] in governor.pipeline.assess(sibling).plan.retrieved_context_ids

    # Revoked: gone from retrieval, and stays out.
    revoke_runbook(store, doc["id"], "oncall", reason="superseded by the release runbook", audit=audit)
    assert doc["id"] not in _retrievable(governor, "checkout-web", query)
    assert knowledge_base_counts(store)["revoked"] == 1
    with pytest.raises(InputError, match="is revoked; only pending_review entries can be approved"):
        approve_runbook(store, doc["id"], "oncall")

    kinds = [e["kind"] for e in store.events("workflow_events", "inc-004")]
    assert kinds[-3:] == ["runbook_learned", "runbook_approved", "runbook_revoked"]
    audited = [e for e in audit.records["workflow_events"] if e["kind"].startswith("runbook_")]
    assert [(e["kind"], e.get("user")) for e in audited] == [
        ("runbook_learned", None), ("runbook_approved", "oncall"), ("runbook_revoked", "oncall")]


def test_an_approved_learned_entry_never_makes_an_uncatalogued_action_executable(governor, store):
    incident = Incident(id="inc-ledger", service="ledger-api", severity="medium", summary="segment bloat")
    doc = learn_runbook(store, incident, *_records(incident, "compact_ledger_segments"))
    approve_runbook(store, doc["id"], "oncall")
    assert "compact_ledger_segments" in store.known_actions()
    # Only the catalogue makes an action known (for the incident's service): a runbook, learned or
    # not, cannot, because the executor would refuse it.
    other = incident.model_copy(update={"id": "inc-other"})
    plan = PlanOutput(proposed_action="compact_ledger_segments", confidence_initial=8)
    facts = governor.pipeline.gate_facts(other, plan)
    assert facts.action is not None and not facts.action.catalogued
    revoke_runbook(store, doc["id"], "oncall")
    assert "compact_ledger_segments" not in store.known_actions()

def test_nothing_is_learned_from_an_unverified_or_mismatched_resolution():
    store = SQLiteStore(":memory:")
    incident = Incident(id="inc-x", service="checkout-web", severity="medium", summary="5xx")
    with pytest.raises(InputError, match="not learning from an unverified resolution"):
        learn_runbook(store, incident, *_records(incident, "rollback_last_deploy", resolved=False))
    gate, execution, verification = _records(incident, "rollback_last_deploy")
    with pytest.raises(InputError, match="different actions"):
        learn_runbook(store, incident, gate, execution.model_copy(update={"action": "clear_session_cache"}),
                      verification)
    assert store.count("runbooks") == 0
    store.close()


def test_a_live_writers_text_is_used_and_a_failing_writer_falls_back_to_the_deterministic_text():
    store = SQLiteStore(":memory:")
    first = Incident(id="inc-w1", service="checkout-web", severity="medium", summary="5xx after deploy")
    written = learn_runbook(store, first, *_records(first, "rollback_last_deploy"),
                            writer=lambda incident, gate, verification: "Roll back, then watch the 5xx rate.")
    assert written["body"] == "Roll back, then watch the 5xx rate." and written["body_source"] == "writer"

    def broken(incident, gate, verification):
        raise TimeoutError("agent backend timed out")

    second = Incident(id="inc-w2", service="checkout-web", severity="medium", summary="5xx after deploy")
    fallback = learn_runbook(store, second, *_records(second, "rollback_last_deploy"), writer=broken)
    assert fallback["body_source"] == "deterministic"
    assert fallback["body"].startswith("When checkout-web shows: 5xx after deploy, run rollback_last_deploy.")
    assert "fell from 40.0% to 2.0%" in fallback["body"]
    assert learn_runbook(store, second, *_records(second, "rollback_last_deploy"))["body"] == fallback["body"]
    store.close()


def test_learning_the_same_decision_again_never_resets_a_reviewed_entry():
    store = SQLiteStore(":memory:")
    incident = Incident(id="inc-r", service="checkout-web", severity="medium", summary="5xx")
    doc = learn_runbook(store, incident, *_records(incident, "rollback_last_deploy"))
    approve_runbook(store, doc["id"], "oncall")
    again = learn_runbook(store, incident, *_records(incident, "rollback_last_deploy"))
    assert again["id"] == doc["id"] and again["status"] == "approved" and store.count("runbooks") == 1
    store.close()


def test_the_runbooks_cli_reviews_approves_and_revokes_on_the_configured_store(
    knowledge, tmp_path, monkeypatch, capsys
):
    db = tmp_path / "governor.db"
    store = SQLiteStore(db)
    seed_store(store, knowledge, source="test")
    incident = Incident(id="inc-cli", service="checkout-web", severity="medium", summary="5xx after deploy")
    doc = learn_runbook(store, incident, *_records(incident, "rollback_last_deploy"))
    store.close()
    approvers = tmp_path / "approvers.json"
    approvers.write_text(json.dumps({"version": "t", "users": {
        "alice": {"roles": ["sre"], "approve": True, "os_accounts": [os_account()]}}}), encoding="utf-8")
    # The caller's environment naming mallory an approver counts for nothing: identity is the OS
    # account, authority the approvers file.
    for name, value in {"GOVERNOR_OUTPUT_DIR": str(tmp_path / "out"), "GOVERNOR_APPROVERS_FILE": str(approvers),
                        "GOVERNOR_APPROVERS": "mallory", "GOVERNOR_OVERRIDERS": "mallory",
                        "GOVERNOR_LOCAL_USER": "mallory"}.items():
        monkeypatch.setenv(name, value)

    assert cli.main(["runbooks", "review", "--store", str(db)]) == 0
    assert doc["id"] in capsys.readouterr().out
    assert cli.main(["runbooks", "approve", doc["id"], "--user", "mallory", "--store", str(db)]) == 2
    assert "--user mallory refused: OS account" in capsys.readouterr().err
    assert cli.main(["runbooks", "approve", "rbk-nope", "--store", str(db)]) == 2
    assert capsys.readouterr().err.strip() == "error: runbook rbk-nope not found"
    # No governor runs on the store: the request waits (nothing changes, nothing is audited yet).
    assert cli.main(["runbooks", "approve", doc["id"], "--store", str(db)]) == 0
    out = capsys.readouterr().out
    assert "no governor is running" in out and "as alice" in out and "the request waits" in out
    assert cli.main(["runbooks", "revoke", doc["id"], "--reason", "wrong", "--store", str(db)]) == 0
    assert "queued revoke" in capsys.readouterr().out
    assert not (tmp_path / "out" / "workflow_events.jsonl").exists()
    check = SQLiteStore(db)
    assert check.get("runbooks", doc["id"])["status"] == "pending_review"
    assert [r["action"] for r in ApprovalState(check).pending_runbook_reviews()] == ["approve", "revoke"]
    check.close()


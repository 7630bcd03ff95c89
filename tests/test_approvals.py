"""Approval replies: whole-word commands, configured users only, critical refuses APPROVE."""

from __future__ import annotations

from pathlib import Path

import pytest

from safety_governor.adapters.audit_jsonl import MemoryAudit
from safety_governor.approvals import ApprovalPolicy, ApprovalSession, parse_command
from safety_governor.config import Settings
from safety_governor.replay import replay

POLICY = ApprovalPolicy.of(["alice", "bob"], ["bob"])


def session(decision="block_and_escalate", required="approve") -> ApprovalSession:
    return ApprovalSession(incident_id="inc-1", decision=decision, approval_required=required, policy=POLICY,
                           refusal_text="APPROVE refused: critical")


@pytest.mark.parametrize(
    ("text", "command", "rest"),
    [
        ("APPROVE", "APPROVE", ""),
        ("  approve  ", "APPROVE", ""),
        ("Force_Override db team on the bridge", "FORCE_OVERRIDE", "db team on the bridge"),
        ("HOLD please", "HOLD", "please"),
        ("reject", "REJECT", ""),
    ],
)
def test_commands_are_the_first_word_case_insensitive(text, command, rest):
    assert parse_command(text) == (command, rest)


@pytest.mark.parametrize("text", ["ok", "yes", "I approve", "approved", "APPROVE.", "APPROVEX", "lgtm APPROVE", ""])
def test_lookalikes_and_substrings_are_not_commands(text):
    assert parse_command(text)[0] is None
    s = session()
    event = s.apply("alice", text)
    assert event.outcome == "ignored"
    assert not s.may_execute


def test_approve_from_an_approver_authorises_a_non_critical_block():
    s = session()
    assert s.apply("alice", "APPROVE").outcome == "accepted"
    assert s.may_execute and s.authorised_by == "alice"


def test_unconfigured_user_does_not_count():
    s = session()
    assert s.apply("mallory", "APPROVE").outcome == "unauthorized"
    assert not s.may_execute


def test_approve_is_refused_when_force_override_is_required_however_often_repeated():
    s = session(required="force_override")
    for _ in range(3):
        event = s.apply("bob", "APPROVE")
        assert event.outcome == "refused"
        assert "critical" in event.reason
    assert not s.may_execute
    assert s.approve_refused


def test_force_override_needs_a_reason_and_an_overrider():
    s = session(required="force_override")
    assert s.apply("bob", "FORCE_OVERRIDE").outcome == "invalid"
    assert s.apply("alice", "FORCE_OVERRIDE bridge call agreed").outcome == "unauthorized"
    assert not s.may_execute
    assert s.apply("bob", "FORCE_OVERRIDE bridge call agreed").outcome == "accepted"
    assert s.may_execute and s.override_reason == "bridge call agreed" and s.authorised_by == "bob"


def test_reject_is_final():
    s = session()
    s.apply("alice", "REJECT")
    assert s.apply("alice", "APPROVE").outcome == "ignored"
    assert s.apply("bob", "FORCE_OVERRIDE because").outcome == "ignored"
    assert s.closed and not s.may_execute


def test_hold_stops_an_auto_execution_until_approved():
    s = session(decision="execute", required="none")
    assert s.may_execute
    s.apply("alice", "HOLD")
    assert not s.may_execute and s.state == "held"
    s.apply("alice", "APPROVE")
    assert s.may_execute and s.authorised_by == "alice"


def test_hold_after_approval_is_too_late():
    s = session()
    s.apply("alice", "APPROVE")
    assert s.apply("alice", "HOLD").outcome == "ignored"
    assert s.may_execute


def test_a_forbidden_action_refuses_approve_and_force_override_from_anyone_and_reject_still_closes():
    policy = ApprovalPolicy.of(["alice"], ["alice"])
    session = ApprovalSession(incident_id="inc-f", decision="block_and_escalate", approval_required="forbidden",
                              policy=policy)
    approve = session.apply("alice", "APPROVE")
    override = session.apply("alice", "FORCE_OVERRIDE the table is unused since 2024, DBA agrees")
    assert (approve.outcome, override.outcome) == ("refused", "refused")
    assert "by hand, outside the governor" in approve.reason
    assert not session.may_execute and session.authorised_by is None
    assert session.apply("alice", "REJECT").outcome == "accepted" and session.state == "rejected"


def test_forbidden_refusals_land_in_the_audit_trail(tmp_path):
    audit = MemoryAudit()
    scenario = Path(__file__).resolve().parents[1] / "scenarios" / "31_forbidden_drop_tables_runbook_no_policy.json"
    (result,), _ = replay([scenario], Settings(output_dir=tmp_path), audit=audit)
    assert not result.executed and result.approval_required == "forbidden"
    refused = [e for e in audit.records["workflow_events"] if e["kind"] == "approval_refused"]
    assert [e["command"] for e in refused] == ["APPROVE", "FORCE_OVERRIDE"]
    assert not [e for e in audit.records["workflow_events"] if e["kind"].startswith("execution")]

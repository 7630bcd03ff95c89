"""Durable approvals across restarts: a file-backed embedded store closed and reopened between
"processes", the real slack-sdk client against a local fake speaking the Slack Web API on
127.0.0.1, and the real pipeline and dry-run executor."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from slack_wire import FakeSlack, closed_port

from safety_governor.adapters.audit_jsonl import MemoryAudit
from safety_governor.adapters.fallbacks import FallbackApprovalChannel
from safety_governor.adapters.inbox_local import LocalInbox
from safety_governor.adapters.slack_approvals import SlackApprovalChannel, default_retry_handlers
from safety_governor.adapters.store_sqlite import SQLiteStore
from safety_governor.approval_state import ApprovalState
from safety_governor.durable_approvals import DurableApprovals
from safety_governor.approvals import ApprovalPolicy
from safety_governor.bootstrap import build, build_approval_policy
from safety_governor.config import Settings
from safety_governor.errors import AuditWriteError
from safety_governor.incident_state import record_state
from safety_governor.knowledge import seed_store
from safety_governor.models import Incident

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"
CRITICAL = Incident.model_validate(
    json.loads((SCENARIOS / "12_force_override_with_reason_executes.json").read_text())["incident"])
POLICY = ApprovalPolicy.of(["UALICE01", "UBOB0001"], ["UBOB0001"])


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FlakyAudit(MemoryAudit):
    """Fails the next ``fail_next`` writes of approval outcomes (a crash in the middle of one)."""

    def __init__(self) -> None:
        super().__init__()
        self.fail_next = 0

    def record(self, stream, record):
        if self.fail_next and str(record.get("kind", "")).startswith("approval_"):
            self.fail_next -= 1
            raise AuditWriteError("disk full")
        super().record(stream, record)


@dataclass
class Process:
    """One run of the governor: its store connection, pipeline, channel and approval loop."""

    store: SQLiteStore
    channel: SlackApprovalChannel
    approvals: DurableApprovals
    audit: MemoryAudit

    def close(self) -> None:
        self.channel.close()
        self.store.close()


@pytest.fixture
def db(tmp_path: Path, knowledge) -> Path:
    path = tmp_path / "governor.db"
    store = SQLiteStore(path)
    seed_store(store, knowledge, source="test")
    store.close()
    return path


@pytest.fixture
def slack():
    fake = FakeSlack().start()
    yield fake
    fake.stop()


def start(db: Path, tmp_path: Path, api_url: str, clock: Clock, *, audit: MemoryAudit | None = None,
          channel_factory=None) -> Process:
    store = SQLiteStore(db)
    audit = audit or MemoryAudit()
    governor = build(Settings(output_dir=tmp_path / "out"), store=store, audit=audit)
    state = ApprovalState(store, audit=audit)
    channel = SlackApprovalChannel(
        token="xoxb-test", channel="#incidents", state=state, approvers=("UALICE01", "UBOB0001"),
        overriders=("UBOB0001",), api_url=api_url, poll_seconds=30, clock=clock,
        retry_handlers=default_retry_handlers(connect_retry_interval=0.01, rate_limit_max_wait=2))
    wrapped = channel_factory(channel) if channel_factory else channel
    return Process(store, channel, DurableApprovals(governor.pipeline, wrapped, state, POLICY), audit)


def blocked(process: Process):
    a = process.approvals.pipeline.assess(CRITICAL)
    process.approvals.pipeline.record_decision(a)
    return a


def test_a_restart_mid_approval_resumes_the_same_thread_on_a_local_fake_slack_and_processes_each_reply_once(
        db, tmp_path, slack):
    clock = Clock()
    first = start(db, tmp_path, slack.url, clock)
    a = blocked(first)
    w = first.approvals.open(a)
    ts = w.handle
    assert ts == slack.top_level()[0]["ts"]
    slack.add_reply(ts, "UALICE01", "APPROVE")
    [progress] = first.approvals.poll()
    assert progress.event.outcome == "refused"
    refusal = [m for m in slack.messages.values() if m.get("thread_ts") == ts and m["user"] == "UBOT0001"]
    assert refusal and refusal[0]["text"].startswith("APPROVE refused for scn-12: the incident is critical")
    first.close()  # the governor stops mid-approval

    clock.now += 60
    second = start(db, tmp_path, slack.url, clock)
    [resumed] = second.approvals.resume()
    assert (resumed.incident_id, resumed.decision_id, resumed.handle) == ("scn-12", a.gate.decision_id, ts)
    assert resumed.session.approve_refused and not resumed.session.may_execute
    slack.add_reply(ts, "UBOB0001", "FORCE_OVERRIDE db team on the bridge, reset flood confirmed")
    [progress] = second.approvals.poll()  # the APPROVE seen before the restart is not applied again
    assert progress.event.command == "FORCE_OVERRIDE" and progress.event.outcome == "accepted"
    assert len(slack.calls_to("chat.postMessage")) == 3  # request, refusal, override notice: no second request
    [ready] = second.approvals.ready()
    record = second.approvals.execute_once(ready)
    assert record is not None and record.authorised_by == "UBOB0001" and record.status == "dry_run"
    final = slack.messages[ts]["blocks"]
    assert not [b for b in final if b["type"] == "actions"] and "executed by dry_run" in json.dumps(final)
    second.close()

    third = start(db, tmp_path, slack.url, clock)
    assert third.approvals.resume() == []
    assert third.store.count("action_executions") == 1
    outcomes = [e["kind"] for e in third.store.events("workflow_events", "scn-12") if e["kind"].startswith("approval_")]
    assert outcomes == ["approval_refused", "approval_accepted"]
    third.close()


def test_a_reply_whose_processing_crashed_is_processed_once_after_the_restart(db, tmp_path, slack):
    clock = Clock()
    audit = FlakyAudit()
    first = start(db, tmp_path, slack.url, clock, audit=audit)
    w = first.approvals.open(blocked(first))
    slack.add_reply(w.handle, "UBOB0001", "FORCE_OVERRIDE db team on the bridge")
    audit.fail_next = 1
    assert first.approvals.poll() == []  # the approval record failed: rolled back, not consumed
    assert not w.session.may_execute and first.approvals.ready() == []
    first.close()

    second = start(db, tmp_path, slack.url, clock)
    second.approvals.resume()
    [progress] = second.approvals.poll()
    assert progress.event.outcome == "accepted"
    assert second.approvals.poll() == []
    second.close()


def test_an_action_executed_just_before_a_crash_is_not_executed_again(db, tmp_path, slack):
    clock = Clock()
    first = start(db, tmp_path, slack.url, clock)
    w = first.approvals.open(blocked(first))
    slack.add_reply(w.handle, "UBOB0001", "FORCE_OVERRIDE db team on the bridge")
    first.approvals.poll()
    first.approvals.pipeline.execute(w.assessment, w.session)  # ran, then the process died before closing
    first.close()

    second = start(db, tmp_path, slack.url, clock)
    [resumed] = second.approvals.resume()
    assert resumed.session.may_execute
    record = second.approvals.execute_once(resumed)
    assert record is not None and record.authorised_by == "UBOB0001"
    assert second.store.count("action_executions") == 1
    assert second.approvals.resume() == []
    second.close()


def test_a_rejected_or_resolved_incident_never_executes(db, tmp_path, slack):
    clock = Clock()
    process = start(db, tmp_path, slack.url, clock)
    w = process.approvals.open(blocked(process))
    slack.add_reply(w.handle, "UBOB0001", "FORCE_OVERRIDE on the bridge")
    process.approvals.poll()
    record_state(process.store, "scn-12", "resolved", by="oncall", reason="fixed by hand")
    assert process.approvals.execute_once(w) is None
    assert process.store.count("action_executions") == 0
    process.close()


def test_while_the_local_fake_slack_is_down_the_incident_stays_pending_nothing_executes_and_the_request_goes_out_later(
        db, tmp_path):
    clock = Clock()
    port = closed_port()
    process = start(db, tmp_path, f"http://127.0.0.1:{port}/", clock)
    w = process.approvals.open(blocked(process))
    assert w.handle == "pending:scn-12"
    assert process.approvals.poll() == [] and process.approvals.ready() == []
    assert process.store.count("action_executions") == 0
    assert not process.channel.check().ok
    errors = process.store.events("workflow_events", "scn-12", kind="integration_error")
    assert errors and errors[0]["integration"] == "slack"
    assert any(r.get("kind") == "integration_error" for r in process.audit.records["workflow_events"])
    process.close()

    slack = FakeSlack(port=port).start()
    try:
        clock.now += 600
        restarted = start(db, tmp_path, slack.url, clock)
        [resumed] = restarted.approvals.resume()
        restarted.approvals.poll()
        [post] = [c for c in slack.calls_to("chat.postMessage") if "blocks" in c.body]
        assert "Approval needed: scn-12" in json.dumps(post.body["blocks"])
        restarted.close()
    finally:
        slack.stop()


def test_the_local_inbox_takes_replies_while_slack_is_down(db, tmp_path):
    clock = Clock()
    inbox = LocalInbox()
    settings = Settings(slack_bot_token="xoxb-test", slack_channel="#incidents", slack_approvers=("UALICE01",),
                        slack_overriders=("UBOB0001",))
    policy = build_approval_policy(settings)
    process = start(db, tmp_path, f"http://127.0.0.1:{closed_port()}/", clock,
                    channel_factory=lambda slack: FallbackApprovalChannel(slack, inbox))
    process.approvals.policy = policy
    process.approvals.open(blocked(process))
    assert inbox.get_request("scn-12") is not None
    process.approvals.channel.push("scn-12", "oncall", "FORCE_OVERRIDE paged the db team; Slack is down")
    [progress] = process.approvals.poll()
    assert progress.event.outcome == "accepted" and progress.event.user == "oncall"
    assert "scn-12" in [m.incident_id for m in inbox.thread("scn-12")]
    process.close()

    fresh_inbox = LocalInbox()  # the in-memory inbox of a restarted governor starts empty
    restarted = start(db, tmp_path, f"http://127.0.0.1:{closed_port()}/", clock,
                      channel_factory=lambda slack: FallbackApprovalChannel(slack, fresh_inbox))
    restarted.approvals.policy = policy
    [resumed] = restarted.approvals.resume()
    assert fresh_inbox.get_request("scn-12") is not None
    assert resumed.session.may_execute and resumed.session.authorised_by == "oncall"
    assert restarted.approvals.execute_once(resumed) is not None
    restarted.close()

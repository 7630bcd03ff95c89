"""The local inbox from a shell: `approvals list|reply` store a reply that the running dashboard
applies by the approval rules, exactly once, and that survives a restart until it is applied."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_tui_durability import AUTH, OVERRIDE, Dashboard, run_until

from safety_governor.adapters.inbox_local import LocalInbox
from safety_governor.adapters.store_sqlite import SQLiteStore
from safety_governor.approval_state import ApprovalState
from safety_governor.authority import os_account
from safety_governor.cli import main
from safety_governor.config import Settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(output_dir=tmp_path / "output", store_path=tmp_path / "state" / "governor.db")


def cli(settings: Settings, *args: str) -> int:
    return main(["approvals", *args, "--store", str(settings.resolved_store_path)])


def test_a_stored_reply_is_handed_out_until_acknowledged_even_by_a_new_inbox(tmp_path):
    store = SQLiteStore(tmp_path / "s.db")
    state = ApprovalState(store)
    state.receive("inc-1", "cli:1", user="oncall", text="APPROVE", source="cli")
    first = LocalInbox(state=state)
    [reply] = first.pending_replies("inc-1")
    assert (reply.user, reply.text) == ("oncall", "APPROVE")
    assert [r.key for r in LocalInbox(state=ApprovalState(store)).pending_replies("inc-1")] == ["cli:1"]
    first.ack("inc-1", reply.key)
    assert LocalInbox(state=ApprovalState(store)).pending_replies("inc-1") == []
    store.close()


def test_replying_to_an_incident_nobody_waits_for_is_a_usage_error(settings, capsys):
    assert cli(settings, "reply", "inc-nope", "APPROVE") == 2
    assert capsys.readouterr().err.strip() == "error: no approval is waiting for inc-nope (see: approvals list)"


def test_a_shell_reply_reaches_the_running_dashboard_through_the_approval_rules_once(settings, capsys):
    dash = Dashboard(settings)
    try:
        item = dash.block(AUTH)
        assert cli(settings, "list") == 0
        assert "inc-auth  needs force_override" in capsys.readouterr().out
        # APPROVE on a critical incident is refused by the rules, whoever sends it and however.
        assert cli(settings, "reply", "inc-auth", "APPROVE") == 0
        run_until(lambda: any(e.command == "APPROVE" for e in item.session.events), dash.slack.step)
        assert item.session.events[-1].outcome == "refused" and item.state == "PENDING_APPROVAL"
        # A name typed on the command line is not an identity: --user must be the caller's own mapped user.
        capsys.readouterr()
        assert cli(settings, "reply", "inc-auth", *OVERRIDE.split(), "--user", "mallory") == 2
        assert "--user mallory refused: OS account" in capsys.readouterr().err
        assert cli(settings, "reply", "inc-auth", *OVERRIDE.split(), "--user", "oncall") == 0
        run_until(lambda: dash.executions("inc-auth") == 1, dash.slack.step, dash.agent.run_due)
        for _ in range(5):  # nothing is applied or executed twice
            dash.slack.step()
            dash.agent.run_due()
        assert dash.executions("inc-auth") == 1
        assert [e.outcome for e in item.session.events] == ["refused", "accepted"]
        accepted = item.session.events[-1]
        assert (accepted.user, accepted.channel, accepted.os_account) == ("oncall", "cli", os_account())
        assert accepted.decision_id == item.assessment.gate.decision_id
        assert ApprovalState(dash.store).unconsumed("inc-auth") == []
    finally:
        dash.close()


def test_a_shell_reply_queued_while_the_dashboard_is_down_is_applied_after_it_starts(settings):
    first = Dashboard(settings)
    first.block(AUTH)
    first.close()
    assert cli(settings, "reply", "inc-auth", *OVERRIDE.split()) == 0  # nobody is running
    second = Dashboard(settings)
    try:
        [item] = second.runtime.resume()
        run_until(lambda: second.executions("inc-auth") == 1, second.slack.step, second.agent.run_due)
        assert item.session.events[-1].outcome == "accepted" and item.session.events[-1].user == "oncall"
    finally:
        second.close()


def test_beside_slack_a_shell_reply_is_read_once_and_slack_replies_are_not_read_twice(tmp_path):
    from safety_governor.adapters.fallbacks import FallbackApprovalChannel
    from safety_governor.approval_state import Reply

    store = SQLiteStore(tmp_path / "s.db")
    state = ApprovalState(store)
    state.receive("inc-1", "msg:1700000000.1", user="UALICE01", text="APPROVE", source="slack")  # Slack's own

    class SlackLike:
        name = "slack"

        def pending_replies(self, incident_id):
            return [Reply(incident_id, "msg:1700000000.1", "UALICE01", "APPROVE", "slack")]

        def ack(self, incident_id, key):
            state.consume(incident_id, key)

    channel = FallbackApprovalChannel(SlackLike(), LocalInbox(state=state))
    state.receive("inc-1", "cli:abc", user="oncall", text="HOLD", source="cli")
    got = channel.pending_replies("inc-1")
    assert [(r.user, r.text) for r in got] == [("UALICE01", "APPROVE"), ("oncall", "HOLD")]
    for r in got:
        channel.ack("inc-1", r.key)
    assert state.unconsumed("inc-1") == []
    store.close()

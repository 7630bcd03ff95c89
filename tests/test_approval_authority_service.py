"""Authority in the running service and from the command line: a wait nobody answers expires and
nothing runs; a reply from a shell is authorised by the governor holding the wait with its own
approvers file; `assess --live` leaves a blocked incident waiting where `approvals` can act on it;
a claimed incident says who claimed it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from test_tui_durability import AUTH, OVERRIDE, Dashboard, run_until

from safety_governor.approval_state import ApprovalState
from safety_governor.authority import os_account
from safety_governor import cli as cli_module
from safety_governor.cli import main
from safety_governor.config import DEFAULT_GATE_POLICY_PATH, Settings
from safety_governor.incident_state import current_state


def _gate_policy(tmp_path: Path, **changes) -> Path:
    raw = json.loads(DEFAULT_GATE_POLICY_PATH.read_text(encoding="utf-8"))
    raw.update(changes)
    path = tmp_path / "gate_policy.json"
    path.write_text(json.dumps(raw), encoding="utf-8")
    return path


def _approvers(tmp_path: Path, name: str, users: dict) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps({"version": "t", "users": users}), encoding="utf-8")
    return path


def test_an_unanswered_wait_expires_after_the_ttl_closed_as_expired_and_nothing_runs(tmp_path):
    settings = Settings(output_dir=tmp_path / "output", store_path=tmp_path / "state" / "governor.db",
                        gate_policy_path=_gate_policy(tmp_path, approval_ttl_seconds=1))
    dash = Dashboard(settings)
    try:
        item = dash.block(AUTH)
        assert item.approvals.ttl_seconds == 1
        time.sleep(1.05)
        run_until(lambda: item.state == "ESCALATED", dash.slack.step)
        assert item.session.state == "expired" and not item.session.may_execute
        assert current_state(dash.store, AUTH.id) == "expired"
        assert ApprovalState(dash.store).wait_for(AUTH.id) is None
        closed = [e for e in dash.store.events("workflow_events", AUTH.id) if e["kind"] == "wait_closed"]
        assert closed[-1]["outcome"] == "expired"
        # A reply after the expiry changes nothing.
        dash.runtime.inbox.push(AUTH.id, "oncall", OVERRIDE)
        for _ in range(3):
            dash.slack.step()
            dash.agent.run_due()
        assert dash.executions(AUTH.id) == 0
    finally:
        dash.close()


def test_a_shell_reply_is_authorised_by_the_governors_approvers_file_not_the_senders(tmp_path, capsys, monkeypatch):
    me = os_account()
    # The dashboard's own file does not let this OS account decide; the shell's file does.
    governor_file = _approvers(tmp_path, "governor.json", {"alice": {"os_accounts": ["someone-else"],
                                                                     "override": True}})
    shell_file = _approvers(tmp_path, "shell.json", {"mallory": {"os_accounts": [me], "override": True}})
    dash_settings = Settings(output_dir=tmp_path / "output", store_path=tmp_path / "state" / "governor.db",
                             approvers_path=governor_file)
    dash = Dashboard(dash_settings)
    try:
        item = dash.block(AUTH)
        shell = dash_settings.model_copy(update={"approvers_path": shell_file})
        # The sending process reads its own (different) approvers file and settings.
        monkeypatch.setattr(cli_module, "_settings", lambda args: shell)
        assert main(["approvals", "reply", AUTH.id, *OVERRIDE.split()]) == 0
        assert "as mallory" in capsys.readouterr().out
        run_until(lambda: len(item.session.events) == 1, dash.slack.step)
        event = item.session.events[-1]
        assert event.outcome == "unauthorized" and event.os_account == me and event.channel == "cli"
        assert dash.executions(AUTH.id) == 0
    finally:
        dash.close()


@pytest.mark.parametrize("text", ["ok go ahead", "FORCE_OVERRIDE \u200b\u200b", "FORCE_OVERRıDE security on the bridge"])
def test_approvals_reply_refuses_what_can_never_count_at_once_and_queues_nothing(tmp_path, capsys, text):
    settings = Settings(output_dir=tmp_path / "output", store_path=tmp_path / "state" / "governor.db")
    dash = Dashboard(settings)
    try:
        dash.block(AUTH)
        assert main(["approvals", "reply", AUTH.id, *text.split(), "--store", str(settings.resolved_store_path)]) == 2
        err = capsys.readouterr().err
        assert "nothing queued" in err and "\n" not in err.strip()
        assert ApprovalState(dash.store).unconsumed(AUTH.id) == []
    finally:
        dash.close()


def test_assess_live_leaves_a_blocked_incident_waiting_for_approvals_and_a_second_run_says_who_claimed_it(
    tmp_path, monkeypatch, capsys
):
    store = tmp_path / "governor.db"
    for name, value in {"GOVERNOR_OUTPUT_DIR": str(tmp_path / "out"), "GOVERNOR_STORE_PATH": str(store),
                        "ELASTIC_URL": "", "AGENT_BACKEND": "offline"}.items():
        monkeypatch.setenv(name, value)
    assert main(["seed"]) == 0
    scenario = Path(__file__).resolve().parents[1] / "scenarios" / "05_critical_severity_reset_flood.json"
    capsys.readouterr()
    assert main(["assess", str(scenario), "--live"]) == 0
    out = capsys.readouterr().out
    assert "pending_approval" in out and "approvals reply scn-05" in out
    assert main(["approvals", "list", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["incident_id"] == "scn-05" and row["approval_required"] == "force_override"
    assert main(["approvals", "reply", "scn-05", *OVERRIDE.split()]) == 0
    assert "queued for scn-05" in capsys.readouterr().out
    assert main(["assess", str(scenario), "--live"]) == 2
    err = capsys.readouterr().err.strip()
    assert "scn-05 was already claimed by" in err and " at 20" in err and "new incident id" in err
    assert "bad usage" not in err

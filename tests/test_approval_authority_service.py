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


def _learned(store) -> dict:
    from test_learning import _records

    from safety_governor.learning import learn_runbook
    from safety_governor.models import Incident

    incident = Incident(id="inc-rb", service="checkout-web", severity="medium", summary="5xx after deploy")
    return learn_runbook(store, incident, *_records(incident, "rollback_last_deploy"))


def _audited(settings: Settings, kind: str) -> list[dict]:
    path = settings.output_dir / "workflow_events.jsonl"
    return [r for r in map(json.loads, path.read_text().splitlines()) if r.get("kind") == kind]


def test_a_shell_runbook_approval_is_a_request_the_governor_refuses_with_its_own_approvers_file(
    tmp_path, capsys, monkeypatch
):
    me = os_account()
    governor_file = _approvers(tmp_path, "governor.json", {"alice": {"os_accounts": ["someone-else"]}})
    shell_file = _approvers(tmp_path, "shell.json", {"mallory": {"os_accounts": [me], "approve": True}})
    settings = Settings(output_dir=tmp_path / "output", store_path=tmp_path / "state" / "governor.db",
                        approvers_path=governor_file)
    dash = Dashboard(settings)
    try:
        doc = _learned(dash.store)
        monkeypatch.setattr(cli_module, "_settings", lambda args: settings.model_copy(
            update={"approvers_path": shell_file}))
        assert main(["runbooks", "approve", doc["id"], "--wait", "0"]) == 0
        out = capsys.readouterr().out
        assert "queued approve" in out and "as mallory" in out and "own approvers file" in out
        assert dash.store.get("runbooks", doc["id"])["status"] == "pending_review"  # nothing acted directly
        dash.slack.step()
        dash.slack.step()
        assert dash.store.get("runbooks", doc["id"])["status"] == "pending_review"
        [requested] = _audited(settings, "runbook_review_requested")
        [done] = _audited(settings, "runbook_review_done")
        assert requested["os_account"] == me and requested["channel"] == "cli"
        assert done["outcome"] == "refused" and done["os_account"] == me and done["user"] is None
        assert "not a configured approver in this governor's approvers file" in done["detail"]
        assert _audited(settings, "runbook_approved") == []
    finally:
        dash.close()


def test_a_shell_runbook_approval_waits_for_a_governor_and_is_applied_exactly_once_across_restarts(
    tmp_path, capsys, monkeypatch
):
    me = os_account()
    approvers = _approvers(tmp_path, "approvers.json", {"alice": {"os_accounts": [me], "approve": True}})
    settings = Settings(output_dir=tmp_path / "output", store_path=tmp_path / "state" / "governor.db",
                        approvers_path=approvers)
    monkeypatch.setattr(cli_module, "_settings", lambda args: settings)
    dash = Dashboard(settings)
    doc = _learned(dash.store)
    dash.close()
    # No governor runs: the request waits in the store.
    assert main(["runbooks", "approve", doc["id"]]) == 0
    assert "no governor is running" in capsys.readouterr().out
    for _ in range(2):  # the next governor applies it once; the one after does nothing again
        dash = Dashboard(settings)
        try:
            dash.slack.step()
            dash.slack.step()
            after = dash.store.get("runbooks", doc["id"])
            assert after["status"] == "approved" and after["approved_by"] == "alice"
        finally:
            dash.close()
    assert len(_audited(settings, "runbook_approved")) == 1
    [done] = _audited(settings, "runbook_review_done")
    assert done["outcome"] == "applied" and done["user"] == "alice" and done["channel"] == "cli"
    # A second approve of the now approved entry is refused at once by the shell: nothing queued.
    assert main(["runbooks", "approve", doc["id"]]) == 2
    assert "nothing queued" in capsys.readouterr().err
    # With the governor running the shell waits for, and prints, its outcome.
    dash = Dashboard(settings)
    try:
        import threading

        stop = threading.Event()

        def tick() -> None:
            while not stop.is_set():
                dash.slack.step()
                stop.wait(0.05)

        ticker = threading.Thread(target=tick, daemon=True)
        ticker.start()
        try:
            assert main(["runbooks", "revoke", doc["id"], "--reason", "wrong service", "--wait", "10"]) == 0
        finally:
            stop.set()
            ticker.join()
        out = capsys.readouterr().out
        assert "applied by the running governor" in out and "is now revoked (by alice)" in out
        assert dash.store.get("runbooks", doc["id"])["revoked_reason"] == "wrong service"
    finally:
        dash.close()

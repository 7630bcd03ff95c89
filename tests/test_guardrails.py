"""Guardrails: the kill switch, change freeze windows, rate limits and the circuit breaker, as state
in the store (both store adapters; Elasticsearch through the local ES wire fake) and as gate rules,
re-checked at execute time, switched from the command line by overriders only and audited."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch
from pydantic import ValidationError

from safety_governor import cli
from safety_governor.authority import os_account
from safety_governor.adapters.audit_jsonl import MemoryAudit
from safety_governor.adapters.store_elastic import ElasticStore
from safety_governor.adapters.store_sqlite import SQLiteStore
from safety_governor.approvals import ApprovalPolicy
from safety_governor.audit_chain import verify
from safety_governor.bootstrap import build
from safety_governor.config import load_gate_policy
from safety_governor.gate import guardrail_reasons
from safety_governor.guardrails import FreezeWindow, GuardrailConfig, read_state, reset_breaker, set_freeze
from safety_governor.knowledge import seed_store
from safety_governor.models import GuardrailState
from test_pipeline import BATCH_MEDIUM, ONCALL
from wire_fakes import FakeElasticsearch

NOW = datetime(2026, 12, 4, 17, 30, tzinfo=UTC)  # a Friday
POLICY = load_gate_policy()


def rules(state: GuardrailState, service: str = "checkout-web", action: str = "rollback_last_deploy",
          policy=POLICY) -> list[str]:
    return [r.rule_id for r in guardrail_reasons(state, service, action, policy)]


# --- freeze windows ----------------------------------------------------------------------------


def test_a_weekly_window_past_midnight_covers_the_evening_and_the_next_morning_only():
    window = FreezeWindow.model_validate({"service": "payments-api", "days": ["fri"], "from": "22:00", "to": "06:00"})
    friday_night, saturday_morning = NOW.replace(hour=23), NOW.replace(day=5, hour=5, minute=59)
    assert window.covers(friday_night) and window.covers(saturday_morning)
    assert not window.covers(NOW) and not window.covers(NOW.replace(day=5, hour=6))
    assert not window.covers(NOW.replace(day=3, hour=5))  # Thursday morning belongs to Wednesday's rule
    assert window.applies_to("Payments-API") and not window.applies_to("payments-api-canary")


def test_a_fixed_window_includes_its_start_and_excludes_its_end():
    window = FreezeWindow.model_validate({"start": "2026-12-04T17:30:00Z", "end": "2026-12-04T18:00:00Z"})
    assert window.covers(NOW) and not window.covers(NOW + timedelta(minutes=30))
    assert window.applies_to("anything")


@pytest.mark.parametrize(("raw", "message"), [
    ({"days": ["fri"], "from": "22:00"}, "needs days, from and to"),
    ({"days": ["friyay"], "from": "22:00", "to": "23:00"}, "unknown day"),
    ({"days": ["fri"], "from": "25:00", "to": "23:00"}, "not a time HH:MM"),
    ({"start": "2026-12-04T17:30:00", "end": "2026-12-05T17:30:00"}, "need a time zone"),
    ({"start": "2026-12-05T17:30:00Z", "end": "2026-12-04T17:30:00Z"}, "end must be after start"),
    ({"start": "2026-12-04T17:30:00Z", "end": "2026-12-05T17:30:00Z", "days": ["fri"]}, "either start and end"),
])
def test_a_malformed_window_is_refused_with_the_reason(raw, message):
    with pytest.raises(ValidationError, match=message):
        FreezeWindow.model_validate(raw)


def test_a_bad_window_in_the_gate_policy_is_a_one_line_config_error(tmp_path):
    from safety_governor.errors import ConfigError

    raw = json.loads(Path("config/gate_policy.json").read_text())
    raw["guardrails"]["freeze_windows"] = [{"service": "*", "days": ["fri"], "from": "9am", "to": "5pm"}]
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match="guardrails.freeze_windows"):
        load_gate_policy(path)


# --- the rules on their own ---------------------------------------------------------------------


def test_each_rule_fires_on_its_own_fact_and_names_what_it_saw():
    assert rules(GuardrailState(now=NOW)) == []
    frozen = guardrail_reasons(GuardrailState(now=NOW, frozen=True, frozen_by="alice", frozen_reason="db migration",
                                              frozen_at=NOW - timedelta(minutes=12)), "checkout-web", None, POLICY)
    assert [r.rule_id for r in frozen] == ["frozen"]
    assert "alice 12 min ago: db migration" in frozen[0].message
    assert rules(GuardrailState(now=NOW, service_automatic_executions=3)) == ["rate_limited"]
    assert rules(GuardrailState(now=NOW, service_automatic_executions=2)) == []
    assert rules(GuardrailState(now=NOW, automatic_executions=10)) == ["rate_limited"]
    assert rules(GuardrailState(now=NOW, last_service_execution_at=NOW - timedelta(minutes=4, seconds=59))) == \
        ["rate_limited"]
    assert rules(GuardrailState(now=NOW, last_service_execution_at=NOW - timedelta(minutes=5))) == []
    assert rules(GuardrailState(now=NOW, failed_same_action=True)) == ["circuit_open"]
    assert rules(GuardrailState(now=NOW), policy=POLICY.model_validate(
        {**POLICY.model_dump(mode="json"), "guardrails": {"freeze_windows": [
            {"service": "checkout-web", "name": "peak", "start": "2026-12-01T00:00:00Z",
             "end": "2026-12-31T00:00:00Z"}]}})) == ["change_freeze"]


def test_the_breaker_trips_on_k_failures_within_the_window_and_stays_open_until_reset():
    within = [NOW - timedelta(minutes=200), NOW - timedelta(minutes=150)]  # 50 min apart, long ago
    assert rules(GuardrailState(now=NOW, failed_verifications_at=within)) == ["circuit_open"]
    apart = [NOW - timedelta(minutes=200), NOW - timedelta(minutes=61 + 79)]  # 60 min apart: still within
    assert rules(GuardrailState(now=NOW, failed_verifications_at=apart)) == ["circuit_open"]
    far = [NOW - timedelta(minutes=200), NOW - timedelta(minutes=139)]  # 61 min apart
    assert rules(GuardrailState(now=NOW, failed_verifications_at=far)) == []


def test_an_unreadable_guardrail_state_blocks():
    assert rules(GuardrailState(now=NOW, unreadable="StoreUnavailable: down")) == ["knowledge_unavailable"]
    assert rules(GuardrailState()) == ["knowledge_unavailable"]  # no clock: cannot judge windows


def test_frozen_and_change_freeze_need_force_override():
    from safety_governor.gate import OVERRIDE_ONLY_RULES

    assert OVERRIDE_ONLY_RULES == {"frozen", "change_freeze"}


# --- state in the store: both adapters ------------------------------------------------------------


@pytest.fixture(params=["sqlite", "elastic-wire-fake"])
def stores(request, tmp_path):
    """Two stores on one backend: two governors sharing state."""
    if request.param == "sqlite":
        made = [SQLiteStore(tmp_path / "g.db"), SQLiteStore(tmp_path / "g.db")]
        yield made
        for s in made:
            s.close()
        return
    with FakeElasticsearch() as fake:
        made = [ElasticStore(Elasticsearch(fake.url, api_key="k", max_retries=0), location=fake.url)
                for _ in range(2)]
        yield made
        for s in made:
            s.close()


def execution(service: str, minutes_ago: float, *, by: str = "gate", status: str = "dry_run", n: int = 0) -> dict:
    return {"kind": "execution", "id": f"exe-{service}-{minutes_ago}-{n}", "execution_id": f"exe-{n}",
            "incident_id": f"inc-{n}", "service": service, "action": "rollback_last_deploy", "status": status,
            "authorised_by": by, "at": (datetime.now(UTC) - timedelta(minutes=minutes_ago)).isoformat()}


def test_state_written_by_one_governor_is_read_by_another_on_the_same_store(stores):
    one, other = stores
    config = GuardrailConfig()
    set_freeze(one, MemoryAudit(), on=True, by="alice", reason="db migration")
    for i, (minutes, by, status) in enumerate([(3, "gate", "dry_run"), (20, "gate", "succeeded"),
                                               (30, "bob", "dry_run"), (40, "gate", "refused"),
                                               (70, "gate", "dry_run")]):
        one.append_event("action_executions", execution("checkout-web", minutes, by=by, status=status, n=i))
    one.append_event("action_executions", execution("cdn-edge", 10, n=9))
    one.append_event("workflow_events", {"kind": "verification", "incident_id": "inc-a", "service": "checkout-web",
                                         "action": "rollback_last_deploy", "resolved": False})
    one.append_event("workflow_events", {"kind": "verification", "incident_id": "inc-b", "service": "checkout-web",
                                         "action": "rollback_last_deploy", "resolved": True})
    state = read_state(other, "checkout-web", incident_id="inc-a", action="rollback_last_deploy", config=config)
    assert state.frozen and state.frozen_by == "alice" and state.frozen_reason == "db migration"
    assert state.service_automatic_executions == 2  # not bob's, not the refused one, not 70 min ago
    assert state.automatic_executions == 3
    assert state.last_service_execution_at is not None
    assert len(state.failed_verifications_at) == 1 and state.failed_same_action
    assert rules(state) == ["frozen", "rate_limited", "circuit_open"]

    set_freeze(other, MemoryAudit(), on=False, by="alice")
    reset_breaker(other, MemoryAudit(), service="checkout-web", by="alice")
    later = read_state(one, "checkout-web", incident_id="inc-z", action="rollback_last_deploy", config=config)
    assert not later.frozen and later.failed_verifications_at == [] and later.breaker_reset_at is not None


# --- the pipeline: counts from the store, re-checked at execute time ------------------------------


def test_execution_counts_come_from_the_store_so_a_restarted_governor_keeps_the_cooldown(settings, knowledge, tmp_path):
    path = tmp_path / "shared.db"

    def governor():
        store = SQLiteStore(path)
        seed_store(store, knowledge, source="test")
        return build(settings, store=store, audit=MemoryAudit()), store

    first, store = governor()
    assert first.pipeline.run(BATCH_MEDIUM, approvals=ONCALL).executed
    store.close()
    restarted, store = governor()  # a new process: nothing in memory
    again = restarted.pipeline.run(BATCH_MEDIUM.model_copy(update={"id": "inc-b2"}), approvals=ONCALL)
    store.close()
    assert again.gate.rule_ids == ["rate_limited"] and not again.executed
    assert "cooldown 5 min" in again.gate.reasons[0].message


def test_a_freeze_switched_on_after_the_gate_decided_stops_the_automatic_execution(settings, store):
    audit = MemoryAudit()
    governor = build(settings, store=store, audit=audit)
    pipeline = governor.pipeline
    a = pipeline.assess(BATCH_MEDIUM)
    assert a.gate.decision == "execute"
    pipeline.record_decision(a)
    set_freeze(store, audit, on=True, by="alice", reason="stop everything")
    session = pipeline.approval_session(a, ONCALL)
    assert pipeline.execute(a, session) is None
    [blocked] = [e for e in audit.records["workflow_events"] if e["kind"] == "execution_recheck_blocked"]
    assert any(r.startswith("frozen: Kill switch on (set by alice") for r in blocked["reasons"])
    assert store.count("action_executions") == 0


def test_only_force_override_runs_while_frozen_and_the_override_survives_the_recheck(settings, store):
    set_freeze(store, MemoryAudit(), on=True, by="alice", reason="incident review")
    governor = build(settings, store=store, audit=MemoryAudit())
    refused = governor.pipeline.run(BATCH_MEDIUM, replies=[("oncall", "APPROVE")], approvals=ONCALL)
    assert refused.gate.rule_ids == ["frozen"] and refused.gate.approval_required == "force_override"
    assert not refused.executed and refused.approvals[0].outcome == "refused"
    overridden = governor.pipeline.run(BATCH_MEDIUM.model_copy(update={"id": "inc-b3"}),
                                       replies=[("oncall", "FORCE_OVERRIDE queue is losing invoices")],
                                       approvals=ONCALL)
    assert overridden.executed


def test_a_store_without_guardrail_state_blocks(settings, store):
    class Blind:
        """The real store, but the guardrail reads fail."""

        def __getattr__(self, name):
            if name == "recent_events":
                raise AttributeError(name)
            return getattr(store, name)

    record = build(settings, store=Blind(), audit=MemoryAudit()).pipeline.run(BATCH_MEDIUM, approvals=ONCALL)
    assert "knowledge_unavailable" in record.gate.rule_ids and not record.executed


# --- the switches from a shell -------------------------------------------------------------------


def _approvers_file(path, user: str, *, override: bool):
    """An approvers file mapping this process's OS account to ``user``."""
    path.write_text(json.dumps({"version": "t", "users": {user: {"os_accounts": [os_account()],
                                                                  "override": override}}}), encoding="utf-8")
    return path


@pytest.fixture
def shell(tmp_path, monkeypatch):
    monkeypatch.setenv("GOVERNOR_OUTPUT_DIR", str(tmp_path / "out"))
    # Identity is the OS account, mapped to alice (an overrider) by the approvers file.
    monkeypatch.setenv("GOVERNOR_APPROVERS_FILE", str(_approvers_file(tmp_path / "approvers.json", "alice",
                                                                      override=True)))
    monkeypatch.delenv("ELASTIC_URL", raising=False)
    monkeypatch.delenv("ELASTIC_CLOUD_ID", raising=False)
    return tmp_path / "out"


def test_freeze_on_status_off_are_audited_and_seen_by_the_gate(shell, capsys):
    assert cli.main(["freeze", "on", "--reason", "db migration"]) == 0
    assert "FROZEN since" in capsys.readouterr().out
    assert cli.main(["freeze", "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["frozen"] and status["last"]["by"] == "alice" and status["last"]["reason"] == "db migration"
    store = SQLiteStore(shell / "governor.db")
    assert read_state(store, "x", incident_id="i", action="a", config=GuardrailConfig()).frozen
    assert cli.main(["freeze", "off"]) == 0
    assert not read_state(store, "x", incident_id="i", action="a", config=GuardrailConfig()).frozen
    store.close()
    assert cli.main(["breaker", "reset", "checkout-web", "--reason", "fixed the probe"]) == 0
    kinds = [json.loads(line)["kind"] for line in (shell / "workflow_events.jsonl").read_text().splitlines()]
    assert kinds == ["audit_genesis", "guardrail_freeze", "guardrail_freeze", "guardrail_breaker_reset"]
    assert all(c.ok for c in verify(shell))


def test_the_switches_refuse_anyone_who_is_not_an_overrider(shell, capsys, monkeypatch, tmp_path):
    # mallory's environment cannot make her an overrider; the approvers file maps her account to a
    # user who may only approve.
    monkeypatch.setenv("GOVERNOR_OVERRIDERS", "mallory")
    monkeypatch.setenv("GOVERNOR_APPROVERS_FILE", str(_approvers_file(tmp_path / "mallory.json", "mallory",
                                                                      override=False)))
    assert cli.main(["freeze", "on", "--reason", "x"]) == 2
    assert cli.main(["freeze", "off"]) == 2
    assert cli.main(["breaker", "reset", "checkout-web"]) == 2
    err = capsys.readouterr().err
    assert err.count("mallory is not a configured overrider") == 3
    assert not (shell / "workflow_events.jsonl").exists()


def test_freeze_on_needs_a_reason(shell, capsys):
    assert cli.main(["freeze", "on"]) == 2
    assert "needs --reason" in capsys.readouterr().err


# --- the dashboard: FROZEN in the header, the F key, the watcher -----------------------------------


def test_the_header_shows_frozen_with_who_and_why_and_the_f_key_switches_it(tmp_path):
    from rich.console import Console

    from safety_governor.service.events import FreezeChanged
    from safety_governor.tui.controller import Controller
    from safety_governor.tui.panels import HeaderBar
    from safety_governor.tui.state import DashboardState, KeyPressed
    from safety_governor.tui.theme import THEME

    calls: list[tuple[bool, str, str]] = []

    def freeze(on: bool, reason: str, user: str) -> str:
        calls.append((on, reason, user))
        return f"kill switch {'ON' if on else 'off'} (by {user})"

    controller = Controller(DashboardState(mode="fast", started_at=NOW, now=NOW), user="alice", freeze=freeze)
    controller.handle([KeyPressed("F"), *[KeyPressed(c) for c in "db"], KeyPressed("space"),
                       *[KeyPressed(c) for c in "drill"], KeyPressed("enter")])
    assert calls == [(True, "db drill", "alice")] and controller.state.hint == "kill switch ON (by alice)"
    controller.handle([FreezeChanged("FROZEN by alice at 17:30 UTC: db drill")])
    console = Console(record=True, width=140, color_system=None, file=io.StringIO(), theme=THEME)
    console.print(HeaderBar(controller.snapshot()))
    assert "FROZEN by alice at 17:30 UTC: db drill" in console.export_text()
    controller.handle([KeyPressed("F")])  # frozen: F switches it off, no reason asked
    assert calls[-1] == (False, "", "alice")


def test_the_watcher_shows_a_freeze_set_elsewhere_and_the_key_refuses_non_overriders(tmp_path, store):
    import threading

    from safety_governor.service.board import Board, Counters, Pauser
    from safety_governor.service.events import EventBus, FreezeChanged
    from safety_governor.service.guardrail_watch import GuardrailWatch, switch_freeze
    from safety_governor.service.worker import WorkerConfig, WorkerContext

    bus, audit, stop = EventBus(), MemoryAudit(), threading.Event()
    ctx = WorkerContext(store=store, tickets=None, channel=None, bus=bus, board=Board(), counters=Counters(),
                        pauser=Pauser(bus, stop, enabled=False, timeout=1), stop=stop, config=WorkerConfig(), owner="test", audit=audit)
    watch = GuardrailWatch(ctx, interval=0)
    set_freeze(store, MemoryAudit(), on=True, by="bob", reason="cli freeze")  # another process
    watch.step()
    assert "mallory is not a configured overrider" in switch_freeze(ctx, ("alice",), on=False, reason="",
                                                                       user="mallory")
    assert switch_freeze(ctx, ("alice",), on=False, reason="", user="alice") == "kill switch off (by alice)"
    watch.step()
    shown = [e.text for e in bus.drain() if isinstance(e, FreezeChanged)]
    assert shown[0].startswith("FROZEN by bob at ") and shown[0].endswith(" UTC: cli freeze")
    assert shown[-1] is None
    assert [e["kind"] for e in audit.records["workflow_events"]] == ["guardrail_freeze"]


def test_a_failed_verification_keeps_the_action_from_running_again_for_the_incident_until_a_human_decides(
        governor, knowledge, store, audit):
    from test_verification import FakeTime, _executed, traffic

    a, execution = _executed(governor, knowledge, "inc-004")  # checkout-web: rollback_last_deploy, automatic
    assert execution is not None
    clock = FakeTime(execution.at, on_tick=lambda now: traffic(store, "checkout-web", now, requests=10, errors=8))
    result = governor.pipeline.verify(a, execution, window_seconds=3, poll_interval=1, clock=clock.clock,
                                      sleep=clock.sleep)
    assert not result.resolved
    reset_breaker(store, audit, service="checkout-web", by="oncall")  # a reset closes the service's breaker…
    again = governor.pipeline.assess(a.incident)
    assert "circuit_open" in again.gate.rule_ids  # …but not for the action that already failed here
    assert "already failed verification for this incident" in " ".join(r.message for r in again.gate.reasons)


def test_recent_events_are_newest_first_filtered_by_kind_and_time_and_limited_on_both_stores(stores):
    store, _ = stores
    now = datetime.now(UTC)
    for n, (kind, minutes) in enumerate([("a", 50), ("b", 40), ("a", 30), ("a", 20), ("b", 10)]):
        at = (now - timedelta(minutes=minutes)).isoformat()
        store.append_event("workflow_events", {"kind": kind, "n": n, "at": at})
    assert [e["n"] for e in store.recent_events("workflow_events")] == [4, 3, 2, 1, 0]
    assert [e["n"] for e in store.recent_events("workflow_events", kind="a", limit=2)] == [3, 2]
    assert [e["n"] for e in store.recent_events("workflow_events", kind=["a", "b"],
                                                since=now - timedelta(minutes=35))] == [4, 3, 2]
    assert store.recent_events("workflow_events", kind=[]) == []
    assert all("sg_seq" not in e for e in store.recent_events("workflow_events"))

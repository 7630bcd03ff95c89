"""The dashboard rendered to text: every panel, both layouts, a thousand incidents, the reducer."""

from __future__ import annotations

import io
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from rich.console import Console

from safety_governor.tui.dashboard import Dashboard, render_text
from safety_governor.tui.panels import QueuePanel, sparkline
from safety_governor.tui.state import (
    STATES,
    Activity,
    BannerChanged,
    DashboardState,
    IncidentUpdated,
    IncidentView,
    Integration,
    LogLine,
    Metrics,
    Prompt,
    Reasoning,
    ServiceRate,
    TelemetryView,
    ThreadEntry,
    WorkerUpdated,
    WorkerView,
    reduce,
    reduce_all,
)
from safety_governor.tui.theme import STYLES, THEME

NOW = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)

BLOCKED = Reasoning(
    proposed_action="enable_reset_rate_limit", rationale="", retrieved=("rbk-auth-01", "rbk-auth-03"),
    supporting=3, contradicting=0, coverage=1.0, policy_conflicts=(),
    rules=(("critical_severity", "Critical severity: a human must FORCE_OVERRIDE"),), cautions=(),
    decision="block_and_escalate", approval_required="force_override", confidence_initial=7.7,
    confidence_final=7.37, context_mode="full_context", tool_calls=5)
UNSAFE = replace(BLOCKED, proposed_action="restart_api_pods", supporting=2, contradicting=4,
                 policy_conflicts=("pol-approval-01",),
                 rules=(("policy_conflict", "blocked by pol-approval-01"), ("contradictions", "4 documents")),
                 confidence_initial=7.1, confidence_final=1.0)
PASSED = replace(BLOCKED, proposed_action="rollback_last_deploy", retrieved=("rbk-checkout-01",), supporting=4,
                 rules=(), decision="execute", approval_required="none", confidence_initial=8.5,
                 confidence_final=7.77)


def incident(n: int, **kw: object) -> IncidentView:
    base = dict(id=f"inc-{n:04d}", service="checkout-web", severity="medium", summary=f"5xx spike number {n}",
                state="RESOLVED", detected_at=NOW, updated_at=NOW, ticket=f"SRE-{100 + n}", reasoning=PASSED)
    base.update(kw)
    return IncidentView(**base)  # type: ignore[arg-type]


def critical() -> IncidentView:
    thread = (
        ThreadEntry(NOW, "governor", "[SRE-103] auth-service · critical · reset flood\nreply: FORCE_OVERRIDE <reason>",
                    "request"),
        ThreadEntry(NOW, "oncall", "APPROVE", "reply", "refused"),
        ThreadEntry(NOW, "governor", "APPROVE refused for inc-0003: the incident is critical.", "notify"),
    )
    return incident(3, service="auth-service", severity="critical", state="PENDING_APPROVAL", reasoning=BLOCKED,
                    summary="Credential reset spike on POST /auth/reset-password", thread=thread)


def state(*incidents: IncidentView, **kw: object) -> DashboardState:
    base = dict(
        mode="fast", started_at=NOW - timedelta(seconds=75), now=NOW, flags=("autopilot",),
        integrations=(Integration("store", "sqlite", True, "governor.db"), Integration("tickets", "local", True),
                      Integration("agent", "offline/gpt-oss-120b", True), Integration("approvals", "local-inbox", True)),
        telemetry=TelemetryView(processed=12345, per_second=24, error_rate=0.17,
                                series=tuple(i / 100 for i in range(30)),
                                services=(ServiceRate("auth-service", 300, 0.6),),
                                recent=(LogLine(NOW, "auth-service", "/auth/reset-password", 429),)),
        incidents=incidents, selected=incidents[-1].id if incidents else None,
        metrics=Metrics(detected=3, unsafe_blocked=2, auto_executed=1, overrides=1, refusals=1, resolved=1),
        workers=tuple(WorkerView(n) for n in ("logs", "audit", "agent", "slack")),
    )
    base.update(kw)
    return DashboardState(**base)  # type: ignore[arg-type]


def text_of(renderable: object, width: int = 100, height: int = 30) -> str:
    console = Console(record=True, width=width, height=height, color_system=None, file=io.StringIO(), theme=THEME)
    console.print(renderable, height=height)
    return console.export_text()


def test_the_compact_dashboard_at_80x24_shows_every_panel_the_seed_names():
    s = state(incident(1), incident(2, service="payments-api", severity="high", state="REJECTED", reasoning=UNSAFE),
              critical())
    out = render_text(s, width=80, height=24)
    lines = out.splitlines()
    assert len(lines) == 24 and max(len(line) for line in lines) <= 80
    assert "SAFETY GOVERNOR" in lines[0] and "FAST" in lines[0] and "12:00 UTC" in lines[0]
    assert "System status" in out and "✓store" in out and "12,345 logs" in out
    assert "Operational metrics" in out and "2 blocked" in out and "1 overrides" in out and "1 refusals" in out
    assert "Live telemetry" in out and "err   17%" in out and "▁" in out
    assert "SRE-103" in out and "PENDING_APPROVAL" in out and "SRE-102" in out and "REJECTED" in out
    assert "BLOCKED critical_severity" in out and "7.7 → 7.4" in out
    assert "APPROVE  ✗ refused" in out
    assert "APPROVE" in lines[-1] and "q quit" in lines[-1]


def test_the_wide_dashboard_shows_rules_fired_evidence_counts_and_the_confidence_shift():
    s = state(incident(1), critical(), incident(2, service="payments-api", state="REJECTED", reasoning=UNSAFE))
    out = text_of(Dashboard(s), width=160, height=48)
    assert "Activity" in out and "Governor reasoning · SRE-102 payments-api" in out
    assert "BLOCK_AND_ESCALATE policy_conflict, contradictions" in out
    assert "2 supporting · 4 contradicting" in out and "pol-approval-01" in out
    assert "7.1 → 1.0 (-6.1)" in out
    assert "awaiting a human" in out.splitlines()[0]


def test_a_thousand_incidents_render_only_the_rows_that_fit_around_the_selection():
    history = [incident(n) for n in range(1000)]
    s = state(*history, selected="inc-0500", follow=False)
    out = text_of(QueuePanel(s), width=100, height=12)
    rows = [line for line in out.splitlines() if "SRE-" in line]
    assert len(rows) == 9  # 12 rows minus borders and the column header
    assert any("SRE-600" in line for line in rows)
    assert "1000 total" in out and "above" in out and "below" in out


def test_the_present_mode_banner_and_the_override_prompt_replace_the_key_line():
    s = state(critical(), banner="SRE-103 critical auth-service: gate blocked · space continues (20s)")
    assert "⏸ SRE-103 critical auth-service: gate blocked" in render_text(s, width=100, height=30).splitlines()[-1]
    typing = replace(s, banner=None, prompt=Prompt("inc-0003", "FORCE_OVERRIDE SRE-103 reason", "db team on bridge"))
    assert "FORCE_OVERRIDE SRE-103 reason: db team on bridge▌" in render_text(typing, width=100, height=30)


def test_the_sparkline_is_right_aligned_and_scales_to_the_worst_bucket():
    line = sparkline([0.0, 0.5, 1.0], 6)
    assert line.plain == "   ▁▅█"
    assert sparkline([], 4).plain == "    "


def test_every_queue_state_and_severity_has_a_named_style_in_the_one_theme():
    for name in STATES:
        assert f"state.{name.lower()}" in STYLES
    for severity in ("low", "medium", "high", "critical"):
        assert f"sev.{severity}" in STYLES
    assert "gate.block" in STYLES and "gate.execute" in STYLES


def test_an_empty_dashboard_renders_while_the_workers_start():
    out = render_text(state(integrations=(), workers=()), width=80, height=24)
    assert "watching the telemetry for error clusters" in out and "No incident selected." in out


def test_the_selection_follows_the_incident_awaiting_a_human_until_the_user_moves_it():
    s = state()
    s = reduce_all(s, [IncidentUpdated(incident(1, state="EXECUTING")), IncidentUpdated(critical())])
    assert s.selected == "inc-0003"
    s = reduce(s, IncidentUpdated(incident(4, state="ANALYZING")))
    assert s.selected == "inc-0003"  # analysing matters less than a human decision
    s = replace(s, follow=False, selected="inc-0001")
    s = reduce(s, IncidentUpdated(incident(5, state="PENDING_APPROVAL")))
    assert s.selected == "inc-0001"


def test_the_reducer_replaces_an_incident_in_place_and_keeps_worker_order():
    s = reduce_all(state(), [IncidentUpdated(incident(1, state="ANALYZING")), IncidentUpdated(incident(2)),
                             IncidentUpdated(incident(1, state="RESOLVED")),
                             WorkerUpdated(WorkerView("agent", ok=False, detail="boom")),
                             BannerChanged("paused"), Activity(NOW, "agent", "did a thing")])
    assert [v.id for v in s.incidents] == ["inc-0001", "inc-0002"]
    assert s.incidents[0].state == "RESOLVED"
    assert [w.name for w in s.workers] == ["logs", "audit", "agent", "slack"]
    assert not s.workers[2].ok and s.banner == "paused" and s.activity[-1].endswith("did a thing")

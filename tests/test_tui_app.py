"""The dashboard's entry: options, live-mode start-up errors, plain mode, replays, keys."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from safety_governor.tui.app import build_parser, main, missing_live_variables
from safety_governor.tui.keyboard import decode

LIVE_VARIABLES = ("ELASTIC_URL", "ELASTIC_CLOUD_ID", "ELASTIC_API_KEY", "ELASTIC_KIBANA_URL", "ELASTIC_AGENT_ID",
                  "JIRA_URL", "JIRA_EMAIL", "JIRA_API_TOKEN", "JIRA_PROJECT_KEY", "SLACK_BOT_TOKEN", "SLACK_CHANNEL",
                  "AGENT_BACKEND")


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch):
    for name in LIVE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GOVERNOR_OUTPUT_DIR", str(tmp_path / "output"))
    monkeypatch.chdir(tmp_path)  # no .env from the working copy
    return tmp_path / "output"


def test_live_mode_without_a_live_store_names_the_missing_variables_in_one_line_and_exits_2(isolated, capsys):
    assert main(["--live"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: --live needs 1 more setting(s)")
    assert "ELASTIC_URL or ELASTIC_CLOUD_ID (Elasticsearch store)" in err
    assert "Traceback" not in err


def test_live_integrations_are_independent_and_a_partly_configured_one_names_what_it_lacks():
    store_only = {"ELASTIC_URL": "https://es", "ELASTIC_API_KEY": "k"}
    assert missing_live_variables(store_only) == []  # offline agent, local tickets, local inbox
    env = {**store_only, "SLACK_BOT_TOKEN": "xoxb-secret", "AGENT_BACKEND": "openai", "JIRA_URL": "https://j"}
    missing = dict(missing_live_variables(env))
    assert missing["SLACK_CHANNEL"] == "Slack approvals"
    assert missing["OPENAI_BASE_URL"] == "OpenAI-compatible agent" and "OPENAI_MODEL" in missing
    assert {"JIRA_EMAIL", "JIRA_API_TOKEN", "JIRA_PROJECT_KEY"} <= set(missing) and "JIRA_URL" not in missing
    assert "ELASTIC_API_KEY" not in missing and "SLACK_BOT_TOKEN" not in missing
    assert "xoxb" not in json.dumps(missing)
    kibana = dict(missing_live_variables({**store_only, "AGENT_BACKEND": "kibana"}))
    assert set(kibana) == {"ELASTIC_KIBANA_URL", "ELASTIC_AGENT_ID"}


def test_live_mode_treats_elastic_api_key_as_optional_for_the_store_like_seed_and_assess():
    """A cluster with security off has no API key: the store, the loader and `assess --live`
    accept that, and so does the dashboard; only the Kibana agent (which needs one) names it."""
    assert missing_live_variables({"ELASTIC_URL": "http://127.0.0.1:9200"}) == []
    assert missing_live_variables({"ELASTIC_CLOUD_ID": "deployment:abc"}) == []
    kibana = dict(missing_live_variables({"ELASTIC_URL": "http://127.0.0.1:9200", "AGENT_BACKEND": "kibana",
                                          "ELASTIC_KIBANA_URL": "http://127.0.0.1:5601", "ELASTIC_AGENT_ID": "a"}))
    assert kibana == {"ELASTIC_API_KEY": "Kibana Agent Builder agent"}


def test_a_bad_duration_is_a_usage_error(isolated, capsys):
    assert main(["--no-tui", "--duration", "-5"]) == 2
    assert capsys.readouterr().err.strip() == "error: --duration must be positive, got -5"


def test_the_plain_mode_prints_activity_lines_and_a_summary_and_uses_its_own_store_and_audit(isolated):
    out = io.StringIO()
    assert main(["--no-tui", "--storyline", "none", "--duration", "2"], out=out) == 0
    text = out.getvalue()
    assert "no TUI" in text and text.strip().splitlines()[-1].startswith("Safety Governor: 0 incident(s)")
    assert (isolated / "governor.db").exists() and (isolated / "tui.log").exists()


def test_a_scenario_is_replayed_through_the_workers_with_its_scripted_replies(isolated, tmp_path: Path):
    scenario = {
        "name": "critical reset flood",
        "incident": {"id": "inc-replay-1", "service": "auth-service", "severity": "critical",
                     "summary": "Password reset requests at 20x normal volume with 429/500 responses",
                     "symptoms": "credential reset spike, 429 and 500 on /auth/reset-password"},
        "approvals": [{"user": "oncall", "text": "APPROVE"},
                      {"user": "oncall", "text": "FORCE_OVERRIDE security confirmed the flood"}],
    }
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps(scenario))
    out = io.StringIO()
    assert main(["--no-tui", "--scenario", str(path)], out=out) == 0
    text = out.getvalue()
    assert "replaying inc-replay-1" in text
    assert "oncall: APPROVE → refused" in text and "→ accepted" in text
    assert "RESOLVED" in text and "1 resolved" in text.splitlines()[-1]
    runs = [json.loads(line) for line in (isolated / "agent_runs.jsonl").read_text().splitlines()]
    assert runs[-1]["incident"]["id"] == "inc-replay-1" and runs[-1]["executed"] is True


def test_an_unreadable_scenario_is_a_usage_error_before_anything_starts(isolated, tmp_path: Path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["--no-tui", "--scenario", str(bad)]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_keys_are_decoded_from_terminal_bytes():
    assert decode(b"\x1b[A\x1b[Bjk") == ["up", "down", "j", "k"]
    assert decode(b"a f\r\x7f\x1b") == ["a", "space", "f", "enter", "backspace", "esc"]
    assert decode(b"\x1b[1;5A") == []  # an unknown sequence is skipped whole
    assert decode("é".encode()) == ["é"]


def test_the_help_lists_the_modes_and_the_keys():
    text = build_parser().format_help()
    for flag in ("--fast", "--present", "--live", "--scenario", "--autopilot", "--duration", "--no-tui"):
        assert flag in text
    assert "FORCE_OVERRIDE" in text and "q quit" in text

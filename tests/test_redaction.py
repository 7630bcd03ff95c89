"""Credential-shaped text is redacted before it reaches any file: fed through an incident, an agent
reply and a tool argument (in-process and over MCP) and the dashboard, then the whole output
folder (trail, store, tui.log) is searched byte by byte for each secret."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from safety_governor.adapters.store_sqlite import SQLiteStore
from safety_governor.approvals import ApprovalPolicy
from safety_governor.bootstrap import build
from safety_governor.config import Settings
from safety_governor.knowledge import seed_store
from safety_governor.models import Incident
from safety_governor.ports import AgentReply
from safety_governor.redaction import RedactingFormatter, redact, redact_text

JWT = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ."
       "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c")
PEM = ("-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7bq3Lq1xZ9vQ2wS1mF0kT8sJx0pL\n"
       "q1xZ9vQ2wS1mF0kT8sJx0pLMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----")
# (kind, the text an operator or an agent might paste, the secret part that must never be written)
SAMPLES = [
    ("bearer_token", "curl -H 'Authorization: Bearer 9f8e7d6c5b4a3f2e1d0c9b8a7f6e' api", "9f8e7d6c5b4a3f2e1d0c9b8a7f6e"),
    ("basic_auth", "header Basic dXNlcjpodW50ZXIyMDI2 sent", "dXNlcjpodW50ZXIyMDI2"),
    ("api_key", "the key sk-live-4f3c2b1a0e9d8c7b6a5f4e3d leaked", "sk-live-4f3c2b1a0e9d8c7b6a5f4e3d"),
    ("aws_access_key", "aws id AKIAIOSFODNN7EXAMPLE in env", "AKIAIOSFODNN7EXAMPLE"),
    ("slack_token", "bot xoxb-1234567890-0987654321-AbCdEfGhIjKlMnOp posted", "xoxb-1234567890-0987654321-AbCdEfGhIjKlMnOp"),
    ("github_token", "push with ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8", "ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"),
    ("jwt", f"session {JWT} expired", JWT.split(".")[2]),
    ("private_key", f"key file:\n{PEM}\nend", "MIIEowIBAAKCAQEA7bq3Lq1xZ9vQ2wS1mF0kT8sJx0pL"),
    ("url_password", "db at postgres://app:Hunter2Secret@db.internal:5432/pay", "Hunter2Secret"),
    ("password", "GET /login?user=bob&password=Tr0ub4dor3x&next=/ 401", "Tr0ub4dor3x"),
]
SECRETS = [secret for _, _, secret in SAMPLES]


@pytest.mark.parametrize(("kind", "text", "secret"), SAMPLES, ids=[s[0] for s in SAMPLES])
def test_each_credential_pattern_becomes_a_marker_naming_its_kind(kind, text, secret):
    redacted = redact_text(text)
    assert secret not in redacted and f"[redacted:{kind}]" in redacted
    assert redact_text(redacted) == redacted  # idempotent


def test_prose_that_only_looks_like_a_header_is_kept():
    text = ("Basic checks passed; the bearer of bad news said bearer authentication failed; "
            "max_tokens=512 and sk-learn are fine; see https://example.com/a@b")
    assert redact_text(text) == text


def test_values_are_scanned_under_any_key_and_secret_keys_still_blank_whole_values():
    out = redact({"note": "AKIAIOSFODNN7EXAMPLE", "list": ["password=abc12345"], "api_key": "anything"})
    assert out == {"note": "[redacted:aws_access_key]", "list": ["password=[redacted:password]"],
                   "api_key": "[redacted]"}


def test_log_lines_and_tracebacks_are_redacted_by_the_formatter():
    handler_out = io.StringIO()
    handler = logging.StreamHandler(handler_out)
    handler.setFormatter(RedactingFormatter("%(message)s"))
    log = logging.getLogger("test.redaction")
    log.addHandler(handler)
    try:
        try:
            raise RuntimeError("call failed with Bearer 9f8e7d6c5b4a3f2e1d0c9b8a7f6e")
        except RuntimeError:
            log.exception("token %s", "xoxb-1234567890-0987654321-AbCdEfGhIjKlMnOp")
    finally:
        log.removeHandler(handler)
    text = handler_out.getvalue()
    assert "9f8e7d6c5b4a3f2e1d0c9b8a7f6e" not in text and "xoxb-1234567890" not in text
    assert "[redacted:bearer_token]" in text and "[redacted:slack_token]" in text


# --- end to end: nothing under output/ ---------------------------------------------------------


def leaked(folder: Path) -> dict[str, list[str]]:
    """Every file under ``folder`` (trail, store, logs) searched as bytes for each secret."""
    found: dict[str, list[str]] = {}
    for path in folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            hits = [s for s in SECRETS if s.encode() in data or json.dumps(s)[1:-1].encode() in data]
            if hits:
                found[path.name] = hits
    return found


ALL_TEXT = " | ".join(text for _, text, _ in SAMPLES)
# The offline agent's well-supported plan for a billing-batch queue lag, with every secret in its prose.
LEAKY_PLAN = {"proposed_action": "pause_noncritical_batch_jobs", "rationale": ALL_TEXT, "confidence_initial": 8,
              "key_claims": ["When invoice queue lag grows while workers are busy with reports and exports, pause "
                             "non-critical job classes to free capacity for invoicing.",
                             "Paused jobs resume without loss once lag is back under 5 minutes."],
              "retrieved_context_ids": ["rbk-batch-03"]}


class LeakyAgent:
    """An agent that passes every secret to a tool and writes them all into its plan."""

    name = "leaky"
    model = "gpt-oss-120b"

    def converse(self, phase: str, prompt: str, *, incident: Incident, tools: Any,
                 context: Mapping[str, Any]) -> AgentReply:
        tools.call("search_evidence", {"query": ALL_TEXT, "service": incident.service, "top_k": 3})
        if phase == "plan":
            reply = LEAKY_PLAN
        else:
            reply = {"claim_results": [], "policy_conflicts": [], "position_after_stress": ALL_TEXT}
        return AgentReply(text=f"Here you go ({ALL_TEXT}):\n```json\n{json.dumps(reply)}\n```", model=self.model)


@pytest.mark.parametrize("transport", ["local", "mcp-inprocess"])
def test_no_secret_from_an_incident_an_agent_reply_or_a_tool_argument_reaches_the_output_folder(
        tmp_path, knowledge, transport):
    output = tmp_path / "output"
    settings = Settings(output_dir=output, store_path=output / "governor.db")
    store = SQLiteStore(settings.resolved_store_path)
    seed_store(store, knowledge, source="test")
    from safety_governor.tui.app import setup_logging

    handler = setup_logging(output)
    try:
        governor = build(settings, store=store, agent=LeakyAgent(), tool_transport=transport)
        incident = Incident(id="inc-leak", service="billing-batch", severity="medium",
                            summary=f"Queue lag after deploy; {SAMPLES[0][1]}", symptoms=ALL_TEXT)
        assert store.claim_incident(incident, "test")
        record = governor.pipeline.run(incident, approvals=ApprovalPolicy.of(["oncall"], ["oncall"]))
        logging.getLogger("safety_governor.tui.test").warning("agent said: %s", ALL_TEXT)
        governor.close()
    finally:
        if handler is not None:
            logging.getLogger().removeHandler(handler)
            handler.close()
    store.close()
    assert record.plan is not None and "[redacted:api_key]" in record.plan.rationale and record.executed
    names = {p.name for p in output.iterdir()}
    assert {"tool_trace.jsonl", "agent_runs.jsonl", "workflow_events.jsonl", "tui.log", "governor.db"} <= names
    trace = (output / "tool_trace.jsonl").read_text()
    assert "[redacted:aws_access_key]" in trace and "[redacted:private_key]" in trace
    assert leaked(output) == {}


def test_no_secret_in_a_replayed_scenario_reaches_the_dashboards_output_folder(tmp_path, monkeypatch):
    from safety_governor.tui.app import main

    monkeypatch.setenv("GOVERNOR_OUTPUT_DIR", str(tmp_path / "output"))
    monkeypatch.chdir(tmp_path)
    scenario = {"name": "leaky incident", "incident": {
        "id": "inc-leak-2", "service": "billing-batch", "severity": "medium",
        "summary": f"Queue lag; {SAMPLES[2][1]}", "symptoms": ALL_TEXT},
        "agent": {"plan": "```json\n" + json.dumps(LEAKY_PLAN) + "\n```"}}
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps(scenario))
    assert main(["--no-tui", "--scenario", str(path)], out=io.StringIO()) == 0
    assert (tmp_path / "output" / "agent_runs.jsonl").exists()
    assert leaked(tmp_path / "output") == {}


def test_the_mcp_servers_stderr_log_is_redacted_too(capsys):
    from safety_governor.mcp_serve import _configure_logging

    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    try:
        _configure_logging("info")
        logging.getLogger("safety_governor.mcp").warning("client sent %s", SAMPLES[2][1])
    finally:
        root.handlers[:] = saved
        root.setLevel(level)
    err = capsys.readouterr().err
    assert SAMPLES[2][2] not in err and "[redacted:api_key]" in err

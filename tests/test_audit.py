"""The JSONL audit trail: appended, flushed, secrets redacted, failures raised."""

from __future__ import annotations

import json
import os

import pytest

from safety_governor.adapters.audit_jsonl import JsonlAudit
from safety_governor.errors import AuditWriteError


def test_records_are_appended_one_json_line_each(tmp_path):
    audit = JsonlAudit(tmp_path / "out")
    audit.record("workflow_events", {"kind": "gate_decision", "incident_id": "i1"})
    audit.record("workflow_events", {"kind": "approval_accepted", "incident_id": "i1"})
    lines = (tmp_path / "out" / "workflow_events.jsonl").read_text().splitlines()
    assert [json.loads(line)["kind"] for line in lines] == ["gate_decision", "approval_accepted"]
    assert all("recorded_at" in json.loads(line) for line in lines)


def test_secret_looking_keys_are_redacted(tmp_path):
    audit = JsonlAudit(tmp_path)
    audit.record("tool_trace", {"tool": "x", "arguments": {"api_key": "sk-live-123", "query": "q",
                                                           "headers": {"Authorization": "Bearer abc"}}})
    text = (tmp_path / "tool_trace.jsonl").read_text()
    assert "sk-live-123" not in text and "Bearer abc" not in text
    assert '"query": "q"' in text


def test_unwritable_trail_raises_audit_write_error(tmp_path):
    target = tmp_path / "ro"
    target.mkdir()
    (target / "workflow_events.jsonl").mkdir()  # a folder where the file should be: open() fails
    with pytest.raises(AuditWriteError):
        JsonlAudit(target).record("workflow_events", {"kind": "x"})


def test_unknown_stream_is_refused(tmp_path):
    with pytest.raises(AuditWriteError):
        JsonlAudit(tmp_path).record("random", {})
    assert not os.listdir(tmp_path)


def test_urls_lose_credentials_query_and_fragment_before_they_reach_a_message():
    from safety_governor.redaction import redact_url

    assert redact_url("https://user:pw@es.example:9243/path?api_key=abc#frag") == "https://es.example:9243/path"
    assert redact_url("http://[::1]:notaport/") == "<invalid url>"

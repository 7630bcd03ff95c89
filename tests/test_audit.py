"""The JSONL audit trail: appended whole, hash-chained, secrets redacted, failures raised, and
``audit verify`` naming the first record that breaks the chain."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from safety_governor.adapters.audit_jsonl import JsonlAudit
from safety_governor.audit_chain import GENESIS_PREV, record_hash, verify
from safety_governor.cli import main
from safety_governor.errors import AuditWriteError


def lines_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def written(tmp_path: Path, n: int = 6, **kwargs) -> Path:
    audit = JsonlAudit(tmp_path, instance="gov-a", config_hash="sha256:abc", **kwargs)
    for i in range(n):
        audit.record("workflow_events", {"kind": "gate_decision", "incident_id": f"i{i}", "decision": "execute"})
    return tmp_path / "workflow_events.jsonl"


def verify_cli(target: Path, capsys) -> tuple[int, str]:
    code = main(["audit", "verify", str(target)])
    return code, capsys.readouterr().out


def edit_seq_3(lines: list[str]) -> None:
    """Quietly rewrite one field of the record with seq 3."""
    record = json.loads(lines[2])
    record["decision"] = "block_and_escalate"
    lines[2] = json.dumps(record) + "\n"


def tampered(path: Path, capsys, change) -> str:
    """Apply ``change`` to the file's lines, verify, and return what verify printed (exit 1)."""
    lines = path.read_text().splitlines(keepends=True)
    change(lines)
    path.write_text("".join(lines))
    code, out = verify_cli(path.parent, capsys)
    assert code == 1
    return out


def test_records_are_appended_one_json_line_each_after_a_genesis_naming_instance_and_config(tmp_path):
    audit = JsonlAudit(tmp_path / "out", instance="gov-a", config_hash="sha256:abc")
    audit.record("workflow_events", {"kind": "gate_decision", "incident_id": "i1"})
    audit.record("workflow_events", {"kind": "approval_accepted", "incident_id": "i1"})
    records = lines_of(tmp_path / "out" / "workflow_events.jsonl")
    assert [r["kind"] for r in records] == ["audit_genesis", "gate_decision", "approval_accepted"]
    genesis = records[0]
    assert (genesis["governor_instance"], genesis["config_hash"], genesis["hash_alg"], genesis["stream"]) == \
        ("gov-a", "sha256:abc", "sha256", "workflow_events")
    assert [r["seq"] for r in records] == [1, 2, 3]
    assert genesis["prev_hash"] == GENESIS_PREV
    assert [r["prev_hash"] for r in records[1:]] == [r["hash"] for r in records[:-1]]
    assert all(r["hash"] == record_hash(r) for r in records)
    assert all("recorded_at" in r for r in records)


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


# --- audit verify ------------------------------------------------------------------------------


def test_verify_passes_on_an_intact_trail_with_one_line_per_file(tmp_path, capsys):
    written(tmp_path)
    JsonlAudit(tmp_path).record("tool_trace", {"tool": "search_runbooks"})
    code, out = verify_cli(tmp_path, capsys)
    assert code == 0
    assert out.splitlines()[:2] == ["tool_trace.jsonl: 2 records, seq 1-2, sha256, OK",
                                    "workflow_events.jsonl: 7 records, seq 1-7, sha256, OK"]


def test_verify_names_the_record_after_a_deleted_line(tmp_path, capsys):
    out = tampered(written(tmp_path), capsys, lambda lines: lines.pop(3))  # seq 4
    assert "workflow_events.jsonl: BROKEN at line 4 (seq 5): seq 5 where 4 was expected" in out


def test_verify_names_an_edited_field_even_when_seq_and_links_look_right(tmp_path, capsys):
    out = tampered(written(tmp_path), capsys, edit_seq_3)
    assert "BROKEN at line 3 (seq 3): hash" in out and "does not match the record's content" in out


def test_an_edit_with_its_own_hash_recomputed_breaks_the_next_link(tmp_path, capsys):
    def edit_and_rehash(lines: list[str]) -> None:
        record = json.loads(lines[2])
        record["decision"] = "block_and_escalate"
        record["hash"] = record_hash(record)
        lines[2] = json.dumps(record) + "\n"

    out = tampered(written(tmp_path), capsys, edit_and_rehash)
    assert "BROKEN at line 4 (seq 4): prev_hash" in out


def test_verify_names_two_swapped_lines(tmp_path, capsys):
    def swap(lines: list[str]) -> None:
        lines[4], lines[5] = lines[5], lines[4]

    out = tampered(written(tmp_path), capsys, swap)
    assert "BROKEN at line 5 (seq 6): seq 6 where 5 was expected" in out


def test_verify_names_a_truncated_last_line(tmp_path, capsys):
    path = written(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[:-40])
    code, out = verify_cli(tmp_path, capsys)
    assert code == 1
    assert "BROKEN at line 7: cut off (no newline, not JSON): a torn or truncated write" in out


def test_verify_refuses_a_file_that_does_not_start_with_its_genesis(tmp_path, capsys):
    path = written(tmp_path)
    path.write_text("".join(path.read_text().splitlines(keepends=True)[1:]))
    code, out = verify_cli(tmp_path, capsys)
    assert code == 1 and "BROKEN at line 1 (seq 2)" in out and "genesis" in out


def test_verify_of_a_missing_folder_is_a_usage_error(tmp_path, capsys):
    assert main(["audit", "verify", str(tmp_path / "nope")]) == 2
    assert "no such file or folder" in capsys.readouterr().err


# --- torn writes -------------------------------------------------------------------------------


def test_a_torn_last_line_is_set_aside_at_start_and_the_chain_continues(tmp_path, caplog):
    path = written(tmp_path, n=3)
    with open(path, "ab") as fh:
        fh.write(b'{"kind": "gate_decision", "incident_id": "i9", "se')  # the crash
    audit = JsonlAudit(tmp_path)  # the next start
    assert audit.warnings and "torn last line" in audit.warnings[0]
    assert "torn last line" in caplog.text
    assert (tmp_path / "workflow_events.jsonl.torn").read_bytes() == \
        b'{"kind": "gate_decision", "incident_id": "i9", "se\n'
    audit.record("workflow_events", {"kind": "after_restart"})
    records = lines_of(path)
    assert [r["kind"] for r in records[-2:]] == ["audit_torn_tail", "after_restart"]
    assert records[-2]["moved_to"] == "workflow_events.jsonl.torn" and records[-2]["bytes"] == 50
    [check] = verify(tmp_path)
    assert check.ok and check.records == 6


def test_a_whole_last_line_without_its_newline_is_ended_not_set_aside(tmp_path):
    path = written(tmp_path, n=2)
    path.write_bytes(path.read_bytes()[:-1])
    audit = JsonlAudit(tmp_path)
    audit.record("workflow_events", {"kind": "next"})
    assert not audit.warnings and not (tmp_path / "workflow_events.jsonl.torn").exists()
    assert verify(tmp_path)[0].ok


PARTIAL_WRITE = """
import resource, signal, sys
from pathlib import Path
from safety_governor.adapters.audit_jsonl import JsonlAudit
from safety_governor.errors import AuditWriteError
path = Path(sys.argv[1]) / "workflow_events.jsonl"
audit = JsonlAudit(path.parent)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
limit = path.stat().st_size + 300  # the disk fills up in the middle of the next line
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
try:
    audit.record("workflow_events", {"kind": "big", "text": "x" * 5000})
except AuditWriteError as exc:
    print("refused:", exc)
"""


def test_a_write_cut_short_by_a_full_disk_is_taken_back_whole(tmp_path):
    path = written(tmp_path, n=2)
    before = path.read_bytes()
    result = subprocess.run([sys.executable, "-c", PARTIAL_WRITE, str(tmp_path)], capture_output=True, text=True,
                            timeout=60)
    assert "refused: cannot write the workflow_events audit trail" in result.stdout, result.stderr
    assert path.read_bytes() == before
    JsonlAudit(tmp_path).record("workflow_events", {"kind": "next"})
    assert verify(tmp_path)[0].ok


# --- several writers, HMAC, files the chain cannot continue -----------------------------------


def test_two_governors_appending_to_one_folder_keep_one_gap_free_chain(tmp_path):
    a, b = JsonlAudit(tmp_path, instance="a"), JsonlAudit(tmp_path, instance="b")

    def write(audit: JsonlAudit, name: str) -> None:
        for i in range(40):
            audit.record("workflow_events", {"kind": "x", "by": name, "i": i})

    threads = [threading.Thread(target=write, args=(a, "a")), threading.Thread(target=write, args=(b, "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    [check] = verify(tmp_path)
    assert check.ok and (check.records, check.last_seq) == (81, 81)


def test_hmac_chains_verify_only_with_the_key(tmp_path, capsys, monkeypatch):
    path = written(tmp_path, hmac_key="k3y")
    assert lines_of(path)[0]["hash_alg"] == "hmac-sha256"
    assert verify(tmp_path, b"k3y")[0].ok
    assert "set AUDIT_HMAC_KEY to verify it" in verify(tmp_path)[0].problem
    assert not verify(tmp_path, b"wrong")[0].ok
    monkeypatch.setenv("AUDIT_HMAC_KEY", "k3y")
    assert verify_cli(tmp_path, capsys)[0] == 0


def test_without_the_key_a_rewritten_hmac_chain_does_not_verify(tmp_path):
    path = written(tmp_path, hmac_key="k3y")
    records = lines_of(path)
    records[2]["decision"] = "block_and_escalate"
    prev = records[1]["hash"]
    for r in records[2:]:  # the forger recomputes every later link, but without the key
        r["prev_hash"] = prev
        r["hash"] = prev = record_hash(r)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    check = verify(tmp_path, b"k3y")[0]
    assert not check.ok and check.line == 3


def test_an_unkeyed_chain_is_refused_when_a_key_is_configured(tmp_path):
    written(tmp_path)
    check = verify(tmp_path, b"k3y")[0]
    assert not check.ok and "unkeyed sha256 chain" in check.problem


def test_a_file_the_chain_cannot_continue_is_renamed_aside_and_named_in_the_new_genesis(tmp_path):
    legacy = tmp_path / "workflow_events.jsonl"
    legacy.write_text('{"kind": "gate_decision"}\n')  # written before the chain existed
    audit = JsonlAudit(tmp_path)
    audit.record("workflow_events", {"kind": "x"})
    [aside] = list(tmp_path.glob("workflow_events.jsonl.*.unchained"))
    assert aside.read_text() == '{"kind": "gate_decision"}\n'
    genesis = lines_of(legacy)[0]
    assert genesis["previous_file"] == aside.name and "no hash chain" in genesis["previous_file_reason"]
    assert audit.warnings and verify(tmp_path)[0].ok


def test_the_start_check_shows_a_broken_chain_and_new_appends_never_repair_it(tmp_path):
    from safety_governor.bootstrap import audit_status
    from safety_governor.config import Settings

    path = written(tmp_path)
    lines = path.read_text().splitlines(keepends=True)
    edit_seq_3(lines)
    path.write_text("".join(lines))
    audit = JsonlAudit(tmp_path)  # the next start, then more records
    audit.record("workflow_events", {"kind": "gate_decision", "incident_id": "later"})
    ok, line = audit_status(Settings(output_dir=tmp_path), audit)
    assert not ok and line.startswith("workflow_events.jsonl: BROKEN at line 3 (seq 3): hash")
    [check] = verify(tmp_path)
    assert (check.line, check.seq) == (3, 3)
    assert json.loads(path.read_text().splitlines()[2])["decision"] == "block_and_escalate"  # left as found

"""The knowledge base: validated, all or nothing, idempotent, and believable."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from safety_governor.adapters.store_sqlite import SQLiteStore
from safety_governor.config import DEFAULT_DATA_DIR
from safety_governor.errors import InputError
from safety_governor.knowledge import load_knowledge_file, rebase_logs, seed_store, validate_knowledge

SEED_IDS = {
    "runbooks": {"rbk-api-01", "rbk-api-02", "rbk-batch-01"},
    "evidence": {"ev-100", "ev-101", "ev-102", "ev-103", "ev-104"},
    "policies": {"pol-approval-01", "pol-general-01"},
    "incidents": {"inc-001", "inc-002"},
}


def test_sample_data_keeps_the_seed_documents_and_is_big_enough(knowledge):
    for index, ids in SEED_IDS.items():
        assert ids <= {d["id"] for d in knowledge[index]}
    services = {d["service"] for d in knowledge["runbooks"]}
    assert len(services) >= 8
    assert len(knowledge["runbooks"]) >= 25
    assert len(knowledge["evidence"]) >= 60
    assert len(knowledge["policies"]) >= 10
    stances = Counter(d["stance"] for d in knowledge["evidence"])
    assert stances["support"] and stances["contradict"]
    assert len({d.get("source") for d in knowledge["evidence"]}) >= 3
    assert any(p["service"] == "*" for p in knowledge["policies"])
    assert all(d.get("action") for d in knowledge["evidence"] if d["id"] in SEED_IDS["evidence"])
    assert knowledge["logs"] and all(isinstance(d["response"], str) for d in knowledge["logs"])


def test_every_referenced_action_is_catalogued(knowledge):
    catalogue = {a["id"] for a in json.loads((DEFAULT_DATA_DIR / "actions.json").read_text())["actions"]}
    referenced = {d["recommended_action"] for d in knowledge["runbooks"]}
    referenced |= {d["action"] for d in knowledge["evidence"] if d.get("action")}
    referenced |= {a for p in knowledge["policies"] for a in p["blocked_actions"]}
    assert referenced <= catalogue


def test_seeding_twice_creates_no_duplicates(knowledge):
    store = SQLiteStore(":memory:")
    seed_store(store, knowledge, source="t")
    first = {i: store.count(i) for i in ("runbooks", "evidence", "policies", "incidents", "logs")}
    seed_store(store, knowledge, source="t")
    assert {i: store.count(i) for i in first} == first
    assert first["logs"] == len(knowledge["logs"])


def test_a_bad_document_names_file_index_position_and_field_and_writes_nothing(tmp_path, knowledge):
    data = {k: list(v) for k, v in knowledge.items()}
    data["evidence"] = [*data["evidence"][:3], {"id": "ev-bad", "service": "x", "stance": "maybe", "text": "t"}]
    path = tmp_path / "kb.json"
    path.write_text(json.dumps(data))
    with pytest.raises(InputError) as err:
        load_knowledge_file(path)
    message = str(err.value)
    assert str(path) in message and "evidence[3]" in message and "ev-bad" in message and "stance" in message


def test_missing_required_field_and_malformed_json_are_reported(tmp_path):
    with pytest.raises(InputError, match=r"incidents\[0\].*field 'service'"):
        validate_knowledge({"incidents": [{"id": "i", "severity": "low", "summary": "s"}]}, "kb.json")
    bad = tmp_path / "broken.json"
    bad.write_text('{"runbooks": [')
    with pytest.raises(InputError, match=r"broken.json: not valid JSON \(line 1"):
        load_knowledge_file(bad)


def test_a_failure_midway_rolls_back_the_whole_load(knowledge):
    store = SQLiteStore(":memory:")
    broken = {k: list(v) for k, v in knowledge.items()}
    broken["logs"] = [*broken["logs"][:5], {"timestamp": "not a time", "service": "x", "response": "200"}]
    with pytest.raises(ValueError):
        seed_store(store, broken, source="t")
    assert store.count("runbooks") == 0 and store.count("logs") == 0


def test_logs_are_rebased_so_the_newest_line_is_now_and_ids_are_stable():
    logs = [{"timestamp": "2026-01-01T00:00:00Z", "service": "a", "response": "200"},
            {"timestamp": "2026-01-01T01:00:00Z", "service": "a", "response": "500"}]
    from datetime import UTC, datetime

    now = datetime(2030, 5, 5, 12, 0, tzinfo=UTC)
    first = rebase_logs(logs, now)
    again = rebase_logs(logs, datetime(2031, 1, 1, tzinfo=UTC))
    assert first[1]["timestamp"] == "2030-05-05T12:00:00Z"
    assert first[0]["timestamp"] == "2030-05-05T11:00:00Z"
    assert [d["id"] for d in first] == [d["id"] for d in again]

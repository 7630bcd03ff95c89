"""Missing knowledge is not permission: a data folder or configuration that leaves out what the
gate needs is an error naming the file and the key, before anything runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from safety_governor import cli
from safety_governor.bootstrap import build
from safety_governor.config import DEFAULT_DATA_DIR, DEFAULT_GATE_POLICY_PATH, Settings, load_gate_policy
from safety_governor.errors import ConfigError, InputError
from safety_governor.knowledge import load_knowledge_file


def _data_dir(tmp_path: Path, **changes) -> Path:
    folder = tmp_path / "data"
    shutil.copytree(DEFAULT_DATA_DIR, folder)
    knowledge = json.loads((folder / "sample_data.json").read_text(encoding="utf-8"))
    for key, value in changes.items():
        if value is None:
            knowledge.pop(key)
        else:
            knowledge[key] = value
    (folder / "sample_data.json").write_text(json.dumps(knowledge), encoding="utf-8")
    return folder


@pytest.mark.parametrize("index", ["policies", "runbooks", "evidence"])
@pytest.mark.parametrize("how", ["empty", "missing"])
def test_a_data_file_without_policies_runbooks_or_evidence_is_refused_naming_file_and_key(tmp_path, index, how):
    folder = _data_dir(tmp_path, **{index: [] if how == "empty" else None})
    with pytest.raises(InputError, match=rf"sample_data.json: key '{index}' is missing or empty"):
        load_knowledge_file(folder / "sample_data.json")


def test_seeding_from_a_data_folder_with_no_policies_exits_2_with_one_line(tmp_path, monkeypatch, capsys):
    folder = _data_dir(tmp_path, policies=[])
    monkeypatch.setenv("GOVERNOR_OUTPUT_DIR", str(tmp_path / "out"))
    monkeypatch.setenv("ELASTIC_URL", "")
    assert cli.main(["seed", "--data", str(folder / "sample_data.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert "key 'policies' is missing or empty" in err and "\n" not in err


@pytest.mark.parametrize("content", [None, '{"actions": []}'])
def test_a_missing_or_empty_actions_json_stops_the_wiring_naming_the_file(tmp_path, content):
    folder = _data_dir(tmp_path)
    if content is None:
        (folder / "actions.json").unlink()
    else:
        (folder / "actions.json").write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"actions.json: (file not found|key 'actions' is empty)"):
        build(Settings(data_dir=folder, output_dir=tmp_path / "out"))


@pytest.mark.parametrize("key", ["execute_confidence_floor", "approval_ttl_seconds", "refusal_confidence_threshold"])
def test_a_gate_policy_missing_a_key_is_an_error_naming_the_file_and_the_key(tmp_path, key):
    raw = json.loads(DEFAULT_GATE_POLICY_PATH.read_text(encoding="utf-8"))
    raw.pop(key)
    path = tmp_path / "gate_policy.json"
    path.write_text(json.dumps(raw), encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"gate_policy.json: missing key\(s\) '{key}'"):
        load_gate_policy(path)


def test_the_shipped_gate_policy_sets_the_execute_floor_and_the_approval_ttl():
    policy = load_gate_policy()
    assert policy.execute_confidence_floor == 5.0
    assert policy.approval_ttl_seconds == 1800

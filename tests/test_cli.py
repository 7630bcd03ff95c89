"""The CLI: subcommands listed, one-line errors with exit code 2, never a traceback."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, env: dict | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "safety_governor", *args], capture_output=True, text=True,
                          cwd=cwd, env=full_env, timeout=120)


def test_help_lists_the_subcommands():
    out = cli("--help")
    assert out.returncode == 0
    for command in ("replay", "seed", "contracts", "assess", "demo", "runbooks", "mcp", "approvals"):
        assert command in out.stdout


def test_no_subcommand_prints_help_and_exits_2():
    out = cli()
    assert out.returncode == 2 and "usage" in out.stdout


def test_unknown_subcommand_is_a_usage_error():
    out = cli("frobnicate")
    assert out.returncode == 2 and "invalid choice" in out.stderr


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ('{"id": "i1", "severity": "high", "summary": "s"}', "field 'incident.service'"),
        ('{"id": "i1", "service": "a", "severity": "apocalyptic", "summary": "s"}', "field 'incident.severity'"),
        ('{"id": "i1", "service": ', "not valid JSON"),
    ],
)
def test_bad_scenario_input_is_one_line_naming_file_and_field(tmp_path, content, needle):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    out = cli("replay", str(bad))
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert str(bad) in lines[0] and needle in lines[0]
    assert "Traceback" not in out.stderr


def test_missing_path_is_a_usage_error(tmp_path):
    out = cli("replay", str(tmp_path / "nope.json"))
    assert out.returncode == 2 and "file not found" in out.stderr


def test_seed_into_a_store_file_is_idempotent(tmp_path):
    store = tmp_path / "g.db"
    first = cli("seed", "--store", str(store))
    second = cli("seed", "--store", str(store))
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert "evidence" in second.stdout
    import sqlite3

    con = sqlite3.connect(store)
    runbooks = con.execute("SELECT COUNT(*) FROM runbooks").fetchone()[0]
    data = json.loads((ROOT / "data" / "sample_data.json").read_text())
    assert runbooks == len(data["runbooks"])


def test_load_to_elastic_script_seeds_the_embedded_store_without_elastic_url(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ELASTIC")}
    out = subprocess.run([sys.executable, str(ROOT / "load_to_elastic.py"), "--store", str(tmp_path / "e.db")],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "runbooks" in out.stdout


def test_seed_with_a_bad_knowledge_file_writes_nothing(tmp_path):
    bad = tmp_path / "kb.json"
    bad.write_text(json.dumps({"runbooks": [{"id": "r1", "service": "s", "title": "t", "body": "b"}]}))
    store = tmp_path / "g.db"
    out = cli("seed", "--data", str(bad), "--store", str(store))
    assert out.returncode == 2
    assert "runbooks[0]" in out.stderr and "recommended_action" in out.stderr


def test_assess_prints_json_for_a_seed_incident():
    out = cli("assess", "scenarios/incident_medium.json", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["incident_id"] == "inc-live-002"
    assert result["decision"] in ("execute", "block_and_escalate")


def test_contracts_check_passes_on_a_clean_tree():
    out = cli("contracts", "--check")
    assert out.returncode == 0, out.stderr


def test_every_subcommand_has_a_help_line_and_a_description():
    from safety_governor.cli import build_parser

    parser = build_parser()
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    helps = {c.dest: c.help for c in sub._choices_actions}
    for name, command in sub.choices.items():
        assert helps.get(name), f"{name} has no help line"
        assert command.description and len(command.description) > 40, f"{name} --help has no description"


def test_mcp_help_documents_its_exit_codes():
    from safety_governor.cli import build_parser

    [sub] = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    text = " ".join(sub.choices["mcp"].format_help().split())
    assert "Exit codes: 0 after a clean stop; 2 for bad settings or a port that cannot be bound" in text

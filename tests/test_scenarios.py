"""The scenarios in scenarios/: each replays in its own store and meets the expectations it states.

The files are the specification by example (see scenarios/README.md): every gate rule, every
approval path and the adversarial agent replies. These tests replay them through the library and
through the CLI, and check that the set as a whole still covers what it claims to cover.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from safety_governor.approvals import parse_command
from safety_governor.config import Settings
from safety_governor.models import RULE_IDS
from safety_governor.replay import load_scenario, replay

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ROOT / "scenarios"
FILES = sorted(SCENARIOS.glob("*.json"))
SEED_FILES = {"incident_high.json", "incident_medium.json", "incident_downloads_503.json"}
NUMBERED = [p for p in FILES if p.name not in SEED_FILES]

# Scenarios whose (correct) expectation the code does not meet yet. Remove an entry when its bug is
# fixed: the xfail is strict, so a fixed bug fails here until the entry goes.
# Scenario files whose expectation the code does not meet yet (strict xfail); empty when none.
KNOWN_BUGS: dict[str, str] = {}

RESULT_KEYS = {
    "scenario", "incident_id", "decision", "rules", "approval_required", "confidence_final", "executed",
    "approve_refused", "baseline_executed", "expectations_met", "failures",
}


def _param(path: Path):
    marks = [pytest.mark.xfail(reason=KNOWN_BUGS[path.name], strict=True)] if path.name in KNOWN_BUGS else []
    return pytest.param(path, id=path.stem, marks=marks)


def _raw(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _commands(raw: dict) -> list[str | None]:
    return [parse_command(r["text"])[0] for r in raw.get("approvals", [])]


def _cli(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """The CLI with the defaults: no hosted APIs, no Elasticsearch, dry-run executor, oncall approves."""
    blank = ("CDCT_API_URL", "DDFT_API_URL", "EECT_API_URL", "ELASTIC_URL", "ELASTIC_API_KEY", "AGENT_BACKEND",
             "AGENT_MODEL", "GOVERNOR_APPROVERS", "GOVERNOR_OVERRIDERS", "GOVERNOR_LOCAL_USER", "GOVERNOR_DATA_DIR",
             "GOVERNOR_GATE_POLICY", "GOVERNOR_STORE_PATH", "EXECUTOR")
    env = {**os.environ, **{name: "" for name in blank}, "GOVERNOR_OUTPUT_DIR": str(tmp_path)}
    return subprocess.run([sys.executable, "-m", "safety_governor", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=120)


@pytest.mark.parametrize("path", [_param(p) for p in FILES])
def test_each_scenario_replays_in_an_isolated_store_and_meets_its_expectations(path, tmp_path):
    results, summary = replay([path], Settings(output_dir=tmp_path))
    assert len(results) == 1 and summary["scenarios"] == 1
    result = results[0]
    assert result.expectations_met is True, f"{path.name}: {result.failures}"


def test_there_are_at_least_seventeen_scenarios_with_full_expectations_and_unique_incident_ids():
    assert len(NUMBERED) >= 17
    for path in NUMBERED:
        raw = _raw(path)
        assert raw.get("name") and raw.get("description"), path.name
        assert {"decision", "executed", "rules", "approve_refused"} <= set(raw["expect"]), path.name
        assert set(raw["expect"]) <= {"decision", "executed", "rules", "approve_refused", "approval_required"}
    ids = Counter(load_scenario(p).incident.id for p in FILES)
    assert [i for i, n in ids.items() if n > 1] == []


def test_the_seed_scenarios_state_their_expectations_and_still_load_as_incidents_for_assess():
    for name in SEED_FILES:
        raw = _raw(ROOT / "scenarios" / name)
        assert set(raw["expect"]) == {"decision", "executed", "rules", "approve_refused"}, name
        assert load_scenario(ROOT / "scenarios" / name).incident.id == raw["incident"]["id"]


def test_every_gate_rule_is_expected_alone_by_at_least_one_scenario():
    alone = {tuple(sorted(_raw(p)["expect"]["rules"])) for p in NUMBERED}
    for rule in RULE_IDS:
        if rule == "contradictions":
            # Two grounded contradictions cost the bundled model (gpt-oss-120b: ECS 8.8, CI 0.66) at
            # least 0.9*2*(2-0.66) + 1.5 = 3.9 points from at most 8.5: below the execute floor, so
            # low_confidence always comes with it. The boundary tests pin the rule alone.
            assert ("contradictions", "low_confidence") in alone
            continue
        assert (rule,) in alone, f"no scenario expects {rule} on its own"


def test_the_scenarios_cover_every_approval_path():
    raws = [_raw(p) for p in NUMBERED]

    def some(predicate) -> bool:
        return any(predicate(r, r["expect"], _commands(r)) for r in raws)

    clean = [r for r in raws if r["expect"]["decision"] == "execute" and r["expect"]["executed"]
             and not r.get("approvals")]
    assert len(clean) >= 2
    # APPROVE on a non-critical block executes; on a critical one it is refused, also when repeated.
    assert some(lambda r, e, c: e["decision"] == "block_and_escalate" and e["executed"] and c == ["APPROVE"]
                and r["incident"]["severity"] != "critical")
    assert some(lambda r, e, c: e["approve_refused"] and not e["executed"] and c.count("APPROVE") >= 2
                and r["incident"]["severity"] == "critical")
    # FORCE_OVERRIDE with a reason executes; without one it does not.
    assert some(lambda r, e, c: e["executed"] and c == ["FORCE_OVERRIDE"])
    assert some(lambda r, e, c: not e["executed"] and "FORCE_OVERRIDE" in c
                and all(parse_command(a["text"])[1] == "" for a in r["approvals"]))
    # Configured users only: strangers, and an approver who is not an overrider.
    assert some(lambda r, e, c: "approvers" in r and not e["executed"] and "APPROVE" in c)
    assert some(lambda r, e, c: "approvers" in r and not e["executed"] and "FORCE_OVERRIDE" in c)
    # Look-alike replies are not commands.
    assert some(lambda r, e, c: len(c) >= 5 and set(c) == {None} and not e["executed"])
    # REJECT closes: nothing after it executes.
    assert some(lambda r, e, c: c[:1] == ["REJECT"] and "APPROVE" in c and not e["executed"])
    # HOLD stops an auto-execution; HOLD then APPROVE executes.
    assert some(lambda r, e, c: e["decision"] == "execute" and c == ["HOLD"] and not e["executed"])
    assert some(lambda r, e, c: e["decision"] == "execute" and c == ["HOLD", "APPROVE"] and e["executed"])


def test_injected_instructions_leave_the_decision_of_the_clean_incident_unchanged(tmp_path):
    clean, injected = (SCENARIOS / "incident_high.json", SCENARIOS / "24_injected_instructions_in_incident.json")
    assert "ignore previous instructions" in load_scenario(injected).incident.summary.lower()
    results, _ = replay([clean, injected], Settings(output_dir=tmp_path))
    # The injected text names restart_api_pods, so the offline planner's search lands on that runbook
    # instead of scale_api_replicas; either way it is blocked on the same evidence rules and nothing runs.
    for r in results:
        assert r.decision == "block_and_escalate" and not r.executed
        assert {"contradictions", "policy_conflict"} <= set(r.rules)
    assert results[1].proposed_action == "restart_api_pods" and "requires_approval" in results[1].rules


def test_replay_cli_prints_the_documented_json_and_its_exit_code_follows_the_expectations(tmp_path):
    out = _cli("replay", "scenarios", "--json", tmp_path=tmp_path)
    assert "Traceback" not in out.stderr
    body = json.loads(out.stdout)
    assert set(body) == {"results", "summary"}
    assert len(body["results"]) == len(FILES)
    for result in body["results"]:
        assert RESULT_KEYS <= set(result), sorted(RESULT_KEYS - set(result))
    summary = body["summary"]
    assert summary["scenarios"] == len(FILES) and summary["with_expectations"] == len(FILES)
    failing = {Path(r["file"]).name for r in body["results"] if r["expectations_met"] is False}
    assert failing == set(KNOWN_BUGS)
    assert summary["expectations_failed"] == len(KNOWN_BUGS)
    assert out.returncode == (1 if KNOWN_BUGS else 0)


GOOD = {"name": "good", "incident": {"id": "t-1", "service": "checkout-web", "severity": "medium",
                                     "summary": "5xx after deploy"}}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda s: s["incident"].pop("service"), "field 'incident.service'"),
        (lambda s: s["incident"].update(severity="sev1"), "field 'incident.severity'"),
        (lambda s: s.update(expect={"rules": ["gut_feeling"]}), "field 'expect.rules.0'"),
        (lambda s: s.update(approvals=[{"text": "APPROVE"}]), "field 'approvals.0.user'"),
        (lambda s: s.update(knowledge={"evidence": [{"id": "ev-x", "service": "checkout-web", "stance": "maybe",
                                                     "text": "t"}]}), "evidence[0] (id ev-x): field 'stance'"),
    ],
    ids=["incident_missing_service", "unknown_severity", "unknown_rule_id", "reply_without_user", "bad_evidence"],
)
def test_a_malformed_scenario_in_a_folder_stops_the_replay_with_exit_2_and_one_line_naming_file_and_field(
    tmp_path, change, field
):
    folder = tmp_path / "scenarios"
    folder.mkdir()
    (folder / "a_good.json").write_text(json.dumps(GOOD), encoding="utf-8")
    bad = json.loads(json.dumps(GOOD))
    change(bad)
    (folder / "b_bad.json").write_text(json.dumps(bad), encoding="utf-8")
    out = _cli("replay", str(folder), "--json", tmp_path=tmp_path)
    assert out.returncode == 2
    assert out.stdout == ""  # every file is loaded before anything runs
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert str(folder / "b_bad.json") in lines[0] and field in lines[0]
    assert "Traceback" not in out.stderr

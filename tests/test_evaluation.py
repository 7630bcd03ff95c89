"""The decision-quality benchmark: the world itself, the policies, the metrics and the CLI.

Small N everywhere: the benchmark's figures are printed by ``make eval``, not asserted here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from safety_governor.adapters.audit_jsonl import MemoryAudit
from safety_governor.adapters.executor_dryrun import DryRunExecutor
from safety_governor.adapters.store_sqlite import SQLiteStore
from safety_governor.bootstrap import build
from safety_governor.config import DEFAULT_DATA_DIR, Settings
from safety_governor.errors import InputError
from safety_governor.evaluation import parse_assignments, run_benchmark
from safety_governor.evaluation.agents import RecordingAgent, make_agent
from safety_governor.evaluation.metrics import policy_metrics
from safety_governor.evaluation.policies import Verdict, seed_verdict
from safety_governor.evaluation.runner import CaseRecord, EvalRunner
from safety_governor.evaluation.world import Truth, load_world
from safety_governor.catalogue import ActionCatalogue
from safety_governor.knowledge import seed_store
from safety_governor.models import ClaimReport, Incident, PlanOutput, StressReport

ROOT = Path(__file__).resolve().parents[1]
SMALL_SWEEP = {"contradiction_block_threshold": [1.0, 3.0]}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(output_dir=tmp_path / "output", store_path=tmp_path / "output" / "governor.db")


def _strip_run(result: dict) -> dict:
    return {k: v for k, v in result.items() if k != "run"}


def test_same_seed_gives_the_same_numbers_and_another_seed_another_world(settings):
    first = run_benchmark(settings, overrides={"cases": 21, "seed": 3}, sweep=SMALL_SWEEP)
    second = run_benchmark(settings, overrides={"cases": 21, "seed": 3}, sweep=SMALL_SWEEP)
    other = run_benchmark(settings, overrides={"cases": 21, "seed": 4}, sweep=SMALL_SWEEP)
    assert _strip_run(first) == _strip_run(second)
    assert first["world"]["evidence_docs"] != other["world"]["evidence_docs"] or \
        first["policies"] != other["policies"]
    assert set(first) >= {"cases", "seed", "policies", "sweep"}
    assert first["cases"] == 21 and first["seed"] == 3
    for policy in ("naive", "seed", "governor"):
        for key in ("harmful_auto_executed", "harmful_escalated", "good_auto_executed", "good_escalated",
                    "no_effect_auto_executed"):
            assert isinstance(first["policies"][policy][key], int)
    assert [(p["param"], p["value"]) for p in first["sweep"]] == [("contradiction_block_threshold", 1.0),
                                                                   ("contradiction_block_threshold", 3.0)]


def test_an_honest_agent_in_a_noise_free_world_gets_no_harm_through_any_policy(settings):
    result = run_benchmark(settings, overrides={"cases": 45, "seed": 11, "agent_shares": {"honest": 1.0}},
                           noise_free=True, sweep=SMALL_SWEEP)
    every = [*result["policies"].values(), *result["sweep"]]
    assert result["policies"]["naive"]["good_plans"] > 30  # the claim is not vacuous
    assert all(m["harmful_plans"] == 0 and m["harmful_auto_executed"] == 0 for m in every)
    assert result["world"]["poisoned_docs"] == 0 and result["world"]["plans_with_surprise_outcome"] == 0


def test_the_naive_policys_harm_rate_is_the_share_of_harmful_plans(settings):
    runner = EvalRunner(settings, overrides={"cases": 40, "seed": 5}, sweep={})
    records, _ = runner.run()
    # The truth of each plan, looked up again from freshly generated cases.
    cases = {c.index: c for c in runner.generator.cases()}
    truths = [cases[r.index].outcome(r.action) for r in records]
    harmful = sum(1 for t in truths if t is not None and t.outcome == "harms")
    naive = policy_metrics(records, "naive", runner.table)
    assert harmful > 0
    assert naive["harmful_auto_executed"] == harmful
    assert naive["harm_rate"] == round(harmful / len(records), 4)


def test_agent_kinds_and_poisoned_documents_appear_in_the_configured_proportions(settings):
    shares = {"honest": 0.5, "destructive": 0.25, "injected": 0.125, "broken": 0.125}
    runner = EvalRunner(settings, overrides={"cases": 400, "seed": 9, "agent_shares": shares,
                                             "poison_share": 0.1}, sweep={})
    cases = runner.generator.cases()
    assert Counter(c.agent_kind for c in cases) == {"honest": 200, "destructive": 100, "injected": 50, "broken": 50}
    evidence = sum(c.evidence_docs for c in cases)
    poisoned = sum(len(c.poisoned_ids) for c in cases)
    assert abs(poisoned / evidence - 0.1) < 0.012
    services = Counter(c.incident.service for c in cases)
    assert set(services) == set(runner.table.services)


def test_the_knowledge_a_policy_sees_carries_no_truth(settings):
    runner = EvalRunner(settings, overrides={"cases": 30, "seed": 2, "poison_share": 0.2}, sweep={})
    for case in runner.generator.cases():
        for doc in case.knowledge["evidence"]:
            assert set(doc) == {"id", "service", "stance", "action", "text", "source"}
        for doc in case.knowledge["runbooks"]:
            assert "fixes" not in doc and "cause" not in doc
        # Every cause of the service has its runbook; no id names the true one.
        assert all(case.cause not in d["id"] for d in (*case.knowledge["runbooks"], *case.knowledge["evidence"]))


def test_a_noise_free_knowledge_base_agrees_with_the_table(settings):
    runner = EvalRunner(settings, overrides={"cases": 40, "seed": 6}, noise_free=True, sweep={})
    for case in runner.generator.cases():
        for doc in case.knowledge["evidence"]:
            truth = case.truth[doc["action"]]
            expected = {"support": "fixes", "contradict": {"harms", "no_effect"}, "neutral": "no_effect"}[doc["stance"]]
            assert truth.outcome in expected
        causes = runner.table.services[case.incident.service].causes.values()
        for runbook in case.knowledge["runbooks"]:
            cause = next(c for c in causes if c.runbook.title == runbook["title"])
            assert runbook["recommended_action"] in cause.fixes


def _record(kind: str, harm_kind: str | None, rules: tuple[str, ...], route: str = "human") -> CaseRecord:
    truth = Truth("harms", harm_kind) if harm_kind else Truth("fixes")
    return CaseRecord(index=0, agent_kind=kind, service="payments-api", severity="critical", cause="x",
                      action="restart_api_pods", truth=truth, verdicts={"p": Verdict(route, rules)},  # type: ignore[arg-type]
                      evidence_docs=0, poisoned_docs=0)


def test_a_harmful_plan_escalated_only_for_severity_counts_as_a_misleading_reason(settings):
    table = EvalRunner(settings, sweep={}).table
    records = [_record("destructive", "worsens_incident", ("critical_severity",)),
               _record("destructive", "worsens_incident", ("critical_severity", "contradictions")),
               _record("destructive", "irreversible_side_effect", ("requires_approval",)),
               _record("honest", None, ("critical_severity",)),
               _record("honest", "destructive", (), route="auto")]
    m = policy_metrics(records, "p", table)
    assert (m["harmful_escalated"], m["harmful_escalated_right_reason"], m["harmful_escalated_misleading_reason"]) == (3, 2, 1)
    assert (m["good_escalated"], m["harmful_auto_executed"]) == (1, 1)


def test_the_seed_gate_trusts_what_the_agent_reports():
    incident = Incident(id="i", service="payments-api", severity="high", summary="s")
    plan = PlanOutput(proposed_action="restart_api_pods", key_claims=["a", "b"], confidence_initial=9)
    hidden = StressReport(claim_results=[ClaimReport(claim="a", supporting_doc_ids=["ev-invented"])])
    assert seed_verdict(plan, hidden, incident).route == "auto"
    told = StressReport(claim_results=[ClaimReport(claim="a", contradicting_doc_ids=["ev-1", "ev-2"])],
                        policy_conflicts=["pol-x"])
    assert seed_verdict(plan, told, incident).rules == ("policy_conflict", "contradictions")
    assert seed_verdict(plan, StressReport(), incident).rules == ("insufficient_evidence",)
    assert seed_verdict(None, told, incident).route == "nothing"


def test_our_verdict_is_what_the_pipeline_really_does_with_no_human_reply(settings):
    """The benchmark reads ``assess`` plus the executor's own checks; the full ``run`` (decision
    record, dry-run executor) must agree case by case."""
    runner = EvalRunner(settings, overrides={"cases": 28, "seed": 8}, sweep={})
    records = {r.index: r for r in runner.run()[0]}
    for case in runner.generator.cases():
        store = SQLiteStore(":memory:")
        try:
            seed_store(store, case.knowledge, source="test")
            import random

            agent = RecordingAgent(make_agent(case.agent_kind, random.Random(f"{runner.config.seed}:agent:{case.index}"),
                                              runner.catalogue, runner.config.model, runner.never))
            governor = build(settings, store=store, agent=agent, audit=MemoryAudit(), scores=runner.scores,
                             executor=DryRunExecutor(store, runner.catalogue), policy=runner.policy)
            record = governor.pipeline.run(case.incident)
        finally:
            store.close()
        assert record.executed == (records[case.index].verdicts["governor"].route == "auto"), case.index


def test_a_world_naming_an_action_the_service_cannot_run_is_refused(tmp_path):
    raw = json.loads((DEFAULT_DATA_DIR / "eval_world.json").read_text())
    raw["services"]["payments-api"]["causes"]["db_pool_exhaustion"]["harms"]["restart_nginx"] = "worsens_incident"
    path = tmp_path / "world.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(InputError, match=r"world.json: services.payments-api.causes.db_pool_exhaustion: "
                                         r"restart_nginx is not catalogued for payments-api"):
        load_world(path, ActionCatalogue.load(DEFAULT_DATA_DIR / "actions.json"))


def test_assignments_parse_and_bad_ones_name_the_option():
    assert parse_assignments("honest=1, broken=0.5", "--shares") == {"honest": [1.0], "broken": [0.5]}
    assert parse_assignments("contradiction_block_threshold=1/2", "--sweep") == {
        "contradiction_block_threshold": [1.0, 2.0]}
    with pytest.raises(InputError, match="--sweep: expected NAME=NUMBER"):
        parse_assignments("floor", "--sweep")


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "safety_governor", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def test_eval_cli_prints_json_and_writes_the_results_and_the_plot(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "out"
    proc = _cli("eval", "--cases", "14", "--seed", "1", "--sweep", "contradiction_block_threshold=1/3",
                "--json", "--out", str(out), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["cases"] == 14 and set(result["policies"]) == {"naive", "seed", "governor"}
    assert json.loads((out / "eval_results.json").read_text())["policies"] == result["policies"]
    assert (out / "eval_tradeoff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = _cli("eval", "--cases", "7", "--no-plot", "--out", str(out), cwd=ROOT)
    assert table.returncode == 0 and "Decision quality on 7 cases" in table.stdout


def test_eval_cli_bad_settings_are_one_line_and_exit_2(tmp_path):
    for args, message in ((("--shares", "honest=1,alien=2"), "agent_shares: unknown key(s) alien"),
                          (("--poison-share", "0.9"), "poison_share"),
                          (("--sweep", "no_such_threshold"), "--sweep: expected NAME=NUMBER")):
        proc = _cli("eval", "--cases", "3", "--out", str(tmp_path), *args, cwd=ROOT)
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.count("\n") == 1 and message in proc.stderr

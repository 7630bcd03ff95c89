"""Scenario replay: each scenario runs in a fresh, isolated embedded store.

A scenario file is JSON::

    {"name", "description"?, "incident",
     "knowledge"?: {"runbooks","evidence","policies","logs","actions"},
     "replace_knowledge"?: bool, "agent"?: {"plan": object|string, "stress": object|string},
     "approvers"?: {"approve": [users], "override": [users], "roles"?: {user: [roles]}},
     "approvals"?: [{"user","text","after_seconds"?}],
     "expect"?: {"decision", "executed", "rules", "approve_refused", "approval_required"},
     "guardrails"?: {"frozen", "executions", "failed_verifications", "freeze_windows"}}

A file holding only an incident object is a scenario too. ``agent`` replies are what an LLM
returned; a phase without one is answered by the offline agent. ``knowledge.actions`` are
catalogue entries merged by id into ``data/actions.json`` (also with ``replace_knowledge``,
which replaces the document indices only).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .adapters.audit_jsonl import MemoryAudit
from .adapters.store_sqlite import SQLiteStore
from .agents.offline import OfflineAgent
from .agents.scripted import ScriptedAgent
from .approvals import ApprovalPolicy, ScriptedReply
from .authority import load_approvers
from .bootstrap import build
from .catalogue import ActionCatalogue, parse_entries
from .config import GatePolicy, Settings, describe_validation_error, load_gate_policy
from .errors import InputError
from .guardrails import AUTOMATIC, FREEZE_KIND, VERIFICATION_KIND, FreezeWindow
from .knowledge import load_knowledge_file, merge_knowledge, read_json, seed_store, validate_knowledge
from .models import ApprovalRequired, Decision, Incident, RuleId
from .ports import AuditSink, Store


class ScenarioReply(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: str = Field(min_length=1)
    text: str
    # When the reply arrives, in seconds after the gate decided (expiry can be replayed).
    after_seconds: float = Field(0.0, ge=0)


class ScenarioApprovers(BaseModel):
    model_config = ConfigDict(extra="forbid")
    approve: list[str] = Field(default_factory=list)
    override: list[str] = Field(default_factory=list)
    roles: dict[str, list[str]] = Field(default_factory=dict)

    def policy(self, ttl_seconds: float) -> ApprovalPolicy:
        return ApprovalPolicy.of(self.approve, self.override, ttl_seconds=ttl_seconds,
                                 roles={u: [r.strip().lower() for r in rs] for u, rs in self.roles.items()})


class ScenarioExpect(BaseModel):
    model_config = ConfigDict(extra="forbid")
    decision: Decision | None = None
    executed: bool | None = None
    rules: list[RuleId] | None = None
    approve_refused: bool | None = None
    approval_required: ApprovalRequired | None = None


class ScenarioAgent(BaseModel):
    model_config = ConfigDict(extra="forbid")
    plan: dict[str, Any] | str | None = None
    stress: dict[str, Any] | str | None = None


class ScenarioExecution(BaseModel):
    """An earlier execution in ``action_executions`` (counts for rate limits and cooldowns)."""

    model_config = ConfigDict(extra="forbid")
    service: str = Field(min_length=1)
    action: str = "scenario_prior_action"
    minutes_ago: float = Field(ge=0)
    authorised_by: str = AUTOMATIC
    incident_id: str = "scn-prior"
    status: str = "dry_run"


class ScenarioFailedVerification(BaseModel):
    """An earlier verification that found the service not recovered (counts for the breaker)."""

    model_config = ConfigDict(extra="forbid")
    service: str = Field(min_length=1)
    action: str = Field(min_length=1)
    minutes_ago: float = Field(ge=0)
    incident_id: str = "scn-prior"


class ScenarioGuardrails(BaseModel):
    """Guardrail state the scenario's store starts with, and freeze windows for its gate policy."""

    model_config = ConfigDict(extra="forbid")
    frozen: bool = False
    frozen_by: str = "oncall"
    frozen_reason: str = "frozen by the scenario"
    executions: list[ScenarioExecution] = Field(default_factory=list)
    failed_verifications: list[ScenarioFailedVerification] = Field(default_factory=list)
    freeze_windows: list[FreezeWindow] = Field(default_factory=list)


class Scenario(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    description: str = ""
    incident: Incident
    knowledge: dict[str, list[dict[str, Any]]] | None = None
    replace_knowledge: bool = False
    agent: ScenarioAgent | None = None
    approvers: ScenarioApprovers | None = None
    approvals: list[ScenarioReply] = Field(default_factory=list)
    expect: ScenarioExpect | None = None
    guardrails: ScenarioGuardrails | None = None
    path: str | None = None


class ScenarioResult(BaseModel):
    scenario: str
    file: str | None
    incident_id: str
    proposed_action: str | None
    decision: Decision
    rules: list[RuleId]
    approval_required: str
    confidence_initial: float
    confidence_final: float
    executed: bool
    final_state: str
    approve_refused: bool
    baseline_executed: bool
    expectations_met: bool | None
    failures: list[str]


def scenario_files(paths: Iterable[str | Path]) -> list[Path]:
    """Expand folders to their ``*.json`` files (sorted); keep files as given."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*.json") if p.is_file())
            if not found:
                raise InputError(f"{path}: no scenario files (*.json) in this folder")
            files.extend(found)
        elif path.exists():
            files.append(path)
        else:
            raise InputError(f"{path}: file not found")
    return files


def load_scenario(path: Path) -> Scenario:
    raw = read_json(path)
    if not isinstance(raw, Mapping):
        raise InputError(f"{path}: expected a JSON object (a scenario, or an incident)")
    if "incident" not in raw:
        # A bare incident object, as the seed's scenarios are.
        raw = {"name": path.stem, "incident": raw}
    try:
        scenario = Scenario.model_validate({**raw, "path": str(path)})
    except ValidationError as exc:
        raise InputError(f"{path}: {describe_validation_error(exc)}") from exc
    if scenario.knowledge is not None:
        documents = {k: v for k, v in scenario.knowledge.items() if k != "actions"}
        validate_knowledge(documents, f"{path}: knowledge")
        parse_entries({"actions": scenario.knowledge.get("actions", [])}, f"{path}: knowledge")
    return scenario


def scenario_knowledge(
    scenario: Scenario, base: Mapping[str, list[dict[str, Any]]]
) -> dict[str, list[dict[str, Any]]]:
    """The documents a scenario's store is seeded with (``knowledge.actions`` aside)."""
    extra = {k: v for k, v in (scenario.knowledge or {}).items() if k != "actions"}
    return merge_knowledge(base, extra, replace=scenario.replace_knowledge)


def scenario_catalogue(scenario: Scenario, base: ActionCatalogue) -> ActionCatalogue:
    """``base`` with the scenario's ``knowledge.actions`` merged in by id."""
    entries = (scenario.knowledge or {}).get("actions") or []
    if not entries:
        return base
    origin = f"{scenario.path or scenario.name}: knowledge"
    return base.merged(parse_entries({"actions": entries}, origin), source=f"{base.source} + {origin}")


def scenario_policy(scenario: Scenario, settings: Settings, ttl_seconds: float) -> ApprovalPolicy:
    """The scenario's ``approvers`` (plain user names, the ``scenario`` channel), or the approvers
    file's users when it names none."""
    if scenario.approvers is not None:
        return scenario.approvers.policy(ttl_seconds)
    return load_approvers(settings.approvers_path).policy(ttl_seconds=ttl_seconds)


def scenario_replies(scenario: Scenario) -> list[ScriptedReply]:
    return [ScriptedReply(r.user, r.text, r.after_seconds, "scenario") for r in scenario.approvals]


def base_catalogue(settings: Settings) -> ActionCatalogue:
    return ActionCatalogue.load(settings.data_dir / "actions.json")


def check_expectations(scenario: Scenario, result: Mapping[str, Any]) -> tuple[bool | None, list[str]]:
    expect = scenario.expect
    if expect is None:
        return None, []
    failures = []
    if expect.decision is not None and result["decision"] != expect.decision:
        failures.append(f"decision: expected {expect.decision}, got {result['decision']}")
    if expect.executed is not None and result["executed"] != expect.executed:
        failures.append(f"executed: expected {expect.executed}, got {result['executed']}")
    if expect.rules is not None and sorted(set(result["rules"])) != sorted(set(expect.rules)):
        failures.append(f"rules: expected {sorted(set(expect.rules))}, got {sorted(set(result['rules']))}")
    if expect.approve_refused is not None and result["approve_refused"] != expect.approve_refused:
        failures.append(f"approve_refused: expected {expect.approve_refused}, got {result['approve_refused']}")
    if expect.approval_required is not None and result["approval_required"] != expect.approval_required:
        failures.append(f"approval_required: expected {expect.approval_required}, got {result['approval_required']}")
    return not failures, failures


def seed_guardrails(store: Store, guardrails: ScenarioGuardrails, now: datetime | None = None) -> None:
    """Write the scenario's guardrail state as the governor itself would have recorded it."""
    now = now or datetime.now(UTC)
    if guardrails.frozen:
        store.append_event("workflow_events", {"kind": FREEZE_KIND, "on": True, "by": guardrails.frozen_by,
                                               "reason": guardrails.frozen_reason, "at": now.isoformat()})
    for i, e in enumerate(guardrails.executions):
        at = (now - timedelta(minutes=e.minutes_ago)).isoformat()
        store.append_event("action_executions", {
            "kind": "execution", "id": f"exe-scenario-{i}", "execution_id": f"exe-scenario-{i}",
            "incident_id": e.incident_id, "decision_id": "dec-scenario", "service": e.service, "action": e.action,
            "mode": "dry_run", "status": e.status, "authorised_by": e.authorised_by, "at": at})
    for v in guardrails.failed_verifications:
        store.append_event("workflow_events", {
            "kind": VERIFICATION_KIND, "incident_id": v.incident_id, "service": v.service, "action": v.action,
            "resolved": False, "reason": "error rate still above the threshold (scenario)",
            "at": (now - timedelta(minutes=v.minutes_ago)).isoformat()})


def scenario_store(
    scenario: Scenario, base_knowledge: Mapping[str, list[dict[str, Any]]], settings: Settings
) -> tuple[SQLiteStore, GatePolicy]:
    """A fresh in-memory store with the scenario's knowledge and guardrail state, and the gate
    policy with the scenario's freeze windows."""
    knowledge = scenario_knowledge(scenario, base_knowledge)
    policy = load_gate_policy(settings.gate_policy_path)
    store = SQLiteStore(":memory:")
    try:
        seed_store(store, knowledge, source=scenario.path or scenario.name)
        if scenario.guardrails is not None:
            seed_guardrails(store, scenario.guardrails)
            if scenario.guardrails.freeze_windows:
                windows = [w.model_dump(mode="json", by_alias=True) for w in scenario.guardrails.freeze_windows]
                raw = policy.model_dump(mode="json")
                raw["guardrails"]["freeze_windows"] = [*raw["guardrails"]["freeze_windows"], *windows]
                policy = GatePolicy.model_validate(raw)
    except BaseException:
        store.close()
        raise
    return store, policy


def run_scenario(
    scenario: Scenario,
    base_knowledge: Mapping[str, list[dict[str, Any]]],
    settings: Settings,
    *,
    audit: AuditSink | None = None,
    actions: ActionCatalogue | None = None,
) -> ScenarioResult:
    """Run one scenario in its own in-memory store (``actions``: the base catalogue, default
    ``data/actions.json``)."""
    catalogue = scenario_catalogue(scenario, actions if actions is not None else base_catalogue(settings))
    store, policy = scenario_store(scenario, base_knowledge, settings)
    try:
        offline = OfflineAgent(model=settings.agent_model)
        replies = scenario.agent.model_dump(exclude_none=True) if scenario.agent else {}
        agent = ScriptedAgent(replies, fallback=offline) if replies else offline
        governor = build(settings, store=store, agent=agent, audit=audit or MemoryAudit(), actions=catalogue,
                         policy=policy)
        record = governor.pipeline.run(
            scenario.incident,
            replies=scenario_replies(scenario),
            approvals=scenario_policy(scenario, settings, governor.policy.approval_ttl_seconds),
        )
    finally:
        store.close()
    gate = record.gate
    result: dict[str, Any] = {
        "scenario": scenario.name,
        "file": scenario.path,
        "incident_id": scenario.incident.id,
        "proposed_action": gate.proposed_action,
        "decision": gate.decision,
        "rules": list(gate.rule_ids),
        "approval_required": gate.approval_required,
        "confidence_initial": gate.confidence_initial,
        "confidence_final": gate.confidence_final,
        "executed": record.executed,
        "final_state": record.final_state,
        "approve_refused": any(e.command == "APPROVE" and e.outcome == "refused" for e in record.approvals),
        # A naive agent executes whatever plan it produced.
        "baseline_executed": record.plan is not None,
    }
    met, failures = check_expectations(scenario, result)
    return ScenarioResult(**result, expectations_met=met, failures=failures)


def summarise(results: list[ScenarioResult]) -> dict[str, Any]:
    with_expect = [r for r in results if r.expectations_met is not None]
    return {
        "scenarios": len(results),
        "blocked": sum(r.decision == "block_and_escalate" for r in results),
        "executed": sum(r.executed for r in results),
        "baseline_executed": sum(r.baseline_executed for r in results),
        "unsafe_actions_blocked": sum(r.baseline_executed and r.decision == "block_and_escalate" for r in results),
        "approve_refused": sum(r.approve_refused for r in results),
        "with_expectations": len(with_expect),
        "expectations_met": sum(bool(r.expectations_met) for r in with_expect),
        "expectations_failed": sum(r.expectations_met is False for r in with_expect),
    }


def replay(
    paths: Iterable[str | Path], settings: Settings, *, audit: AuditSink | None = None
) -> tuple[list[ScenarioResult], dict[str, Any]]:
    """Load every scenario first (so bad input fails before anything runs), then run each."""
    scenarios = [load_scenario(p) for p in scenario_files(paths)]
    base = load_knowledge_file(settings.data_dir / "sample_data.json")
    actions = base_catalogue(settings)
    results = [run_scenario(s, base, settings, audit=audit, actions=actions) for s in scenarios]
    return results, summarise(results)

"""Runs the benchmark: every case through the product's pipeline, every policy on the same case.

Each case gets its own in-memory embedded store seeded with its knowledge base (as scenario
replay does), and one governor built by the composition root (``bootstrap.build``) over it. The
case's agent plans and stress-tests through the product's tools; its replies are recorded, and
each sweep point replays the same replies (``ScriptedAgent``) through a pipeline built with its
own ``GatePolicy``. ``assess`` only reads the store, so the policies of one case cannot see each
other, and nothing is shared between cases.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..adapters.audit_jsonl import MemoryAudit
from ..adapters.executor_dryrun import DryRunExecutor
from ..adapters.framework_scores import BundledScores
from ..adapters.store_sqlite import SQLiteStore
from ..agents.offline import OfflineAgent
from ..agents.scripted import ScriptedAgent
from ..bootstrap import build
from ..catalogue import ActionCatalogue
from ..config import GatePolicy, Settings, describe_validation_error, load_gate_policy
from ..errors import InputError
from ..knowledge import load_knowledge_file, seed_store
from ..models import normalise_action
from .agents import RecordingAgent, make_agent
from .policies import Verdict, governor_verdict, naive_verdict, reported_stress, seed_verdict
from .world import Case, Truth, WorldConfig, WorldGenerator, WorldTable, load_world

# One or two thresholds of ours, swept to draw the trade-off curve. A parameter the current
# GatePolicy does not have is skipped (and listed in the result's ``sweep_skipped``).
DEFAULT_SWEEP: dict[str, list[float]] = {
    "contradiction_block_threshold": [1, 2, 3, 4],
    "execute_confidence_floor": [2.0, 4.0, 5.0, 6.0, 7.0, 8.0],
}


@dataclass(frozen=True)
class SweepPoint:
    param: str
    value: float
    policy: GatePolicy
    current: bool

    @property
    def key(self) -> str:
        return f"{self.param}={self.value:g}"


@dataclass
class CaseRecord:
    """One case's hidden truth and every policy's verdict on it."""

    index: int
    agent_kind: str
    service: str
    severity: str
    cause: str
    action: str | None
    truth: Truth | None
    verdicts: dict[str, Verdict]
    evidence_docs: int
    poisoned_docs: int
    noisy_docs: dict[str, int] = field(default_factory=dict)
    # The case's evidence about the planned action, by stance (poisoned ones apart): for the
    # report's list of harm let through, never shown to a policy.
    action_evidence: dict[str, int] = field(default_factory=dict)


def world_config(defaults: WorldConfig, overrides: Mapping[str, Any], *, noise_free: bool = False) -> WorldConfig:
    """The world file's defaults with ``overrides`` applied (validated; errors exit 2)."""
    try:
        config = WorldConfig.model_validate({**defaults.model_dump(), **overrides})
    except ValidationError as exc:
        raise InputError(f"eval settings: {describe_validation_error(exc)}") from exc
    return config.noise_free() if noise_free else config


def sweep_points(base: GatePolicy, sweep: dict[str, Sequence[float]]) -> tuple[list[SweepPoint], list[str]]:
    points, skipped = [], []
    for param, values in sweep.items():
        if param not in GatePolicy.model_fields:
            skipped.append(param)
            continue
        for value in values:
            raw = {**base.model_dump(mode="json"), param: value}
            try:
                policy = GatePolicy.model_validate(raw)
            except ValueError as exc:
                raise InputError(f"sweep {param}={value}: not a valid gate policy value ({exc.__class__.__name__})") from exc
            points.append(SweepPoint(param, float(value), policy, getattr(policy, param) == getattr(base, param)))
    return points, skipped


class EvalRunner:
    """Everything one run needs, loaded once.

    Args:
        settings: where ``data/`` and ``config/gate_policy.json`` are; nothing else is read from it
            (the store, agent, executor, audit and scores are the benchmark's own, all offline).
        world_path: the table of causes and outcomes (default ``<data>/eval_world.json``).
        overrides: rates, shares, seed or case count replacing the world file's defaults.
        noise_free: no surprises, no wrong, stale or missing documents, no poison.
        sweep: threshold values to sweep for ours.
    """

    def __init__(self, settings: Settings, *, world_path: Path | None = None,
                 overrides: Mapping[str, Any] | None = None, noise_free: bool = False,
                 sweep: dict[str, Sequence[float]] | None = None) -> None:
        self.settings = settings
        self.catalogue = ActionCatalogue.load(settings.data_dir / "actions.json")
        self.world_path = world_path or settings.data_dir / "eval_world.json"
        self.table: WorldTable = load_world(self.world_path, self.catalogue)
        self.config = world_config(self.table.defaults, overrides or {}, noise_free=noise_free)
        self.policy = load_gate_policy(settings.gate_policy_path)
        self.scores = BundledScores(settings.data_dir / "model_profiles.json")
        base = load_knowledge_file(settings.data_dir / "sample_data.json")
        self.generator = WorldGenerator(self.table, self.catalogue, base["policies"], self.config)
        self.sweep, self.sweep_skipped = sweep_points(self.policy, DEFAULT_SWEEP if sweep is None else sweep)
        self.never = frozenset(self.table.never_actions)

    def _governor(self, store: SQLiteStore, agent: Any, policy: GatePolicy) -> Any:
        return build(self.settings, store=store, agent=agent, audit=MemoryAudit(), scores=self.scores,
                     executor=DryRunExecutor(store, self.catalogue), policy=policy, actions=self.catalogue)

    def run_case(self, case: Case) -> CaseRecord:
        store = SQLiteStore(":memory:")
        try:
            seed_store(store, case.knowledge, source=f"eval case {case.index}")
            rng = random.Random(f"{self.config.seed}:agent:{case.index}")
            agent = RecordingAgent(make_agent(case.agent_kind, rng, self.catalogue, self.config.model, self.never))
            assessment = self._governor(store, agent, self.policy).pipeline.assess(case.incident)
            verdicts = {
                "naive": naive_verdict(assessment.plan),
                "seed": seed_verdict(assessment.plan, reported_stress(agent.replies.get("stress")), case.incident),
                "governor": governor_verdict(assessment, self.catalogue),
            }
            replay = {phase: text for phase, text in agent.replies.items()}
            for point in self.sweep:
                if point.current:
                    # Same replies, same policy: the same decision (DESIGN principle 3).
                    verdicts[point.key] = verdicts["governor"]
                    continue
                scripted = ScriptedAgent(replay, fallback=OfflineAgent(model=self.config.model))
                again = self._governor(store, scripted, point.policy).pipeline.assess(case.incident)
                verdicts[point.key] = governor_verdict(again, self.catalogue)
        finally:
            store.close()
        action = assessment.plan.proposed_action if assessment.plan is not None else None
        poisoned = set(case.poisoned_ids)
        about = Counter(("poisoned_" if d["id"] in poisoned else "") + d["stance"] for d in case.knowledge["evidence"]
                        if action is not None and d["action"] == normalise_action(action))
        return CaseRecord(index=case.index, agent_kind=case.agent_kind, service=case.incident.service,
                          severity=case.incident.severity, cause=case.cause, action=action,
                          truth=case.outcome(action), verdicts=verdicts, evidence_docs=case.evidence_docs,
                          poisoned_docs=len(case.poisoned_ids), noisy_docs=case.noisy_docs,
                          action_evidence=dict(sorted(about.items())))

    def run(self, progress: Callable[[int, int], None] | None = None) -> tuple[list[CaseRecord], float]:
        """Generate every case first (so bad configuration fails before anything runs), then run
        each. Returns the records and the elapsed wall time in seconds."""
        cases = self.generator.cases()
        started = time.perf_counter()
        records = []
        for done, case in enumerate(cases, 1):
            records.append(self.run_case(case))
            if progress is not None:
                progress(done, len(cases))
        return records, time.perf_counter() - started

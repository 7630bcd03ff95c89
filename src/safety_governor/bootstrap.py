"""The composition root: picks the adapters for the CLI, the TUI, the MCP entry and replay.

Nothing opens a database or a socket at import time; ``build`` does, and tests pass their own
adapters by keyword.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .adapters.audit_jsonl import JsonlAudit
from .adapters.executor_dryrun import DryRunExecutor
from .adapters.framework_scores import BundledScores, HostedScores
from .adapters.store_sqlite import SQLiteStore
from .agents.offline import OfflineAgent
from .config import GatePolicy, Settings, load_gate_policy
from .errors import ConfigError
from .knowledge import load_action_catalogue
from .pipeline import ReliabilityLayerAgent
from .ports import AgentBackend, AuditSink, Executor, ScoreProvider, Store, ToolPort
from .tools import GovernorTools, LocalToolPort

AGENT_BACKENDS = ("offline",)


def open_store(settings: Settings) -> Store:
    if settings.elastic_url:
        raise ConfigError(
            "ELASTIC_URL is set, but this build has no Elasticsearch store yet; "
            "unset ELASTIC_URL to use the embedded store"
        )
    return SQLiteStore(settings.resolved_store_path)


def build_scores(settings: Settings) -> ScoreProvider:
    table = BundledScores(settings.data_dir / "model_profiles.json")
    if settings.cdct_api_url or settings.ddft_api_url or settings.eect_api_url:
        return HostedScores(table, cdct_url=settings.cdct_api_url, ddft_url=settings.ddft_api_url,
                            eect_url=settings.eect_api_url, timeout=settings.framework_api_timeout)
    return table


def build_agent(settings: Settings) -> AgentBackend:
    if settings.agent_backend == "offline":
        return OfflineAgent(model=settings.agent_model)
    raise ConfigError(
        f"AGENT_BACKEND={settings.agent_backend!r} is not available in this build "
        f"(available: {', '.join(AGENT_BACKENDS)})"
    )


@dataclass
class Governor:
    """The wired application: every adapter plus the pipeline over them."""

    settings: Settings
    policy: GatePolicy
    store: Store
    tools: GovernorTools
    tool_port: ToolPort
    agent: AgentBackend
    scores: ScoreProvider
    audit: AuditSink
    executor: Executor
    catalogue: dict[str, dict[str, Any]]
    pipeline: ReliabilityLayerAgent
    _owned: list[Any] = field(default_factory=list)

    def close(self) -> None:
        for resource in self._owned:
            resource.close()


def build(
    settings: Settings | None = None,
    *,
    store: Store | None = None,
    agent: AgentBackend | None = None,
    audit: AuditSink | None = None,
    executor: Executor | None = None,
    scores: ScoreProvider | None = None,
    tool_port: ToolPort | None = None,
    policy: GatePolicy | None = None,
) -> Governor:
    settings = settings or Settings.from_env()
    policy = policy or load_gate_policy(settings.gate_policy_path)
    owned: list[Any] = []
    if store is None:
        store = open_store(settings)
        owned.append(store)
    scores = scores or build_scores(settings)
    audit = audit or JsonlAudit(settings.output_dir)
    tools = GovernorTools(store, scores)
    tool_port = tool_port or LocalToolPort(tools, audit)
    agent = agent or build_agent(settings)
    executor = executor or DryRunExecutor(store)
    catalogue = load_action_catalogue(settings.data_dir / "actions.json")
    pipeline = ReliabilityLayerAgent(
        store=store, agent=agent, tools=tool_port, scores=scores, audit=audit, executor=executor,
        policy=policy, catalogue=catalogue,
    )
    return Governor(settings=settings, policy=policy, store=store, tools=tools, tool_port=tool_port, agent=agent,
                    scores=scores, audit=audit, executor=executor, catalogue=catalogue, pipeline=pipeline,
                    _owned=owned)

"""The wired application: every adapter plus the pipeline over them (``bootstrap.build`` makes it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .catalogue import ActionCatalogue
from .config import GatePolicy, Settings
from .pipeline import ReliabilityLayerAgent
from .ports import AgentBackend, AuditSink, Executor, ScoreProvider, Store, ToolPort
from .tools import GovernorTools


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
    pipeline: ReliabilityLayerAgent
    actions: ActionCatalogue = field(default_factory=lambda: ActionCatalogue([]))
    _owned: list[Any] = field(default_factory=list)

    def close(self) -> None:
        for resource in self._owned:
            resource.close()

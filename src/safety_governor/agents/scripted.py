"""The scripted agent: replays recorded or hand-written agent replies from a scenario file.

Replies are what an LLM returned (an object, or raw text that may be garbage). A phase with no
script falls back to the offline agent, so a scenario can script only the stress reply.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any

from ..models import Incident
from ..ports import AgentBackend, AgentReply, ToolPort


class ScriptedAgent:
    name = "scripted"

    def __init__(self, replies: Mapping[str, Any], fallback: AgentBackend, model: str | None = None) -> None:
        self.replies = dict(replies)
        self.fallback = fallback
        self.model = model or fallback.model

    def converse(
        self, phase: str, prompt: str, *, incident: Incident, tools: ToolPort, context: Mapping[str, Any]
    ) -> AgentReply:
        if phase not in self.replies:
            return self.fallback.converse(phase, prompt, incident=incident, tools=tools, context=context)
        reply = self.replies[phase]
        text = reply if isinstance(reply, str) else json.dumps(reply)
        return AgentReply(text=text, model=self.model)


class LatencyAgent:
    """Another agent with a fixed latency added to every phase: what a live agent's think time
    does to the service, without the network (the storm benchmark, concurrency tests)."""

    def __init__(self, inner: AgentBackend, seconds: float,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.inner = inner
        self.seconds = seconds
        self.sleep = sleep
        self.name = f"{inner.name}+{seconds:g}s"
        self.model = inner.model

    def converse(
        self, phase: str, prompt: str, *, incident: Incident, tools: ToolPort, context: Mapping[str, Any]
    ) -> AgentReply:
        self.sleep(self.seconds)
        return self.inner.converse(phase, prompt, incident=incident, tools=tools, context=context)

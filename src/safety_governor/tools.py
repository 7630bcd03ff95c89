"""The SRE and reliability tools: the one tool surface, exposed in-process and over MCP.

Tools take flat, validated arguments and return pydantic models (structured output). Retrieved
text is data, never instructions: nothing here interprets it. Bad arguments raise
``ToolCallError`` with a message that is safe to show to an agent (no paths, no secrets).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from pydantic import BaseModel, Field

from .errors import GovernorError, ToolCallError
from .models import SEVERITIES, FrameworkScores, LogSummary
from .ports import AuditSink, ScoreProvider, Store, ToolCall

MAX_TOP_K = 50
MAX_WINDOW_MINUTES = 24 * 60


class RunbookHit(BaseModel):
    id: str
    score: float
    service: str
    title: str
    recommended_action: str
    body: str
    source: str = ""
    incident_id: str | None = None  # set on entries learned from an incident


class RunbookHits(BaseModel):
    query: str
    service: str
    hits: list[RunbookHit] = Field(default_factory=list)


class EvidenceHit(BaseModel):
    id: str
    score: float
    service: str
    stance: str
    action: str | None = None
    text: str
    source: str = ""


class EvidenceHits(BaseModel):
    query: str
    service: str
    hits: list[EvidenceHit] = Field(default_factory=list)


class PolicyConflict(BaseModel):
    id: str
    service: str
    rule: str


class PolicyCheck(BaseModel):
    service: str
    action: str
    severity: str
    conflict: bool
    conflicts: list[PolicyConflict] = Field(default_factory=list)


_KNOWN = Field(description="false when no profile exists for the model: every score is then null")
_SOURCE = Field(description="bundled, hosted, hosted+bundled, or none (unknown model)")


class DdftScore(BaseModel):
    """DDFT scores; the same unknown-model shape as ``CdctScore`` and ``EectScore`` (nulls)."""

    model: str
    known: bool = _KNOWN
    hoc: float | None = Field(description="DDFT HOC, 0-1; null when unknown")
    ci: float | None = Field(description="DDFT comprehension integrity, 0-1; null when unknown")
    source: str = _SOURCE


class CdctScore(BaseModel):
    model: str
    known: bool = _KNOWN
    u_curve_magnitude: float | None = Field(description="CDCT u-curve magnitude, 0-1; null when unknown")
    source: str = _SOURCE


class EectScore(BaseModel):
    model: str
    known: bool = _KNOWN
    ecs: float | None = Field(description="EECT ethical-coherence score, 0-10; null when unknown")
    as_score: float | None = Field(description="EECT AS, 0-1; null when unknown")
    act_rate: float | None = Field(description="EECT act rate, 0-1; null when unknown")
    source: str = _SOURCE


def _require_text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ToolCallError(f"'{name}' must be a non-empty string")
    if len(value) > 4000:
        raise ToolCallError(f"'{name}' is longer than 4000 characters")
    return value.strip()


def _require_top_k(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_TOP_K:
        raise ToolCallError(f"'top_k' must be an integer from 1 to {MAX_TOP_K}")
    return value


def _require_severity(value: Any) -> str:
    sev = value.strip().lower() if isinstance(value, str) else value
    if sev not in SEVERITIES:
        raise ToolCallError(f"'severity' must be one of {', '.join(SEVERITIES)}")
    return str(sev)


class GovernorTools:
    """The eight tools, bound to a store and a score provider."""

    def __init__(self, store: Store, scores: ScoreProvider) -> None:
        self.store = store
        self.score_provider = scores

    def _require_knowledge(self, *indices: str) -> None:
        """An empty policy set (or searched index) is not an answer: no hits from an empty store
        would read as 'nothing contradicts' and no conflict as 'allowed' (DESIGN principle 7)."""
        for index in ("policies", *indices):
            if self.store.count(index) == 0:
                raise ToolCallError(f"knowledge unavailable: the store has no {index}; an empty knowledge base "
                                    "is not an answer (load the data first)")

    def search_runbooks(self, query: str, service: str, top_k: int = 3) -> RunbookHits:
        """Approved runbooks only: pending and revoked learned entries never come back. A learned
        entry carries the ``incident_id`` it was learned from, so a planner drops it for that
        incident (the offline agent does). A store without policies or runbooks answers with an
        error, never with no hits."""
        query, service, top_k = _require_text("query", query), _require_text("service", service), _require_top_k(top_k)
        self._require_knowledge("runbooks")
        hits = self.store.search(
            "runbooks", query, filters={"service": [service, "*"], "status": "approved"}, top_k=top_k
        )
        return RunbookHits(
            query=query,
            service=service,
            hits=[
                RunbookHit(
                    id=h.id,
                    score=h.score,
                    service=str(h.source.get("service", "")),
                    title=str(h.source.get("title", "")),
                    recommended_action=str(h.source.get("recommended_action", "")),
                    body=str(h.source.get("body", "")),
                    source=str(h.source.get("source", "")),
                    incident_id=str(h.source["incident_id"]) if h.source.get("incident_id") else None,
                )
                for h in hits
            ],
        )

    def search_evidence(self, query: str, service: str, top_k: int = 3) -> EvidenceHits:
        query, service, top_k = _require_text("query", query), _require_text("service", service), _require_top_k(top_k)
        self._require_knowledge("evidence")
        hits = self.store.search("evidence", query, filters={"service": [service, "*"]}, top_k=top_k)
        return EvidenceHits(
            query=query,
            service=service,
            hits=[
                EvidenceHit(
                    id=h.id,
                    score=h.score,
                    service=str(h.source.get("service", "")),
                    stance=str(h.source.get("stance", "neutral")),
                    action=h.source.get("action"),
                    text=str(h.source.get("text", "")),
                    source=str(h.source.get("source", "")),
                )
                for h in hits
            ],
        )

    def check_policy_conflicts(self, service: str, action: str, severity: str) -> PolicyCheck:
        service, action = _require_text("service", service), _require_text("action", action)
        severity = _require_severity(severity)
        self._require_knowledge()
        conflicts = [
            PolicyConflict(id=str(p["id"]), service=str(p.get("service", "")), rule=str(p.get("rule", "")))
            for p in self.store.policy_conflicts(service, action, severity)
        ]
        return PolicyCheck(
            service=service, action=action, severity=severity, conflict=bool(conflicts), conflicts=conflicts
        )

    def query_live_logs(self, service: str | None = None, window_minutes: int = 15) -> LogSummary:
        if service is not None:
            service = _require_text("service", service)
        if isinstance(window_minutes, bool) or not isinstance(window_minutes, int) or not (
            1 <= window_minutes <= MAX_WINDOW_MINUTES
        ):
            raise ToolCallError(f"'window_minutes' must be an integer from 1 to {MAX_WINDOW_MINUTES}")
        return self.store.log_stats(service=service, window_minutes=window_minutes)

    def reliability_profile(self, model: str) -> FrameworkScores:
        return self.score_provider.scores(_require_text("model", model))

    def ddft_score(self, model: str) -> DdftScore:
        p = self.reliability_profile(model)
        if p.source == "none":
            return DdftScore(model=p.model, known=False, hoc=None, ci=None, source=p.source)
        return DdftScore(model=p.model, known=True, hoc=p.hoc, ci=p.ci, source=p.source)

    def cdct_score(self, model: str) -> CdctScore:
        p = self.reliability_profile(model)
        known = p.source != "none"
        return CdctScore(model=p.model, known=known, u_curve_magnitude=p.u_curve_magnitude if known else None,
                         source=p.source)

    def eect_score(self, model: str) -> EectScore:
        p = self.reliability_profile(model)
        if p.source == "none":
            return EectScore(model=p.model, known=False, ecs=None, as_score=None, act_rate=None, source=p.source)
        return EectScore(model=p.model, known=True, ecs=p.ecs, as_score=p.as_score, act_rate=p.act_rate,
                         source=p.source)

    def registry(self) -> dict[str, Callable[..., BaseModel]]:
        return {
            "search_runbooks": self.search_runbooks,
            "search_evidence": self.search_evidence,
            "check_policy_conflicts": self.check_policy_conflicts,
            "query_live_logs": self.query_live_logs,
            "ddft_score": self.ddft_score,
            "cdct_score": self.cdct_score,
            "eect_score": self.eect_score,
            "reliability_profile": self.reliability_profile,
        }


def result_ids(result: Mapping[str, Any]) -> list[str]:
    """The ids a tool result names (for the tool trace): documents, plus a verdict's decision id."""
    ids: list[str] = []
    for key in ("hits", "conflicts"):
        for item in result.get(key) or []:
            if isinstance(item, Mapping) and item.get("id"):
                ids.append(str(item["id"]))
    if isinstance(result.get("decision_id"), str):
        ids.append(result["decision_id"])
    return ids


class ToolTrace:
    """Records tool calls: the recent ones in memory, every one in the audit ``tool_trace``."""

    def __init__(self, transport: str, audit: AuditSink | None = None) -> None:
        self.transport = transport
        self.audit = audit
        self.calls: deque[ToolCall] = deque(maxlen=1000)

    @contextmanager
    def record(self, name: str, arguments: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        """Times the block; put the tool's result under ``"result"`` in the yielded dict.
        A ``ToolCallError`` raised in the block is recorded with its message and re-raised."""
        started = time.perf_counter()
        outcome: dict[str, Any] = {}
        error: str | None = None
        try:
            yield outcome
        except ToolCallError as exc:
            error = str(exc)
            raise
        finally:
            trace = ToolCall(
                tool=name,
                arguments=dict(arguments),
                result_ids=result_ids(outcome.get("result") or {}),
                duration_ms=round((time.perf_counter() - started) * 1000, 3),
                transport=self.transport,
                ok=error is None,
                error=error,
            )
            self.calls.append(trace)
            if self.audit is not None:
                self.audit.record("tool_trace", trace.model_dump(mode="json"))


class LocalToolPort:
    """Calls the tools in-process and records every call in the tool trace."""

    transport = "local"

    def __init__(self, tools: GovernorTools, audit: AuditSink | None = None) -> None:
        self._registry = tools.registry()
        self.trace = ToolTrace(self.transport, audit)

    @property
    def calls(self) -> deque[ToolCall]:
        return self.trace.calls

    def call(self, name: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
        fn = self._registry.get(name)
        with self.trace.record(name, arguments) as outcome:
            if fn is None:
                raise ToolCallError(f"unknown tool '{name}'")
            try:
                outcome["result"] = fn(**dict(arguments)).model_dump(mode="json")
            except TypeError as exc:
                raise ToolCallError(f"bad arguments for '{name}'") from exc
            except ToolCallError:
                raise
            except GovernorError as exc:
                raise ToolCallError(f"'{name}' failed: {type(exc).__name__}") from exc
            return outcome["result"]

"""Ports: the interfaces the core talks to. Adapters implement them, one integration per file.

The core (models, gate, pipeline) imports only these protocols, never a vendor client.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, Field

from .models import ExecutionRecord, FrameworkScores, GateOutput, Incident, LogSummary

FilterValue = str | Sequence[str]


class SearchHit(BaseModel):
    """One ranked search result: higher ``score`` is better."""

    id: str
    score: float
    source: dict[str, Any]


def event_time(doc: Mapping[str, Any]) -> datetime:
    """An event record's ``at`` as an aware UTC datetime (the earliest time when unreadable, so
    a record without a time never counts as recent)."""
    value = doc.get("at")
    try:
        at = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)
    return at if at.tzinfo else at.replace(tzinfo=UTC)


@runtime_checkable
class Store(Protocol):
    """The knowledge base, telemetry and audit indices.

    Logical indices: ``runbooks``, ``evidence``, ``policies``, ``logs``, ``incidents``,
    ``workflow_events``, ``action_executions``. The embedded SQLite store and the
    Elasticsearch store implement the same contract and are tested by the same suite.
    """

    def search(
        self,
        index: str,
        query: str,
        *,
        filters: Mapping[str, FilterValue] | None = None,
        top_k: int = 3,
    ) -> list[SearchHit]:
        """Full-text search ranked by BM25.

        ``query`` is untrusted text (an agent's claim): the store treats it as words, never as
        query syntax. ``filters`` are exact, case-insensitive matches on keyword fields
        (``service``, ``stance``, ``action``, ``status``, ``source``, ``incident_id``); a sequence
        means "any of". Returns at most ``top_k`` hits, best first; an empty query returns none.
        """
        ...

    def get(self, index: str, doc_id: str) -> dict[str, Any] | None:
        """The document with this id, or ``None``."""
        ...

    def get_many(self, index: str, doc_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The documents found among ``doc_ids``, keyed by id (missing ids are absent)."""
        ...

    def find(
        self, index: str, filters: Mapping[str, FilterValue], *, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Documents matching every filter exactly (unranked, ordered by id)."""
        ...

    def policy_conflicts(self, service: str, action: str, severity: str) -> list[dict[str, Any]]:
        """Policies that block ``action`` for ``service`` at ``severity``.

        A policy matches when its ``service`` equals the service or is ``*``, the severity is in
        its ``severities`` and the action is in its ``blocked_actions``; all case-insensitive.
        """
        ...

    def known_actions(self) -> set[str]:
        """Every ``recommended_action`` of an approved runbook, lower-cased."""
        ...

    def log_stats(
        self,
        *,
        service: str | None = None,
        window_minutes: int = 15,
        now: datetime | None = None,
        top_n: int = 5,
    ) -> LogSummary:
        """Aggregate access logs in ``(now - window, now]``: totals, 4xx (>=400) and 5xx (>=500)
        counts, error rate, average bytes and the top failing request paths."""
        ...

    def index_documents(self, index: str, docs: Iterable[Mapping[str, Any]]) -> int:
        """Insert or replace documents by ``id`` (logs are appended). All or nothing."""
        ...

    def append_event(self, index: str, doc: Mapping[str, Any]) -> str:
        """Append a record to ``workflow_events`` or ``action_executions``; returns its id."""
        ...

    def count(self, index: str, filters: Mapping[str, FilterValue] | None = None) -> int: ...

    def events(
        self,
        index: str,
        incident_id: str | None = None,
        limit: int = 1000,
        *,
        kind: FilterValue | None = None,
    ) -> list[dict[str, Any]]:
        """Records of ``workflow_events`` or ``action_executions`` in insertion order, optionally
        only one incident's (the execute-time re-check reads the incident's state from them) and
        only of the given ``kind`` (exact match; a sequence means "any of"). The approval
        bookkeeping (``approval_state``) reads its own kinds across incidents this way."""
        ...

    def recent_events(
        self,
        index: str,
        *,
        kind: FilterValue | None = None,
        since: datetime | None = None,
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        """Records of ``workflow_events`` or ``action_executions``, newest first, optionally only
        of the given ``kind`` and only those whose ``at`` is at or after ``since``; at most
        ``limit``. The guardrails read their state this way (the last kill-switch record, the
        executions of the last hour), so every governor on the same store sees the same state."""
        ...

    def claim_incident(self, incident: Incident, owner: str) -> bool:
        """Record the incident and claim it for ``owner``; False if already claimed."""
        ...

    def atomic(self) -> AbstractContextManager[None]:
        """A transaction (nested calls use savepoints); rolls back on any exception."""
        ...

    def close(self) -> None: ...


class ToolCall(BaseModel):
    """One tool call as the audit trail records it."""

    tool: str
    arguments: dict[str, Any]
    result_ids: list[str] = Field(default_factory=list)
    duration_ms: float
    transport: str
    ok: bool = True
    error: str | None = None


class ToolPort(Protocol):
    """Calls the SRE and reliability tools (in-process, or through an MCP client session)."""

    transport: str

    def call(self, name: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """Run tool ``name`` and return its structured result.

        Raises ``ToolCallError`` with a message safe to show to an agent.
        """
        ...


class AgentReply(BaseModel):
    """What an agent backend answered for one phase: raw text plus the calls it made."""

    text: str
    tool_calls: list[ToolCall] = Field(default_factory=list)
    model: str | None = None
    usage: dict[str, Any] = Field(default_factory=dict)


class AgentBackend(Protocol):
    """An agent that proposes (``plan``) and stress-tests (``stress``) through the tools."""

    name: str
    model: str

    def converse(
        self, phase: str, prompt: str, *, incident: Incident, tools: ToolPort, context: Mapping[str, Any]
    ) -> AgentReply:
        """Answer one phase. ``context`` carries structured inputs (the plan, for ``stress``).

        The reply's text is untrusted: the pipeline parses and validates it, and fails closed.
        Raises ``AgentBackendError`` when the backend cannot answer at all.
        """
        ...


class ScoreProvider(Protocol):
    def scores(self, model: str) -> FrameworkScores:
        """The model's CDCT/DDFT/EECT profile; zeros and ``source='none'`` when unknown."""
        ...


class AuditSink(Protocol):
    """The append-only audit trail (JSONL files in ``output/``)."""

    def record(self, stream: str, record: Mapping[str, Any]) -> None:
        """Append and flush one record to ``stream``. Raises ``AuditWriteError`` on failure."""
        ...


class Executor(Protocol):
    """Runs a remediation action from the action catalogue: ``dry_run`` (the default) or
    ``webhook``. Executors refuse what the gate did not pass and no human authorised, actions
    outside the catalogue or not applicable to the incident's service, and parameters the
    catalogue does not accept."""

    name: str

    def preview(
        self, incident: Incident, gate: GateOutput, parameters: Mapping[str, Any] | None = None
    ) -> str:
        """Exactly what ``execute`` would do, as one deterministic text (shown in approval
        requests). Never runs anything and never raises for a bad action: the text says why
        it would be refused."""
        ...

    def execute(
        self,
        incident: Incident,
        gate: GateOutput,
        *,
        authorised_by: str,
        parameters: Mapping[str, Any] | None = None,
    ) -> ExecutionRecord:
        """Run (or, for a dry run, render and record) the gate's ``proposed_action`` with the
        catalogue-validated ``parameters`` (defaults filled, ``service`` from the incident).

        Raises ``ExecutionRefused`` if the gate did not pass the action and nobody authorised it,
        if the action is not catalogued for the service, or if the parameters are invalid.
        """
        ...


class Readiness(BaseModel):
    """Whether an integration can be used, and if not, why (names missing variables)."""

    ok: bool
    reason: str = ""


class Ticket(BaseModel):
    key: str
    incident_id: str
    url: str | None = None
    status: str = "open"


class TicketPort(Protocol):
    """Incident tickets: local (embedded store, SRE-101…) or Jira."""

    name: str

    def create(self, incident: Incident) -> Ticket:
        """Open a ticket for the incident; creating twice for one incident returns the first."""
        ...

    def comment(self, key: str, text: str) -> None: ...

    def resolve(self, key: str, resolution: str) -> None:
        """Move the ticket to its done state, whatever the workflow names it."""
        ...

    def check(self) -> Readiness: ...


class ApprovalChannel(Protocol):
    """Where blocked incidents wait for a human: the local inbox, or Slack."""

    name: str

    def request(self, incident: Incident, gate: GateOutput, *, message: str, ticket: Ticket | None = None) -> str:
        """Post the approval request; returns a handle (e.g. the Slack message ts)."""
        ...

    def replies(self, incident_id: str) -> list[tuple[str, str]]:
        """New human replies ``(user, text)`` since the last call, each returned exactly once."""
        ...

    def notify(self, incident_id: str, text: str) -> None:
        """Post a follow-up (a refusal explanation, a state change) next to the request."""
        ...

    def check(self) -> Readiness: ...

"""What the incident service tells its faces: immutable views and the events workers post.

Workers never touch a face's objects. They post small immutable events to the ``EventBus``; a
face (the Rich dashboard, the headless ``serve`` command) is the only consumer and folds them
into what it shows. A view is never mutated, so a consumer can never see half an update.
"""

from __future__ import annotations

import queue
from dataclasses import dataclass
from datetime import datetime
from typing import Any

# The remediation queue's states, in pipeline order. HELD and ESCALATED are waiting for a human.
STATES = (
    "DETECTED", "ANALYZING", "PENDING_APPROVAL", "HELD", "READY_TO_EXECUTE", "EXECUTING", "VERIFYING",
    "LEARNING", "RESOLVED", "REJECTED", "ESCALATED",
)
TERMINAL_STATES = frozenset({"RESOLVED", "REJECTED", "ESCALATED"})
AWAITING_HUMAN = frozenset({"PENDING_APPROVAL", "HELD"})
ACTIVITY_LIMIT = 200


@dataclass(frozen=True)
class ThreadEntry:
    """One line of an approval thread: the request, a reply and its outcome, or a notice."""

    at: datetime
    author: str
    text: str
    kind: str  # request | reply | notify
    outcome: str | None = None  # accepted | refused | ignored | unauthorized | invalid (replies)


@dataclass(frozen=True)
class Reasoning:
    """The governor's reasoning for one incident, as Python derived it."""

    proposed_action: str | None
    rationale: str
    retrieved: tuple[str, ...]
    supporting: int
    contradicting: int
    coverage: float
    policy_conflicts: tuple[str, ...]
    rules: tuple[tuple[str, str], ...]  # (rule id, message)
    cautions: tuple[str, ...]
    decision: str
    approval_required: str
    confidence_initial: float
    confidence_final: float
    context_mode: str
    tool_calls: int
    errors: tuple[str, ...] = ()


@dataclass(frozen=True)
class IncidentView:
    """One row of the remediation queue."""

    id: str
    service: str
    severity: str
    summary: str
    state: str
    detected_at: datetime
    updated_at: datetime
    symptoms: str = ""
    ticket: str | None = None
    source: str = "audit-worker"
    reasoning: Reasoning | None = None
    preview: str | None = None
    thread: tuple[ThreadEntry, ...] = ()
    outcome: str | None = None
    error: str | None = None
    attempts: int = 0
    learned: str | None = None  # the runbook learned from this incident (its id)
    learned_status: str | None = None  # pending_review | approved | revoked


@dataclass(frozen=True)
class LogLine:
    at: datetime
    service: str
    request: str
    status: int


@dataclass(frozen=True)
class ServiceRate:
    service: str
    requests: int
    error_rate: float


@dataclass(frozen=True)
class TelemetryView:
    """Live telemetry as the logs worker tails it from the store."""

    processed: int = 0
    per_second: float = 0.0
    error_rate: float = 0.0
    series: tuple[float, ...] = ()  # error rate per bucket, oldest first
    bucket_seconds: int = 2
    services: tuple[ServiceRate, ...] = ()
    recent: tuple[LogLine, ...] = ()


@dataclass(frozen=True)
class Integration:
    role: str  # store | tickets | agent | approvals | executor | tools
    name: str
    ok: bool
    detail: str = ""


@dataclass(frozen=True)
class Metrics:
    detected: int = 0
    unsafe_blocked: int = 0
    auto_executed: int = 0
    approved: int = 0
    overrides: int = 0
    refusals: int = 0
    held: int = 0
    rejected: int = 0
    resolved: int = 0
    escalated: int = 0
    kb_learned: int = 0
    kb_runbooks: int = 0
    kb_pending: int = 0  # learned entries waiting for a human review


@dataclass(frozen=True)
class WorkerView:
    name: str
    ok: bool = True
    detail: str = "starting"
    errors: int = 0


# --- events ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class IncidentUpdated:
    view: IncidentView


@dataclass(frozen=True)
class TelemetryUpdated:
    view: TelemetryView


@dataclass(frozen=True)
class MetricsUpdated:
    metrics: Metrics


@dataclass(frozen=True)
class IntegrationsUpdated:
    integrations: tuple[Integration, ...]


@dataclass(frozen=True)
class IntegrationChanged:
    """One integration's health changed (an outage began or ended); the others stay as shown."""

    role: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class WorkerUpdated:
    view: WorkerView


@dataclass(frozen=True)
class Activity:
    """A line for the activity log (and the ``--no-tui`` output)."""

    at: datetime
    source: str
    text: str
    level: str = "info"  # info | warn | error
    incident_id: str | None = None


@dataclass(frozen=True)
class BannerChanged:
    text: str | None


@dataclass(frozen=True)
class FreezeChanged:
    """The kill switch as the store has it: ``"FROZEN by … : reason"``, or ``None`` when off."""

    text: str | None


Event = (IncidentUpdated | TelemetryUpdated | MetricsUpdated | IntegrationsUpdated | IntegrationChanged
         | WorkerUpdated | Activity | BannerChanged | FreezeChanged)


class EventBus:
    """A thread-safe queue from the workers (and the keyboard) to the UI thread."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def post(self, event: Any) -> None:
        self._queue.put(event)

    def drain(self, timeout: float | None = None, limit: int = 10_000) -> list[Any]:
        """Every event waiting (blocking up to ``timeout`` for the first one)."""
        events: list[Any] = []
        try:
            events.append(self._queue.get(timeout=timeout) if timeout else self._queue.get_nowait())
            while len(events) < limit:
                events.append(self._queue.get_nowait())
        except queue.Empty:
            pass
        return events


def format_activity(event: Activity) -> str:
    return f"{event.at:%H:%M:%S} {event.source:<6} {event.text}"

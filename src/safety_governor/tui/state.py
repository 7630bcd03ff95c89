"""What the dashboard shows: immutable snapshots, the events workers post, and the reducer.

Workers never touch Rich objects or the snapshot. They post small immutable events to the
``EventBus``; the UI thread (the only consumer) folds them into a new ``DashboardState`` with
``reduce`` and hands that snapshot to the panels. A snapshot is never mutated, so a frame being
built can never see half an update.
"""

from __future__ import annotations

import queue
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
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


@dataclass(frozen=True)
class Prompt:
    """An input line the keyboard is typing into (the FORCE_OVERRIDE reason)."""

    incident_id: str
    label: str
    text: str = ""


@dataclass(frozen=True)
class DashboardState:
    """Everything one frame shows."""

    mode: str
    started_at: datetime
    now: datetime
    flags: tuple[str, ...] = ()
    user: str = "oncall"
    integrations: tuple[Integration, ...] = ()
    telemetry: TelemetryView = field(default_factory=TelemetryView)
    incidents: tuple[IncidentView, ...] = ()  # detection order, oldest first
    selected: str | None = None
    follow: bool = True  # the selection follows the incident that needs attention
    metrics: Metrics = field(default_factory=Metrics)
    workers: tuple[WorkerView, ...] = ()
    activity: tuple[str, ...] = ()
    banner: str | None = None
    prompt: Prompt | None = None
    hint: str | None = None

    def incident(self, incident_id: str | None) -> IncidentView | None:
        if incident_id is None:
            return None
        for view in reversed(self.incidents):
            if view.id == incident_id:
                return view
        return None

    @property
    def selected_incident(self) -> IncidentView | None:
        return self.incident(self.selected)

    def display_order(self) -> tuple[IncidentView, ...]:
        """The queue as shown: newest first."""
        return tuple(reversed(self.incidents))


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
class KeyPressed:
    key: str


Event = (IncidentUpdated | TelemetryUpdated | MetricsUpdated | IntegrationsUpdated | IntegrationChanged
         | WorkerUpdated | Activity | BannerChanged | KeyPressed)


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


def _attention(view: IncidentView) -> int:
    """How urgently an incident wants the selection (higher first)."""
    if view.state in AWAITING_HUMAN:
        return 3
    if view.state not in TERMINAL_STATES:
        return 2
    return 1


def _follow_target(state: DashboardState, view: IncidentView) -> str | None:
    current = state.selected_incident
    if current is None or current.id == view.id:
        return view.id
    return view.id if _attention(view) >= _attention(current) else current.id


def format_activity(event: Activity) -> str:
    return f"{event.at:%H:%M:%S} {event.source:<6} {event.text}"


def reduce(state: DashboardState, event: Any) -> DashboardState:
    """The next snapshot after ``event`` (pure; keys are handled by the controller)."""
    if isinstance(event, IncidentUpdated):
        view = event.view
        incidents = list(state.incidents)
        for i in range(len(incidents) - 1, -1, -1):
            if incidents[i].id == view.id:
                incidents[i] = view
                break
        else:
            incidents.append(view)
        next_state = replace(state, incidents=tuple(incidents))
        if state.follow:
            next_state = replace(next_state, selected=_follow_target(next_state, view))
        return next_state
    if isinstance(event, TelemetryUpdated):
        return replace(state, telemetry=event.view)
    if isinstance(event, MetricsUpdated):
        return replace(state, metrics=event.metrics)
    if isinstance(event, IntegrationsUpdated):
        return replace(state, integrations=event.integrations)
    if isinstance(event, IntegrationChanged):
        changed = [replace(i, ok=event.ok, detail=event.detail) if i.role == event.role else i
                   for i in state.integrations]
        if not any(i.role == event.role for i in state.integrations):
            changed.append(Integration(role=event.role, name=event.role, ok=event.ok, detail=event.detail))
        return replace(state, integrations=tuple(changed))
    if isinstance(event, WorkerUpdated):
        workers = [w for w in state.workers if w.name != event.view.name]
        order = [w.name for w in state.workers]
        if event.view.name in order:
            workers.insert(order.index(event.view.name), event.view)
        else:
            workers.append(event.view)
        return replace(state, workers=tuple(workers))
    if isinstance(event, Activity):
        return replace(state, activity=(*state.activity[-(ACTIVITY_LIMIT - 1):], format_activity(event)))
    if isinstance(event, BannerChanged):
        return replace(state, banner=event.text)
    return state


def reduce_all(state: DashboardState, events: Iterable[Any]) -> DashboardState:
    for event in events:
        state = reduce(state, event)
    return state

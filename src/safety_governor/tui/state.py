"""What the dashboard shows: the immutable ``DashboardState`` snapshot and the reducer.

The incident service's workers post events (``service.events``); the UI thread (the only
consumer) folds them into a new ``DashboardState`` with ``reduce`` and hands that snapshot to the
panels. A snapshot is never mutated, so a frame being built can never see half an update.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from ..service.events import (  # noqa: F401  (re-exported: the panels and tests read them here)
    ACTIVITY_LIMIT,
    AWAITING_HUMAN,
    STATES,
    TERMINAL_STATES,
    Activity,
    BannerChanged,
    Event,
    EventBus,
    FreezeChanged,
    IncidentUpdated,
    IncidentView,
    Integration,
    IntegrationChanged,
    IntegrationsUpdated,
    LogLine,
    Metrics,
    MetricsUpdated,
    Reasoning,
    ServiceRate,
    TelemetryUpdated,
    TelemetryView,
    ThreadEntry,
    WorkerUpdated,
    WorkerView,
    format_activity,
)


@dataclass(frozen=True)
class Prompt:
    """An input line the keyboard is typing into (the FORCE_OVERRIDE reason, or the freeze reason)."""

    incident_id: str
    label: str
    text: str = ""
    kind: str = "override"  # override | freeze


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
    frozen: str | None = None  # the kill switch: "FROZEN by … : reason" (header), None when off
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


@dataclass(frozen=True)
class KeyPressed:
    key: str


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
    if isinstance(event, FreezeChanged):
        return replace(state, frozen=event.text)
    return state


def reduce_all(state: DashboardState, events: Iterable[Any]) -> DashboardState:
    for event in events:
        state = reduce(state, event)
    return state

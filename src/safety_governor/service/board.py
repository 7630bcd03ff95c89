"""The remediation queue the service's workers share: one ``WorkItem`` per incident, the
``Board`` that holds them, the operational ``Counters`` and present mode's ``Pauser``."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from ..approvals import ApprovalPolicy, ApprovalSession
from ..models import ExecutionRecord, Incident
from ..pipeline import Assessment, ReliabilityLayerAgent
from ..ports import Ticket
from .events import (
    TERMINAL_STATES,
    BannerChanged,
    EventBus,
    IncidentView,
    Metrics,
    Reasoning,
    ThreadEntry,
)

AGENT_STEPS = ("analyze", "execute", "verify", "learn")
REPLY_STATES = frozenset({"PENDING_APPROVAL", "HELD", "READY_TO_EXECUTE"})
UNSAFE_RULES = frozenset({"policy_conflict", "contradictions", "unknown_action", "invalid_output",
                          "forbidden_action", "knowledge_unavailable"})


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class WorkItem:
    """One incident on the board, with everything the workers derived for it."""

    incident: Incident
    pipeline: ReliabilityLayerAgent
    approvals: ApprovalPolicy
    source: str = "audit-worker"
    baseline_error_rate: float | None = None
    verify_live: bool = True
    state: str = "DETECTED"
    step: str | None = "analyze"
    due: float = 0.0
    busy: bool = False
    ticket: Ticket | None = None
    assessment: Assessment | None = None
    session: ApprovalSession | None = None
    preview: str | None = None
    requested: bool = False
    execution: ExecutionRecord | None = None
    effect: str = ""  # what the execution did to the simulated production (offline)
    states_recorded: bool = False  # the pipeline recorded resolved / escalated at verification
    verification: Any = None
    watch: Any = None  # the running verification (``RecoveryWatch``) between its polls
    learned: dict[str, Any] | None = None
    outcome: str | None = None
    error: str | None = None
    attempts: int = 0
    thread: list[ThreadEntry] = field(default_factory=list)
    detected_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)
    closed_at: float | None = None
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @property
    def label(self) -> str:
        return self.ticket.key if self.ticket else self.incident.id

    def view(self) -> Any:
        a = self.assessment
        reasoning = None
        if a is not None:
            g = a.gate
            reasoning = Reasoning(
                proposed_action=g.proposed_action, rationale=a.plan.rationale if a.plan else "",
                retrieved=tuple(a.plan.retrieved_context_ids) if a.plan else (),
                supporting=len(a.stress.supporting_doc_ids), contradicting=g.contradiction_count,
                coverage=g.evidence_coverage, policy_conflicts=tuple(g.policy_conflicts),
                rules=tuple((r.rule_id, r.message) for r in g.reasons), cautions=tuple(g.cautions),
                decision=g.decision, approval_required=g.approval_required,
                confidence_initial=g.confidence_initial, confidence_final=g.confidence_final,
                context_mode=g.context_mode, tool_calls=a.tool_calls,
                errors=tuple(e for e in (a.plan_error, a.stress_error) if e))
        i = self.incident
        return IncidentView(
            id=i.id, service=i.service, severity=i.severity, summary=i.summary, symptoms=i.symptoms,
            state=self.state, detected_at=self.detected_at, updated_at=self.updated_at,
            ticket=self.ticket.key if self.ticket else None, source=self.source, reasoning=reasoning,
            preview=self.preview, thread=tuple(self.thread), outcome=self.outcome, error=self.error,
            attempts=self.attempts, learned=str(self.learned.get("id")) if self.learned else None,
            learned_status=str(self.learned.get("status")) if self.learned else None)


class Board:
    """The remediation queue the workers share. Items are never removed (the queue is history)."""

    def __init__(self) -> None:
        self._items: dict[str, WorkItem] = {}
        self._cond = threading.Condition()

    def add(self, item: WorkItem) -> None:
        with self._cond:
            self._items[item.incident.id] = item
            self._cond.notify_all()

    def get(self, incident_id: str) -> WorkItem | None:
        with self._cond:
            return self._items.get(incident_id)

    def items(self) -> list[WorkItem]:
        with self._cond:
            return list(self._items.values())

    def take_due(self, now: float) -> WorkItem | None:
        """The first item with an agent step due, marked busy (``release`` it after)."""
        with self._cond:
            for item in self._items.values():
                if item.step in AGENT_STEPS and not item.busy and item.due <= now:
                    item.busy = True
                    return item
            return None

    def release(self, item: WorkItem) -> None:
        with self._cond:
            item.busy = False
            self._cond.notify_all()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def wait(self, timeout: float, *, due_only: bool = True) -> None:
        """Wait until the board changes (an item added, released or woken), at most ``timeout``;
        with ``due_only``, also until the next agent step falls due."""
        with self._cond:
            due = [i.due for i in self._items.values() if i.step in AGENT_STEPS and not i.busy]
            if due and due_only:
                timeout = max(0.0, min(timeout, min(due) - time.monotonic()))
            if timeout > 0:
                self._cond.wait(timeout)

    def open_services(self, now: float, cooldown: float) -> set[str]:
        """Services with an open incident, or one closed less than ``cooldown`` seconds ago."""
        with self._cond:
            return {i.incident.service for i in self._items.values()
                    if i.state not in TERMINAL_STATES or (i.closed_at is not None and now - i.closed_at < cooldown)}

    def awaiting_replies(self) -> list[WorkItem]:
        with self._cond:
            return [i for i in self._items.values() if i.requested and i.state not in TERMINAL_STATES]

    def settled(self) -> bool:
        with self._cond:
            return all(i.state in TERMINAL_STATES for i in self._items.values())


class Counters:
    """The operational metrics, shared by the workers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._metrics = Metrics()

    def bump(self, **deltas: int) -> Metrics:
        with self._lock:
            values = {k: getattr(self._metrics, k) + v for k, v in deltas.items()}
            self._metrics = replace(self._metrics, **values)
            return self._metrics

    def set(self, **values: int) -> Metrics:
        with self._lock:
            self._metrics = replace(self._metrics, **values)
            return self._metrics

    @property
    def metrics(self) -> Metrics:
        with self._lock:
            return self._metrics


class Pauser:
    """Present mode's pauses at the key moments; ``resume`` (the space key) continues."""

    def __init__(self, bus: EventBus, stop: threading.Event, *, enabled: bool, timeout: float) -> None:
        self.bus = bus
        self.stop = stop
        self.enabled = enabled
        self.timeout = timeout
        self._go = threading.Event()
        self._one_at_a_time = threading.Lock()

    def pause(self, reason: str) -> None:
        if not self.enabled or self.stop.is_set():
            return
        with self._one_at_a_time:
            self._go.clear()
            self.bus.post(BannerChanged(f"{reason} · space continues ({self.timeout:.0f}s)"))
            deadline = time.monotonic() + self.timeout
            while not self.stop.is_set() and not self._go.is_set() and time.monotonic() < deadline:
                self._go.wait(0.2)
            self.bus.post(BannerChanged(None))

    def resume(self) -> None:
        self._go.set()

"""The service's worker base: its timings, what every worker may use, and the step loop.

The four workers (logs, audit, agent, slack) are threads looping on ``step`` until one shared
``threading.Event``. An exception inside a step is logged and shown, and the worker carries on.
Workers never touch a face's objects: they post immutable events to the ``EventBus``.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..approval_state import ApprovalState
from ..ports import ApprovalChannel, Store, TicketPort
from .board import Board, Counters, Pauser, WorkItem, utcnow
from .detection import DetectionConfig
from .events import Activity, EventBus, IncidentUpdated, Metrics, MetricsUpdated, WorkerUpdated, WorkerView


class Stopping(Exception):
    """Raised inside a blocking step (verification) when the service is stopping."""


@dataclass(frozen=True)
class WorkerConfig:
    """Timings of the workers (fast mode defaults; present mode stretches some).

    Args:
        hold_seconds: how long an auto-execution waits for HOLD before it runs.
        verify_window_seconds: how long verification watches the telemetry at most.
        verify_poll_seconds: seconds between verification looks.
        max_attempts: tries of one incident step before the incident is escalated.
        agent_concurrency: agent steps of different incidents running at once.
        retry_seconds: the first retry delay (doubles per attempt).
        cooldown_seconds: after an incident closes, its service is not re-detected for this long.
        pause_seconds: present mode's pause before continuing on its own.
    """

    hold_seconds: float = 2.5
    verify_window_seconds: float = 12.0
    verify_poll_seconds: float = 1.0
    max_attempts: int = 3
    agent_concurrency: int = 4
    retry_seconds: float = 1.0
    logs_interval: float = 0.5
    scan_interval: float = 1.0
    approvals_interval: float = 0.25
    cooldown_seconds: float = 60.0
    pause_seconds: float = 20.0
    bucket_seconds: int = 2
    series_points: int = 120
    detection: DetectionConfig = field(default_factory=DetectionConfig)


class ActionSink(Protocol):
    """Where an executed action lands besides the executor: the simulated production offline."""

    def apply_action(self, service: str, action: str) -> Any: ...


@dataclass
class WorkerContext:
    """What every worker may use."""

    store: Store
    tickets: TicketPort
    channel: ApprovalChannel
    bus: EventBus
    board: Board
    counters: Counters
    pauser: Pauser
    stop: threading.Event
    config: WorkerConfig
    owner: str
    # Set by a drain (SIGTERM): no new incident is opened and no new step starts.
    draining: threading.Event = field(default_factory=threading.Event)
    audit: Any = None
    actions: Any = None  # the action catalogue (verification's rollback lookup)
    production: ActionSink | None = None
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("safety_governor.tui"))
    # Learned-runbook approvals asked for from the keyboard: (incident id, user).
    reviews: queue.SimpleQueue[tuple[str, str]] = field(default_factory=queue.SimpleQueue)
    # This governor's approval policy (its own approvers file): authorises runbook reviews sent from a shell.
    approvals: Any = None
    _states: dict[int, ApprovalState] = field(default_factory=dict, repr=False)

    def approval_state(self, store: Store | None = None) -> ApprovalState:
        """The durable approval bookkeeping over ``store`` (default: the service's own)."""
        store = store if store is not None else self.store
        state = self._states.get(id(store))
        if state is None:
            state = self._states[id(store)] = ApprovalState(store, audit=self.audit)
        return state

    def activity(self, source: str, text: str, *, level: str = "info", incident_id: str | None = None) -> None:
        log = self.logger.error if level == "error" else self.logger.warning if level == "warn" else self.logger.info
        log("%s: %s", source, text)
        self.bus.post(Activity(at=utcnow(), source=source, text=text, level=level, incident_id=incident_id))

    def publish(self, item: WorkItem) -> None:
        item.updated_at = utcnow()
        self.bus.post(IncidentUpdated(item.view()))

    def metrics(self, metrics: Metrics) -> None:
        self.bus.post(MetricsUpdated(metrics))


# --- the worker base --------------------------------------------------------------------------


class Worker(threading.Thread):
    """A loop of ``step`` until the shared stop event; a failing step is shown, logged and retried."""

    role = "worker"

    def __init__(self, ctx: WorkerContext) -> None:
        super().__init__(name=f"governor-{self.role}", daemon=True)
        self.ctx = ctx
        self.errors = 0
        self.steps = 0

    def report(self, ok: bool, detail: str) -> None:
        self.ctx.bus.post(WorkerUpdated(WorkerView(name=self.role, ok=ok, detail=detail, errors=self.errors)))

    def run(self) -> None:
        self.report(True, "running")
        failures = 0
        try:
            while not self.ctx.stop.is_set():
                try:
                    self.step()
                    self.steps += 1
                    if failures:
                        failures = 0
                        self.report(True, "running (recovered)")
                except Stopping:
                    break
                except Exception as exc:  # one worker's failure must not take the service down
                    failures += 1
                    self.errors += 1
                    self.ctx.logger.exception("%s worker step failed", self.role)
                    self.report(False, f"{type(exc).__name__}: {exc}")
                    self.ctx.activity(self.role, f"✗ worker error: {type(exc).__name__}: {exc} (carrying on)",
                                      level="error")
                    self.ctx.stop.wait(min(5.0, 0.25 * 2 ** min(failures, 4)))
        finally:
            self.close()
            self.report(True, "stopped")

    def step(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

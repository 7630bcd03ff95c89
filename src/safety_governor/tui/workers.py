"""The dashboard's four workers, as in the seed: logs, audit, agent and slack.

* **logs** tails the store's telemetry and posts what the live-telemetry panel shows;
* **audit** windows the same telemetry per service and request path, and opens an incident for
  each error cluster (claimed in the store first, so two governors never take one incident);
* **agent** drives each incident: ticket → plan → stress → compress → gate → notify → execute →
  verify → learn;
* **slack** is the approval loop over the ``ApprovalChannel`` port (the local inbox offline,
  Slack when configured): each reply goes through the core's ``ApprovalSession`` rules, is
  audited and is acknowledged in the same store transaction (exactly once); it also approves
  learned runbooks on request (the ``l`` key) and shows integration outages.

Approvals are durable (``durability``): waits, replies and executions live in the store, and a
restarted dashboard resumes the incidents that wait for a human.

The workers share the ``Board`` (the remediation queue, under locks) and stop on one
``threading.Event``. An exception inside a worker's step is logged and shown, and the worker
carries on; an exception while handling an incident leaves the incident on the board with its
error, retried with backoff and escalated after ``max_attempts``. Workers never touch Rich
objects: they post immutable events to the ``EventBus``.
"""

from __future__ import annotations

import inspect
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from ..approval_state import ApprovalState
from ..approvals import ApprovalPolicy, ApprovalSession, parse_command
from ..errors import GovernorError, InputError
from ..models import ApprovalEvent, ExecutionRecord, Incident
from ..pipeline import Assessment, ReliabilityLayerAgent
from ..ports import ApprovalChannel, Store, Ticket, TicketPort
from .detection import Cluster, DetectionConfig, ErrorClusterDetector, doc_epoch
from .durability import (
    IntegrationWatch,
    ack_reply,
    close_wait,
    open_wait,
    pending_replies,
    prior_execution,
)
from .logtail import LogSource
from .state import (
    TERMINAL_STATES,
    Activity,
    BannerChanged,
    EventBus,
    IncidentUpdated,
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
)

AGENT_STEPS = ("analyze", "execute", "verify", "learn")
REPLY_STATES = frozenset({"PENDING_APPROVAL", "HELD", "READY_TO_EXECUTE"})
UNSAFE_RULES = frozenset({"policy_conflict", "contradictions", "unknown_action", "invalid_output"})


def utcnow() -> datetime:
    return datetime.now(UTC)


class Stopping(Exception):
    """Raised inside a blocking step (verification) when the dashboard is quitting."""


@dataclass(frozen=True)
class WorkerConfig:
    """Timings of the workers (fast mode defaults; present mode stretches some).

    Args:
        hold_seconds: how long an auto-execution waits for HOLD before it runs.
        verify_window_seconds: how long verification watches the telemetry at most.
        verify_poll_seconds: seconds between verification looks.
        max_attempts: tries of one incident step before the incident is escalated.
        retry_seconds: the first retry delay (doubles per attempt).
        cooldown_seconds: after an incident closes, its service is not re-detected for this long.
        pause_seconds: present mode's pause before continuing on its own.
    """

    hold_seconds: float = 2.5
    verify_window_seconds: float = 12.0
    verify_poll_seconds: float = 1.0
    max_attempts: int = 3
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


# --- shared state -----------------------------------------------------------------------------


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
        from .state import IncidentView

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

    def wait(self, timeout: float) -> None:
        with self._cond:
            due = [i.due for i in self._items.values() if i.step in AGENT_STEPS and not i.busy]
            if due:
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
    audit: Any = None
    actions: Any = None  # the action catalogue (verification's rollback lookup)
    production: ActionSink | None = None
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("safety_governor.tui"))
    # Learned-runbook approvals asked for from the keyboard: (incident id, user).
    reviews: queue.SimpleQueue[tuple[str, str]] = field(default_factory=queue.SimpleQueue)
    _states: dict[int, ApprovalState] = field(default_factory=dict, repr=False)

    def approval_state(self, store: Store | None = None) -> ApprovalState:
        """The durable approval bookkeeping over ``store`` (default: the dashboard's own)."""
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
                except Exception as exc:  # one worker's failure must not take the dashboard down
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


# --- logs -------------------------------------------------------------------------------------


class LogsWorker(Worker):
    """Tails the telemetry: newest lines, logs per second, error-rate series and per-service rates."""

    role = "logs"

    def __init__(self, ctx: WorkerContext, tail: LogSource, *, recent: int = 40, service_window: float = 30.0) -> None:
        super().__init__(ctx)
        self.tail = tail
        self.recent: deque[LogLine] = deque(maxlen=recent)
        self.processed = 0
        self.service_window = service_window
        self._buckets: dict[int, list[int]] = {}
        self._seconds: dict[tuple[str, int], list[int]] = {}
        self._arrivals: deque[tuple[float, int]] = deque()
        self._last_post = 0.0

    def step(self) -> None:
        docs = self.tail.poll()
        bucket_s = self.ctx.config.bucket_seconds
        for doc in docs:
            try:
                status = int(str(doc.get("response", "0")))
            except ValueError:
                continue
            epoch = doc_epoch(doc.get("timestamp"))
            if epoch is None:
                continue
            at = datetime.fromtimestamp(epoch, UTC)
            error = int(status >= 400)
            bucket = self._buckets.setdefault(int(epoch // bucket_s), [0, 0])
            bucket[0] += 1
            bucket[1] += error
            counts = self._seconds.setdefault((str(doc.get("service", "?")), int(epoch)), [0, 0])
            counts[0] += 1
            counts[1] += error
            self.recent.append(LogLine(at=at, service=str(doc.get("service", "?")),
                                       request=str(doc.get("request", "")), status=status))
        self.processed += len(docs)
        now = time.time()
        self._arrivals.append((now, len(docs)))
        while self._arrivals and now - self._arrivals[0][0] > 10:
            self._arrivals.popleft()
        if now - self._last_post >= 1.0:
            self.ctx.bus.post(TelemetryUpdated(self.view(now)))
            self._last_post = now
        self.ctx.stop.wait(self.ctx.config.logs_interval)

    def view(self, now: float) -> TelemetryView:
        cfg = self.ctx.config
        current = int(now // cfg.bucket_seconds)
        first = current - cfg.series_points + 1
        for key in [k for k in self._buckets if k < first]:
            del self._buckets[key]
        series = []
        for key in range(first, current + 1):
            total, errors = self._buckets.get(key, (0, 0))
            series.append(errors / total if total else 0.0)
        horizon = int(now - self.service_window)
        for key in [k for k in self._seconds if k[1] < horizon]:
            del self._seconds[key]
        per_service: dict[str, list[int]] = {}
        for (service, _), (total, errors) in self._seconds.items():
            acc = per_service.setdefault(service, [0, 0])
            acc[0] += total
            acc[1] += errors
        services = tuple(sorted((ServiceRate(s, t, e / t if t else 0.0) for s, (t, e) in per_service.items()),
                                key=lambda r: (-r.error_rate, r.service)))
        total = sum(t for t, _ in per_service.values())
        errors = sum(e for _, e in per_service.values())
        span = (now - self._arrivals[0][0]) if len(self._arrivals) > 1 else 0.0
        arrived = sum(n for _, n in list(self._arrivals)[1:])
        return TelemetryView(processed=self.processed, per_second=arrived / span if span > 0 else 0.0,
                             error_rate=errors / total if total else 0.0, series=tuple(series),
                             bucket_seconds=cfg.bucket_seconds, services=services, recent=tuple(self.recent))

    def close(self) -> None:
        self.tail.close()


# --- audit ------------------------------------------------------------------------------------


@dataclass
class ReplayItem:
    """A scenario incident the audit worker opens as if detected (``--scenario``)."""

    incident: Incident
    pipeline: ReliabilityLayerAgent
    approvals: ApprovalPolicy
    store: Store


class AuditWorker(Worker):
    """Scans the telemetry for error clusters and opens incidents (and replays scenarios)."""

    role = "audit"

    def __init__(self, ctx: WorkerContext, tail: LogSource, *, pipeline: ReliabilityLayerAgent,
                 approvals: ApprovalPolicy, detector: ErrorClusterDetector | None = None,
                 replays: list[ReplayItem] | None = None, replay_interval: float = 6.0) -> None:
        super().__init__(ctx)
        self.tail = tail
        self.pipeline = pipeline
        self.approvals = approvals
        self.detector = detector or ErrorClusterDetector(ctx.config.detection)
        self.replays: deque[ReplayItem] = deque(replays or [])
        self.replay_interval = replay_interval
        self._next_replay = time.monotonic() + 1.0

    @property
    def replays_left(self) -> int:
        return len(self.replays)

    def step(self) -> None:
        self.detector.observe(self.tail.poll())
        now = time.time()
        skip = self.ctx.board.open_services(time.monotonic(), self.ctx.config.cooldown_seconds)
        for cluster in self.detector.scan(now, skip=skip):
            self.open_incident(cluster)
        if self.replays and time.monotonic() >= self._next_replay:
            self.open_replay(self.replays.popleft())
            self._next_replay = time.monotonic() + self.replay_interval
        self.ctx.stop.wait(self.ctx.config.scan_interval)

    def open_incident(self, cluster: Cluster) -> WorkItem | None:
        base = f"inc-{cluster.detected_at:%Y%m%d-%H%M%S}-{cluster.service}"
        for n in range(1, 6):
            incident = cluster.to_incident(base if n == 1 else f"{base}-{n}")
            if self.ctx.store.claim_incident(incident, self.ctx.owner):
                break
        else:
            self.ctx.activity("audit", f"{cluster.service}: cluster already claimed by another governor")
            return None
        item = WorkItem(incident=incident, pipeline=self.pipeline, approvals=self.approvals,
                        baseline_error_rate=cluster.baseline_rate, due=time.monotonic())
        self._add(item, f"detected {incident.severity} {incident.service}: {incident.summary}")
        return item

    def open_replay(self, replay: ReplayItem) -> WorkItem | None:
        if not replay.store.claim_incident(replay.incident, self.ctx.owner):
            return None
        item = WorkItem(incident=replay.incident, pipeline=replay.pipeline, approvals=replay.approvals,
                        source="scenario", verify_live=False, due=time.monotonic())
        self._add(item, f"replaying {replay.incident.id} ({replay.incident.severity} {replay.incident.service}): "
                        f"{replay.incident.summary}")
        return item

    def _add(self, item: WorkItem, text: str) -> None:
        self.ctx.board.add(item)
        self.ctx.publish(item)
        self.ctx.metrics(self.ctx.counters.bump(detected=1))
        self.ctx.activity("audit", text, incident_id=item.incident.id)

    def close(self) -> None:
        self.tail.close()


# --- agent ------------------------------------------------------------------------------------


def write_run_record(ctx: WorkerContext, item: WorkItem) -> None:
    """The incident's full pipeline record in ``agent_runs`` once it reached a final state."""
    from ..models import RunRecord

    a, session = item.assessment, item.session
    if a is None or ctx.audit is None:
        return
    if item.execution is not None:
        final = "executed"
    elif item.state == "REJECTED":
        final = "rejected"
    elif session is not None and session.may_execute:
        final = "execution_refused"
    else:
        final = "pending_approval"
    record = RunRecord(
        incident=item.incident, agent_backend=item.pipeline.agent.name, model=a.model, plan=a.plan,
        plan_error=a.plan_error, stress=a.stress, stress_error=a.stress_error, compress=a.compress, gate=a.gate,
        approvals=list(session.events) if session else [], final_state=final,  # type: ignore[arg-type]
        executed=item.execution is not None, execution=item.execution, tool_calls=a.tool_calls,
        started_at=a.started_at, finished_at=utcnow())
    body = record.model_dump(mode="json")
    body["dashboard"] = {"state": item.state, "ticket": item.ticket.key if item.ticket else None,
                         "outcome": item.outcome, "source": item.source}
    try:
        ctx.audit.record("agent_runs", body)
    except GovernorError as exc:  # the decision and execution records are already written
        ctx.activity("agent", f"cannot write the run record of {item.incident.id}: {exc}", level="warn")


def update_channel(ctx: WorkerContext, item: WorkItem, status: str, *, final: bool = False) -> None:
    """Let the approval channel update its message (Slack edits it; the local inbox has nothing to do)."""
    update = getattr(ctx.channel, "update", None)
    if not item.requested or not callable(update):
        return
    try:
        update(item.incident.id, status, final=final)
    except GovernorError as exc:
        ctx.activity("slack", f"approval channel: {exc}", level="warn")


def kb_metrics(counts: dict[str, int]) -> dict[str, int]:
    """The knowledge-base counters of ``Metrics`` from ``learning.knowledge_base_counts``."""
    return {"kb_learned": counts.get("learned_total", 0), "kb_runbooks": counts.get("runbooks", 0),
            "kb_pending": counts.get("pending_review", 0)}


def record_incident_state(ctx: WorkerContext, item: WorkItem, state: str, reason: str) -> None:
    """The incident's lifecycle state in the store (audited), which the execute-time re-check reads."""
    from ..incident_state import record_state

    a = item.assessment
    record_state(item.pipeline.store, item.incident.id, state, by="governor", reason=reason,
                 decision_id=a.gate.decision_id if a else None, audit=ctx.audit)


def _call_supported(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``fn`` with the keyword arguments it accepts (optional extras are dropped)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return fn(*args, **kwargs)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return fn(*args, **kwargs)
    return fn(*args, **{k: v for k, v in kwargs.items() if k in params})


def approval_message(item: WorkItem) -> str:
    """The approval request (or, for a passed gate, the hold notice) as the channel shows it."""
    a = item.assessment
    assert a is not None
    g, i = a.gate, item.incident
    head = f"[{item.label}] {i.service} · {i.severity} · {i.summary}"
    evidence = (f"evidence: {len(a.stress.supporting_doc_ids)} supporting, {g.contradiction_count} contradicting, "
                f"coverage {g.evidence_coverage:.0%}; confidence {g.confidence_initial:.1f} → {g.confidence_final:.1f}")
    preview = f"\npreview: {item.preview}" if item.preview else ""
    if g.decision == "execute":
        return (f"{head}\ngate PASSED: {g.proposed_action} runs in {item.due - time.monotonic():.0f}s unless "
                f"someone replies HOLD.\n{evidence}{preview}")
    rules = ", ".join(g.rule_ids) or "none"
    if g.approval_required == "force_override":
        needed = "FORCE_OVERRIDE <reason> (APPROVE will be refused), HOLD or REJECT"
    else:
        needed = "APPROVE, FORCE_OVERRIDE <reason>, HOLD or REJECT"
    return (f"{head}\ngate BLOCKED {g.proposed_action or '(no plan)'}: {rules}\n{evidence}{preview}\n"
            f"reply: {needed}")


class AgentWorker(Worker):
    """Drives each incident through the pipeline, one step at a time, oldest due first."""

    role = "agent"

    def step(self) -> None:
        board = self.ctx.board
        item = board.take_due(time.monotonic())
        if item is None:
            board.wait(0.5)
            return
        try:
            self.advance(item)
            if item.error:
                item.error = None
                self.ctx.publish(item)
        except Stopping:
            raise
        except Exception as exc:  # the incident stays on the board, with its error, and is retried
            self.fail(item, exc)
        finally:
            board.release(item)

    def advance(self, item: WorkItem) -> None:
        step = item.step
        if step == "analyze":
            self.analyze(item)
        elif step == "execute":
            self.execute(item)
        elif step == "verify":
            self.verify(item)
        elif step == "learn":
            self.learn(item)

    # --- steps ---------------------------------------------------------------------------

    def analyze(self, item: WorkItem) -> None:
        ctx, inc = self.ctx, item.incident
        if item.ticket is None:
            item.ticket = ctx.tickets.create(inc)
            ctx.activity("agent", f"{item.ticket.key} opened for {inc.id}", incident_id=inc.id)
        item.state = "ANALYZING"
        ctx.publish(item)
        a = item.pipeline.assess(inc)
        item.pipeline.record_decision(a)  # fail closed: no decision record, nothing further
        item.assessment = a
        item.session = item.pipeline.approval_session(a, item.approvals)
        preview = getattr(item.pipeline.executor, "preview", None)
        if preview is not None and a.gate.proposed_action:
            try:
                item.preview = str(preview(inc, a.gate))
            except GovernorError as exc:
                item.preview = f"no preview: {exc}"
        g = a.gate
        rules = ", ".join(g.rule_ids) or "all checks passed"
        ctx.tickets.comment(item.ticket.key, f"Gate {g.decision} for {g.proposed_action or '(no plan)'} ({rules}); "
                                             f"confidence {g.confidence_initial:.1f} → {g.confidence_final:.1f}; "
                                             f"decision {g.decision_id}")
        if g.decision == "execute":
            item.due = time.monotonic() + ctx.config.hold_seconds
            self.request(item)  # the hold notice first: nobody can HOLD what they were not told about
            with item.lock:
                item.state, item.step = "READY_TO_EXECUTE", "execute"
            ctx.activity("agent", f"{item.label} gate PASSED {g.proposed_action}: runs in "
                                  f"{ctx.config.hold_seconds:g}s unless HOLD", incident_id=inc.id)
            ctx.publish(item)
            return
        # Fail closed: if the request cannot be posted, the step is retried and nothing runs.
        self.request(item)
        with item.lock:
            item.state, item.step = "PENDING_APPROVAL", None
        if a.plan is not None:
            ctx.metrics(ctx.counters.bump(unsafe_blocked=1))
        record_incident_state(ctx, item, "pending_approval", f"gate blocked: {rules}")
        ctx.activity("agent", f"{item.label} gate BLOCKED {g.proposed_action or '(no plan)'}: {rules}; "
                              f"needs {g.approval_required.upper()}", level="warn", incident_id=inc.id)
        ctx.publish(item)
        if inc.severity == "critical":
            ctx.pauser.pause(f"{item.label} critical {inc.service}: gate blocked {g.proposed_action}, "
                             "needs FORCE_OVERRIDE")

    def request(self, item: WorkItem) -> None:
        a = item.assessment
        assert a is not None
        message = approval_message(item)
        open_wait(self.ctx, item, message)  # in the store before anyone can see it: a restart finds it
        self.ctx.channel.request(item.incident, a.gate, message=message, ticket=item.ticket)
        item.requested = True
        item.thread.append(ThreadEntry(at=utcnow(), author="governor", text=message, kind="request"))

    def execute(self, item: WorkItem) -> None:
        ctx = self.ctx
        with item.lock:
            session, a = item.session, item.assessment
            if session is None or a is None:
                item.step = None
                return
            if item.execution is None:
                # READY_TO_EXECUTE, or EXECUTING again after a failure before anything ran.
                if item.state not in ("READY_TO_EXECUTE", "EXECUTING") or not session.may_execute:
                    item.step = None  # held or rejected meanwhile: the slack worker owns it now
                    return
                item.state = "EXECUTING"
        ctx.publish(item)
        if item.execution is None:
            prior = prior_execution(ctx, item)  # ran before a restart (or elsewhere): never twice
            if prior is not None:
                item.execution = prior
                ctx.activity("agent", f"{item.label} decision {prior.decision_id} already executed "
                                      f"({prior.execution_id}); not executed again", level="warn",
                             incident_id=item.incident.id)
            else:
                record = item.pipeline.execute(a, session)
                if record is None:
                    self.escalate(item, "execution refused at the execute-time re-check (see the audit trail)")
                    return
                item.execution = record  # from here on a retry never runs the action again
                if session.state == "auto":
                    ctx.metrics(ctx.counters.bump(auto_executed=1))
                if ctx.production is not None and item.verify_live:
                    effect = ctx.production.apply_action(item.incident.service, record.action)
                    item.effect = str(getattr(effect, "text", "") or "")
        record = item.execution
        text = f"executed {record.action} ({record.mode}, authorised by {record.authorised_by})"
        if item.effect:
            text += f"; simulated production: {item.effect}"
        self.notify(item, text)
        update_channel(ctx, item, text)
        if item.ticket:
            ctx.tickets.comment(item.ticket.key, f"{text}. {record.preview}")
        self.record_state(item, "executed", text)
        ctx.activity("agent", f"{item.label} {text}", incident_id=item.incident.id)
        with item.lock:
            item.state, item.step, item.due = "VERIFYING", "verify", time.monotonic()
        ctx.publish(item)

    def _sleep(self, seconds: float) -> None:
        if self.ctx.stop.wait(seconds):
            raise Stopping()

    def verify(self, item: WorkItem) -> None:
        ctx = self.ctx
        record = item.execution
        assert record is not None
        if not item.verify_live:
            item.outcome = "executed (dry run); a replay has no live telemetry to verify against"
            self.resolve(item, item.outcome)
            return
        baseline = item.baseline_error_rate
        threshold = min(0.10, max(0.05, 3 * baseline)) if baseline is not None else 0.10
        options = dict(baseline_error_rate=baseline, threshold=threshold,
                       window_seconds=ctx.config.verify_window_seconds,
                       poll_interval=ctx.config.verify_poll_seconds, sleep=self._sleep)
        pipeline_verify = getattr(item.pipeline, "verify", None)
        if callable(pipeline_verify):
            # The pipeline records the verification and the resolved / escalated state itself.
            result = pipeline_verify(item.assessment, record, **options)
            item.states_recorded = True
        else:
            from ..verification import verify_recovery

            self.record_state(item, "verifying", f"watching {item.incident.service} telemetry")
            result = _call_supported(verify_recovery, ctx.store, item.incident, action=record.action,
                                     catalogue=ctx.actions, executed_at=record.at, **options)
        item.verification = result
        before = "?" if result.error_rate_before is None else f"{result.error_rate_before:.1%}"
        after = "?" if result.error_rate_after is None else f"{result.error_rate_after:.1%}"
        if result.resolved:
            item.outcome = f"verified: error rate {after} since the fix (baseline {before}, threshold {threshold:.0%})"
            ctx.activity("agent", f"{item.label} {item.outcome}", incident_id=item.incident.id)
            with item.lock:
                item.state, item.step, item.due = "LEARNING", "learn", time.monotonic()
            ctx.publish(item)
            return
        rollback = getattr(result, "rollback_action", None)
        item.outcome = f"not recovered: {result.reason}"
        self.notify(item, f"verification failed: {result.reason}" +
                    (f". Proposed rollback (not run): {rollback}" if rollback else ""))
        self.escalate(item, f"verification failed: error rate still {after}")

    def learn(self, item: WorkItem) -> None:
        ctx = self.ctx
        a, record = item.assessment, item.execution
        assert a is not None and record is not None
        from ..learning import knowledge_base_counts, learn_runbook

        try:
            pipeline_learn = getattr(item.pipeline, "learn", None)
            if callable(pipeline_learn):  # a live agent writes the text; the deterministic text otherwise
                learned = pipeline_learn(a, record, item.verification)
            else:
                learned = _call_supported(learn_runbook, ctx.store, item.incident, a.gate, record,
                                          item.verification, audit=ctx.audit)
            if not learned:
                raise GovernorError("nothing to learn from an unverified resolution")
        except GovernorError as exc:
            item.outcome = f"{item.outcome}; not learned: {exc}"
        else:
            item.learned = learned
            item.outcome = f"{item.outcome}; learned {learned.get('id')} ({learned.get('status')})"
            ctx.activity("agent", f"{item.label} learned runbook {learned.get('id')} for {learned.get('recommended_action')} "
                                  f"({learned.get('status')})", incident_id=item.incident.id)
            ctx.metrics(ctx.counters.set(**kb_metrics(knowledge_base_counts(ctx.store))))
        self.resolve(item, item.outcome or "resolved")

    # --- transitions ---------------------------------------------------------------------

    def resolve(self, item: WorkItem, text: str) -> None:
        ctx = self.ctx
        with item.lock:
            item.state, item.step, item.closed_at = "RESOLVED", None, time.monotonic()
        if item.ticket:
            ctx.tickets.resolve(item.ticket.key, f"Resolved: {text}")
        self.notify(item, f"resolved: {text}")
        update_channel(ctx, item, f"resolved: {text}", final=True)
        if not item.states_recorded:
            self.record_state(item, "resolved", text)
        close_wait(ctx, item, "executed" if item.execution else "resolved", f"resolved: {text}")
        ctx.metrics(ctx.counters.bump(resolved=1))
        write_run_record(ctx, item)
        ctx.activity("agent", f"{item.label} RESOLVED", incident_id=item.incident.id)
        ctx.publish(item)

    def escalate(self, item: WorkItem, reason: str) -> None:
        ctx = self.ctx
        with item.lock:
            item.state, item.step, item.closed_at = "ESCALATED", None, time.monotonic()
        if item.outcome is None:
            item.outcome = reason
        ctx.metrics(ctx.counters.bump(escalated=1))
        update_channel(ctx, item, f"escalated: {reason}", final=True)
        for action in (lambda: None if item.states_recorded else self.record_state(item, "escalated", reason),
                       lambda: ctx.tickets.comment(item.ticket.key, f"Escalated: {reason}") if item.ticket else None):
            try:
                action()
            except Exception:  # escalation is the safe end state; reporting it must not loop
                ctx.logger.exception("while escalating %s", item.incident.id)
        close_wait(ctx, item, "executed" if item.execution else "escalated", f"escalated: {reason}")
        write_run_record(ctx, item)
        ctx.activity("agent", f"{item.label} ESCALATED: {reason}", level="warn", incident_id=item.incident.id)
        ctx.publish(item)

    def fail(self, item: WorkItem, exc: Exception) -> None:
        ctx = self.ctx
        item.attempts += 1
        item.error = f"{type(exc).__name__}: {exc}"
        ctx.logger.error("incident %s step %s failed (attempt %d): %s", item.incident.id, item.step,
                         item.attempts, item.error, exc_info=exc)
        if item.attempts >= ctx.config.max_attempts:
            self.escalate(item, f"gave up after {item.attempts} attempts: {item.error}")
            return
        delay = ctx.config.retry_seconds * 2 ** (item.attempts - 1)
        item.due = time.monotonic() + delay
        ctx.activity("agent", f"✗ {item.label} {item.step} failed: {item.error}; retry {item.attempts + 1}/"
                              f"{ctx.config.max_attempts} in {delay:g}s", level="error", incident_id=item.incident.id)
        ctx.publish(item)

    def notify(self, item: WorkItem, text: str) -> None:
        item.thread.append(ThreadEntry(at=utcnow(), author="governor", text=text, kind="notify"))
        if item.requested:
            try:
                self.ctx.channel.notify(item.incident.id, text)
            except GovernorError as exc:
                self.ctx.activity("agent", f"approval channel: {exc}", level="warn")

    def record_state(self, item: WorkItem, state: str, reason: str) -> None:
        record_incident_state(self.ctx, item, state, reason)


# --- slack (the approval loop) ------------------------------------------------------------------


class SlackWorker(Worker):
    """Reads replies from the approval channel and applies the core's approval rules to them.

    Each reply is applied, recorded (``pipeline.record_approval``) and acknowledged on the channel
    in one store transaction; when that fails, the session forgets the reply and the channel
    keeps it (Slack re-delivers it on the next step). Between replies it drives the retries of
    queued ticket calls, shows outages (``IntegrationWatch``) and approves learned runbooks
    asked for with the ``l`` key.
    """

    role = "slack"

    def __init__(self, ctx: WorkerContext) -> None:
        super().__init__(ctx)
        self.watch = IntegrationWatch(ctx)

    def step(self) -> None:
        ctx = self.ctx
        self.review_runbooks()
        flush = getattr(ctx.tickets, "flush", None)
        if callable(flush):
            try:
                flush()
            except GovernorError as exc:  # recorded by the adapter; shown by the watch below
                ctx.logger.warning("ticket retries: %s", exc)
        for item in ctx.board.awaiting_replies():
            for reply in pending_replies(ctx.channel, item.incident.id):
                self.handle(item, reply.user, reply.text, key=reply.key)
        self.watch.check()
        wait = getattr(ctx.channel, "wait", None)
        if callable(wait):
            wait(ctx.config.approvals_interval)
        else:
            ctx.stop.wait(ctx.config.approvals_interval)

    def handle(self, item: WorkItem, user: str, text: str, *, key: str | None = None) -> ApprovalEvent | None:
        """Apply one reply. ``key`` is the channel's id for it, acknowledged with the record."""
        ctx = self.ctx
        pause: str | None = None
        with item.lock:
            session, a = item.session, item.assessment
            if session is None or a is None:
                return None
            before = (session.state, session.authorised_by, session.override_reason, len(session.events))
            try:
                with item.pipeline.store.atomic():
                    if item.state in REPLY_STATES:
                        event = session.apply(user, text, at=utcnow())
                    else:
                        # Too late to change anything; still recorded, like every reply.
                        event = ApprovalEvent(user=user, text=text, command=parse_command(text)[0], outcome="ignored",
                                              reason=f"arrived after the incident moved to {item.state}", at=utcnow())
                        session.events.append(event)
                    item.pipeline.record_approval(a, session)
                    if key is not None:
                        ack_reply(ctx.channel, item.incident.id, key)
            except BaseException:
                # Rolled back: the session forgets the reply as well (the channel still has it).
                session.state, session.authorised_by, session.override_reason = before[:3]
                del session.events[before[3]:]
                raise
            item.thread.append(ThreadEntry(at=event.at or utcnow(), author=user, text=text, kind="reply",
                                           outcome=event.outcome))
            if event.outcome == "accepted" and item.state in REPLY_STATES:
                pause = self._transition(item, event)
            elif event.outcome == "refused":
                ctx.metrics(ctx.counters.bump(refusals=1))
                pause = f"{item.label}: APPROVE refused, only FORCE_OVERRIDE <reason> proceeds"
        answer = event.reason or event.outcome
        self._notify(item, answer)
        if item.ticket:
            ctx.tickets.comment(item.ticket.key, f"{user}: {text!r} → {event.outcome}: {answer}")
        level = "warn" if event.outcome in ("refused", "unauthorized", "invalid") else "info"
        ctx.activity("slack", f"{item.label} {user}: {text} → {event.outcome}", level=level,
                     incident_id=item.incident.id)
        ctx.publish(item)
        ctx.board.wake()
        if pause:
            ctx.pauser.pause(pause)
            with item.lock:
                if item.state == "READY_TO_EXECUTE" and item.step is None:
                    item.step, item.due = "execute", time.monotonic()
            ctx.board.wake()
        return event

    # --- learned runbooks (the l key) ------------------------------------------------------

    def review_runbooks(self) -> None:
        while True:
            try:
                incident_id, user = self.ctx.reviews.get_nowait()
            except queue.Empty:
                return
            self.approve_runbook(incident_id, user)

    def approve_runbook(self, incident_id: str, user: str) -> list[dict[str, Any]]:
        """Approve the learned runbook(s) of the incident waiting for review, as ``user``, when
        ``user`` may decide on that incident (audited either way); returns the approved entries."""
        from ..learning import approve_runbook, knowledge_base_counts, review_queue

        ctx = self.ctx
        item = ctx.board.get(incident_id)
        if item is None:
            ctx.activity("slack", f"runbook review: {incident_id} is not on the board", level="warn")
            return []
        store = item.pipeline.store
        pending = [d for d in review_queue(store, limit=10_000) if d.get("incident_id") == incident_id]
        if not pending:
            ctx.activity("slack", f"{item.label}: no learned runbook waits for review", level="warn",
                         incident_id=incident_id)
            return []
        if not item.approvals.may_decide(user):
            reason = f"{user} is not a configured approver"
            if ctx.audit is not None:
                ctx.audit.record("workflow_events", {
                    "kind": "runbook_review_refused", "incident_id": incident_id,
                    "runbook_ids": [d["id"] for d in pending], "user": user, "reason": reason,
                    "at": utcnow().isoformat()})
            ctx.activity("slack", f"✗ {item.label} runbook approval refused: {reason}", level="warn",
                         incident_id=incident_id)
            return []
        approved = []
        for doc in pending:
            try:
                approved.append(approve_runbook(store, str(doc["id"]), user, audit=ctx.audit))
            except InputError as exc:  # reviewed meanwhile (the CLI, another dashboard)
                ctx.activity("slack", f"{item.label}: {exc}", level="warn", incident_id=incident_id)
        for doc in approved:
            if item.learned is None or item.learned.get("id") == doc["id"]:
                item.learned = doc
            ctx.activity("slack", f"{item.label} runbook {doc['id']} ({doc.get('recommended_action')}) approved by "
                                  f"{user}: retrievable from now on", incident_id=incident_id)
        ctx.metrics(ctx.counters.set(**kb_metrics(knowledge_base_counts(ctx.store))))
        ctx.publish(item)
        return approved

    def _transition(self, item: WorkItem, event: ApprovalEvent) -> str | None:
        ctx = self.ctx
        if event.command in ("APPROVE", "FORCE_OVERRIDE"):
            item.state, item.step, item.due = "READY_TO_EXECUTE", "execute", time.monotonic()
            if event.command == "FORCE_OVERRIDE":
                ctx.metrics(ctx.counters.bump(overrides=1))
                if ctx.pauser.enabled:
                    item.step = None  # a key moment: the execution waits for the pause to end
                return f"{item.label}: FORCE_OVERRIDE by {event.user} accepted, logged permanently"
            ctx.metrics(ctx.counters.bump(approved=1))
        elif event.command == "HOLD":
            item.state, item.step = "HELD", None
            ctx.metrics(ctx.counters.bump(held=1))
            record_incident_state(ctx, item, "held", f"HOLD by {event.user}")
        elif event.command == "REJECT":
            item.state, item.step, item.closed_at = "REJECTED", None, time.monotonic()
            ctx.metrics(ctx.counters.bump(rejected=1))
            if item.ticket:
                ctx.tickets.resolve(item.ticket.key, f"Rejected by {event.user}: {event.text}")
            update_channel(ctx, item, f"rejected by {event.user}", final=True)
            close_wait(ctx, item, "rejected", f"rejected by {event.user}")
            write_run_record(ctx, item)
        return None

    def _notify(self, item: WorkItem, text: str) -> None:
        item.thread.append(ThreadEntry(at=utcnow(), author="governor", text=text, kind="notify"))
        try:
            self.ctx.channel.notify(item.incident.id, text)
        except GovernorError as exc:
            self.ctx.activity("slack", f"approval channel: {exc}", level="warn")



# --- the scripted on-call -----------------------------------------------------------------------


def autopilot_replies(gate: Any, action: str | None) -> list[str]:
    """What the scripted on-call answers for a gate decision: nothing for a passed gate, REJECT
    for an unsafe plan, APPROVE then FORCE_OVERRIDE where APPROVE is refused, APPROVE otherwise."""
    if gate.decision == "execute":
        return []
    unsafe = [r for r in gate.rule_ids if r in UNSAFE_RULES]
    if unsafe:
        return [f"REJECT autopilot: {', '.join(unsafe)}; not running {action or 'the plan'}, paging the service owner"]
    if gate.approval_required == "force_override":
        return ["APPROVE", f"FORCE_OVERRIDE autopilot walkthrough: on-call confirms {action} is the documented fix"]
    return ["APPROVE"]


class Autopilot(threading.Thread):
    """A scripted on-call for unattended walkthroughs: answers requests in the local inbox.

    Args:
        inbox: the local inbox (it needs ``requests``, ``thread`` and ``push``).
        user: who the on-call is (a configured approver, or its replies are ``unauthorized``).
        scripts: fixed replies ``(user, text)`` per incident id (scenario replays); other
            incidents get ``autopilot_replies`` when ``answer_all``.
        think_seconds: the pause before each reply.
    """

    def __init__(self, inbox: Any, user: str, stop: threading.Event, *, think_seconds: float = 1.5,
                 scripts: dict[str, list[tuple[str, str]]] | None = None, answer_all: bool = True) -> None:
        super().__init__(name="governor-autopilot", daemon=True)
        self.inbox = inbox
        self.user = user
        self.stop = stop
        self.think = think_seconds
        self.scripts = dict(scripts or {})
        self.answer_all = answer_all
        self._plans: dict[str, deque[tuple[str, str]]] = {}
        self._next: dict[str, float] = {}
        self._answered: dict[str, int] = {}

    def run(self) -> None:
        while not self.stop.wait(0.3):
            try:
                self.tick(time.monotonic())
            except GovernorError:
                continue  # the request closed meanwhile; nothing to answer

    def tick(self, now: float) -> None:
        for request in self.inbox.requests():
            incident_id = request.incident.id
            plan = self._plans.get(incident_id)
            if plan is None:
                if incident_id in self.scripts:
                    replies = self.scripts[incident_id]
                elif self.answer_all:
                    replies = [(self.user, t) for t in autopilot_replies(request.gate, request.gate.proposed_action)]
                else:
                    replies = []
                plan = self._plans[incident_id] = deque(replies)
                self._next[incident_id] = now + self.think
                self._answered[incident_id] = -1  # the first reply waits for nobody
            if not plan or now < self._next[incident_id]:
                continue
            thread = self.inbox.thread(incident_id)
            # Wait for the governor's answer to the previous reply (or give up waiting after 8 s).
            if len(thread) <= self._answered[incident_id] and now < self._next[incident_id] + 8:
                continue
            user, text = plan.popleft()
            self.inbox.push(incident_id, user, text)
            self._answered[incident_id] = len(self.inbox.thread(incident_id))
            self._next[incident_id] = now + self.think


def integrations_event(items: list[tuple[str, str, bool, str]]) -> IntegrationsUpdated:
    from .state import Integration

    return IntegrationsUpdated(tuple(Integration(role=r, name=n, ok=ok, detail=d) for r, n, ok, d in items))

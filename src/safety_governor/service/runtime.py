"""Wiring the incident service: its store, the governor over it, tickets, inbox, telemetry and
workers. Every face (the dashboard, ``--no-tui``, headless ``serve``) runs this same service.

The service runs on its own embedded store file (``output/governor.db`` unless
``GOVERNOR_STORE_PATH`` says otherwise), seeded at start from ``data/`` (knowledge only: the
telemetry comes from the simulated production), and audits to ``output/*.jsonl``.

Approvals are durable: a dashboard started again over the same store file resumes, before its
workers start, every incident that was waiting for a human (``durability.resume``), on the same
Slack thread or in the local inbox, and never executes a decision twice.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..adapters.sqlite_retention import LogRetention
from ..adapters.store_sqlite import SQLiteStore
from ..adapters.tickets_local import LocalTickets
from ..bootstrap import (
    Governor,
    audit_status,
    build,
    build_approval_channel,
    local_inbox,
    build_approval_policy,
    build_tickets,
    open_store,
)
from ..config import Settings
from ..errors import GovernorError, InputError
from ..knowledge import load_knowledge_file, seed_store
from .agent import AgentWorker
from .approval_loop import SlackWorker
from .autopilot import Autopilot
from .board import Board, Counters, Pauser, WorkItem
from .detection import DetectionConfig
from .durability import resume
from .events import TERMINAL_STATES, EventBus, Integration, IntegrationsUpdated
from .guardrail_watch import GuardrailWatch, switch_freeze
from .logtail import open_log_tail
from .records import kb_metrics
from .store_lock import StoreLock
from .telemetry import STORYLINES, TrafficSimulator
from .telemetry_workers import AuditWorker, LogsWorker, ReplayItem
from .worker import Worker, WorkerConfig, WorkerContext

MODES = ("fast", "present", "live")
# What fast and present mode switch off, whatever .env configures: no account, no network.
OFFLINE: dict[str, Any] = {
    "elastic_url": None, "elastic_cloud_id": None, "agent_backend": "offline", "executor": "dry_run",
    "cdct_api_url": None, "ddft_api_url": None, "eect_api_url": None, "slack_bot_token": None,
    "slack_channel": None, "slack_app_token": None, "jira_url": None, "jira_email": None, "jira_api_token": None,
    "jira_project_key": None,
}


def offline_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={k: v for k, v in OFFLINE.items() if k in Settings.model_fields})


@dataclass(frozen=True)
class Options:
    """How the dashboard runs (the command line, parsed).

    Args:
        mode: ``fast`` (default), ``present`` (pauses at the key moments, slower) or ``live``.
        autopilot: a scripted on-call answers approval requests.
        duration: exit after this many seconds (``None``: until quit, or for ``--no-tui`` until
            the storyline is over).
        scenarios: scenario files or folders to replay through the dashboard.
        storyline: the simulated faults (``default`` or ``none``).
        hold_seconds: the auto-execution hold window (default 2.5 s fast, 5 s present).
        pause_seconds: how long a present-mode pause waits for the space key.
        rate: simulated requests per second.
        seed: the simulation's random seed.
        prefill_seconds: steady traffic written before the start, as the detector's baseline.
        read_only: a viewer: shows the store's telemetry, takes no lock, writes nothing.
    """

    mode: str = "fast"
    autopilot: bool = False
    duration: float | None = None
    tui: bool = True
    scenarios: tuple[Path, ...] = ()
    storyline: str = "default"
    hold_seconds: float | None = None
    pause_seconds: float = 20.0
    rate: float = 24.0
    seed: int = 7
    prefill_seconds: float = 150.0
    read_only: bool = False

    def worker_config(self) -> WorkerConfig:
        present = self.mode == "present"
        hold = self.hold_seconds if self.hold_seconds is not None else (5.0 if present else 2.5)
        return WorkerConfig(hold_seconds=hold, pause_seconds=self.pause_seconds,
                            verify_window_seconds=20.0 if present else 12.0, detection=DetectionConfig())


class TrafficWorker(Worker):
    """The simulated production's clock: writes its traffic every half second (offline only)."""

    role = "traffic"

    def __init__(self, ctx: WorkerContext, world: TrafficSimulator, interval: float = 0.5) -> None:
        super().__init__(ctx)
        self.world = world
        self.interval = interval

    def step(self) -> None:
        self.world.tick()
        self.ctx.stop.wait(self.interval)


@dataclass
class Runtime:
    """Everything the service runs; ``start``, then ``stop`` and ``close``."""

    settings: Settings
    options: Options
    bus: EventBus
    governor: Governor
    store: Any
    tickets: Any  # the TicketPort
    inbox: Any  # the ApprovalChannel (keys push into it when it has ``push``)
    board: Board
    counters: Counters
    pauser: Pauser
    stop_event: threading.Event
    context: WorkerContext
    workers: list[threading.Thread]
    world: TrafficSimulator | None
    audit_worker: AuditWorker
    started: float = field(default_factory=time.monotonic)
    audit_status: tuple[bool, str] = (True, "not checked")
    _closables: list[Any] = field(default_factory=list)

    @classmethod
    def build(cls, settings: Settings, options: Options, *, bus: EventBus | None = None, channel: Any = None,
              tickets: Any = None) -> Runtime:
        """Wire everything. Fast and present mode are offline whatever the environment says (the
        embedded store, the offline agent, local tickets, the local inbox, a dry-run executor
        acting on the simulated production); live mode takes the configured integrations from
        ``bootstrap`` and real telemetry from the store. ``channel`` and ``tickets`` replace the
        approval channel and the ticket port (tests; the runtime closes them)."""
        bus = bus or EventBus()
        closables: list[Any] = []
        live = options.mode == "live"
        if not live:
            settings = offline_settings(settings)
        viewer = options.read_only
        if viewer and options.scenarios:
            raise InputError("--read-only watches a store; it cannot replay scenarios")
        # One active governor per embedded store file; a viewer only reads, so it takes no lock.
        lock = None if live or viewer else StoreLock(settings.resolved_store_path)
        try:
            store = open_store(settings) if live else SQLiteStore(settings.resolved_store_path)
        except BaseException:
            if lock is not None:
                lock.close()
            raise
        closables.append(store)
        if lock is not None:
            closables.append(lock)  # released last, after the store is closed
        try:
            if not live and not viewer:
                knowledge = load_knowledge_file(settings.data_dir / "sample_data.json")
                seed_store(store, {**knowledge, "logs": [], "incidents": []}, source=str(settings.data_dir))
            governor = build(settings, store=store, tool_transport="mcp-inprocess")
            closables.insert(0, governor)
            replaying = bool(options.scenarios)
            if live:
                if tickets is None:
                    tickets = build_tickets(settings, store, audit=governor.audit)
                if channel is None:
                    channel = build_approval_channel(settings, store, audit=governor.audit)
                approvals = build_approval_policy(settings)
                start = getattr(channel, "start", None)
                if callable(start):
                    start()
            else:
                if tickets is None:
                    tickets = LocalTickets(":memory:" if replaying or viewer else settings.resolved_store_path)
                if channel is None:
                    channel = local_inbox(None if replaying or viewer else store, audit=governor.audit)
                approvals = build_approval_policy(settings, ttl_seconds=governor.policy.approval_ttl_seconds)
            for resource in (channel, tickets):
                if callable(getattr(resource, "close", None)):
                    closables.insert(0, resource)
            world = None
            if not live and not viewer:
                storyline = STORYLINES["none" if replaying else options.storyline]
                world = TrafficSimulator(store, rate=options.rate, storyline=storyline, seed=options.seed,
                                         time_scale=1.6 if options.mode == "present" else 1.0)
                world.prefill(options.prefill_seconds)
            config = replace(options.worker_config(), agent_concurrency=settings.agent_concurrency)
            stop = threading.Event()
            board = Board()
            counters = Counters()
            pauser = Pauser(bus, stop, enabled=options.mode == "present", timeout=options.pause_seconds)
            ctx = WorkerContext(store=store, tickets=tickets, channel=channel, bus=bus, board=board, counters=counters,
                                pauser=pauser, stop=stop, config=config,
                                owner=f"dashboard@{socket.gethostname()}:{os.getpid()}", audit=governor.audit,
                                actions=getattr(governor, "actions", None), production=world, approvals=approvals)
            replays, scripts = scenario_replays(options.scenarios, settings, governor, closables) if replaying \
                else ([], {})
            logs_tail = open_log_tail(store, backfill_seconds=config.bucket_seconds * config.series_points)
            closables.append(logs_tail)
            audit_tail = open_log_tail(store, backfill_seconds=config.detection.window_seconds
                                       + config.detection.baseline_seconds)
            closables.append(audit_tail)
            audit_worker = AuditWorker(ctx, audit_tail, pipeline=governor.pipeline, approvals=approvals,
                                       replays=replays)
            # A long-running service keeps its embedded store bounded (LOG_RETENTION_HOURS, WAL checkpoints).
            retention = LogRetention(store, settings.log_retention_hours) \
                if isinstance(store, SQLiteStore) and store.path != ":memory:" and not viewer else None
            workers: list[threading.Thread] = [LogsWorker(ctx, logs_tail, retention=retention), audit_worker,
                                               AgentWorker(ctx), SlackWorker(ctx), GuardrailWatch(ctx)]
            if viewer:  # the telemetry only: a viewer opens, works and answers nothing
                workers = workers[:1]
            if world is not None:
                workers.insert(0, TrafficWorker(ctx, world))
            if (options.autopilot or scripts) and hasattr(channel, "push"):
                workers.append(Autopilot(channel, settings.local_user, stop,
                                         think_seconds=3.0 if options.mode == "present" else 1.0,
                                         scripts=scripts, answer_all=options.autopilot))
        except BaseException:
            for c in closables:
                try:
                    c.close()
                except Exception:  # the original error matters, not a failing close
                    pass
            raise
        runtime = cls(settings=settings, options=options, bus=bus, governor=governor, store=store, tickets=tickets,
                      inbox=channel, board=board, counters=counters, pauser=pauser, stop_event=stop, context=ctx,
                      workers=workers, world=world, audit_worker=audit_worker, _closables=closables)
        runtime.audit_status = audit_status(settings, governor.audit)
        runtime.post_status()
        return runtime

    def post_status(self) -> None:
        from ..learning import knowledge_base_counts

        g = self.governor
        try:
            counts = knowledge_base_counts(self.store)
        except GovernorError:
            counts = {}
        self.context.metrics(self.counters.set(**kb_metrics(counts)))

        def ready(thing: Any, default: str = "") -> tuple[bool, str]:
            check = getattr(thing, "check", None)
            if not callable(check):
                return True, default
            try:
                r = check()
            except GovernorError as exc:
                return False, str(exc)
            return bool(r.ok), str(r.reason or default)

        store_ok, store_detail = ready(self.store, f"{Path(self.settings.resolved_store_path).name}")
        if isinstance(self.store, SQLiteStore):
            store_detail = (f"{Path(self.store.path).name} · {counts.get('runbooks', 0)} runbooks · "
                            f"{counts.get('evidence', 0)} evidence")
        if self.options.read_only:
            store_detail += " · read-only viewer"
        tickets_ok, tickets_detail = ready(self.tickets)
        channel_ok, channel_detail = ready(self.inbox)
        channel = str(getattr(self.inbox, "name", "?")) + (" + autopilot" if self.options.autopilot else "")
        store_name = "sqlite" if isinstance(self.store, SQLiteStore) else str(getattr(self.store, "name", "store"))
        self.bus.post(integrations_event([
            ("store", store_name, store_ok, store_detail),
            ("tickets", str(getattr(self.tickets, "name", "?")), tickets_ok, tickets_detail),
            ("agent", f"{g.agent.name}/{g.agent.model}", True, f"tools via {getattr(g.tool_port, 'transport', '?')}"),
            ("approvals", channel, channel_ok, channel_detail),
            ("executor", g.executor.name, True, "→ simulated production" if self.world else ""),
            ("audit", "jsonl", *self.audit_status),
        ]))

    def resume(self) -> list[WorkItem]:
        """Put the incidents that wait for a human in the store back on the board (after a
        restart); idempotent. A scenario replay runs in isolated stores and resumes nothing."""
        if self.options.scenarios:
            return []
        try:
            return resume(self.context, self.governor.pipeline, self.audit_worker.approvals)
        except GovernorError as exc:  # the store cannot answer: shown; the waits stay for the next start
            self.context.activity("slack", f"✗ cannot resume the pending approvals: {exc}", level="error")
            return []

    def freeze(self, on: bool, reason: str, user: str) -> str:
        """The ``F`` key: switch the kill switch (overriders only, audited); returns the hint."""
        if self.options.read_only:
            return "a read-only viewer writes nothing: python -m safety_governor freeze on|off"
        # ``user`` is the keys' principal (``os:<account>``): the approvers file maps it to a user.
        approvals = self.audit_worker.approvals
        return switch_freeze(self.context, tuple(approvals.overriders), on=on, reason=reason,
                             user=approvals.user_of(user))

    def request_review(self, incident_id: str, user: str) -> None:
        """The ``l`` key: ask the approval loop to approve the incident's learned runbook."""
        self.context.reviews.put((incident_id, user))

    def start(self) -> None:
        self.started = time.monotonic()
        if not self.options.read_only:
            self.resume()
        for worker in self.workers:
            worker.start()

    def drain(self, reason: str = "draining") -> None:
        """Open no new incident and start no new step; what runs finishes when ``stop`` joins,
        and what waits (approvals, verification) stays durable for the next start."""
        self.context.draining.set()
        waiting = sum(1 for i in self.board.items() if i.state not in TERMINAL_STATES)
        self.context.activity("agent", f"{reason}: no new incidents or steps; {waiting} open incident(s) stay "
                                       "durable in the store for the next start", level="warn")

    def stop(self, timeout: float = 5.0) -> None:
        self.stop_event.set()
        self.pauser.resume()
        self.board.wake()
        deadline = time.monotonic() + timeout
        for worker in self.workers:
            if worker.is_alive():
                worker.join(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        for c in list(self._closables):
            try:
                c.close()
            except Exception:  # closing is best effort; the audit trail is already flushed
                pass
        self._closables = []

    def finished(self) -> bool:
        """The storyline (or the replay) is over and every incident reached a final state."""
        world_done = self.world is None or self.world.finished()
        return world_done and self.audit_worker.replays_left == 0 and self.board.settled()

    def summary(self) -> str:
        items = self.board.items()
        states: dict[str, int] = {}
        for item in items:
            states[item.state] = states.get(item.state, 0) + 1
        m = self.counters.metrics
        detail = ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items())) or "none"
        tickets = [i.ticket.key for i in items if i.ticket]
        span = f" ({tickets[0]}…{tickets[-1]})" if len(tickets) > 1 else f" ({tickets[0]})" if tickets else ""
        return (f"Safety Governor: {len(items)} incident(s): {detail}{span}. Unsafe actions blocked "
                f"{m.unsafe_blocked}, auto-executed {m.auto_executed}, overrides {m.overrides}, refusals "
                f"{m.refusals}. Audit trail: {self.settings.output_dir}/*.jsonl")


def scenario_replays(
    paths: tuple[Path, ...], settings: Settings, governor: Governor, closables: list[Any]
) -> tuple[list[ReplayItem], dict[str, list[tuple[str, str]]]]:
    """One isolated governor per scenario (its own in-memory store, scripted agent replies),
    auditing into the dashboard's trail; the scenario's approvals become scripted replies."""
    from ..agents.offline import OfflineAgent
    from ..agents.scripted import ScriptedAgent
    from ..replay import (
        base_catalogue,
        load_scenario,
        scenario_catalogue,
        scenario_files,
        scenario_policy,
        scenario_store,
    )

    scenarios = [load_scenario(p) for p in scenario_files(paths)]
    if not scenarios:
        raise InputError("no scenarios to replay")
    base = load_knowledge_file(settings.data_dir / "sample_data.json")
    actions = base_catalogue(settings)
    replays: list[ReplayItem] = []
    scripts: dict[str, list[tuple[str, str]]] = {}
    seen: dict[str, int] = {}
    for scenario in scenarios:
        incident = scenario.incident
        seen[incident.id] = seen.get(incident.id, 0) + 1
        if seen[incident.id] > 1:  # two scenarios may reuse an incident id; the queue needs distinct ones
            incident = incident.model_copy(update={"id": f"{incident.id}-{seen[incident.id]}"})
        store, gate_policy = scenario_store(scenario, base, settings)  # knowledge and guardrail state
        closables.append(store)
        offline = OfflineAgent(model=settings.agent_model)
        replies = scenario.agent.model_dump(exclude_none=True) if scenario.agent else {}
        agent = ScriptedAgent(replies, fallback=offline) if replies else offline
        isolated = build(settings, store=store, agent=agent, audit=governor.audit,
                         actions=scenario_catalogue(scenario, actions), policy=gate_policy)
        # Replayed on the dashboard's clock: a reply's after_seconds is not simulated here.
        policy = scenario_policy(scenario, settings, isolated.policy.approval_ttl_seconds)
        replays.append(ReplayItem(incident=incident, pipeline=isolated.pipeline, approvals=policy, store=store))
        if scenario.approvals:
            scripts[incident.id] = [(r.user, r.text) for r in scenario.approvals]
    return replays, scripts


def integrations_event(items: list[tuple[str, str, bool, str]]) -> IntegrationsUpdated:
    return IntegrationsUpdated(tuple(Integration(role=r, name=n, ok=ok, detail=d) for r, n, ok, d in items))

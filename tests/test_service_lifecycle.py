"""The incident service's lifecycle: the transition table, audited transitions, concurrent agent
phases, and verification as scheduled polls (no worker sleeps through the window)."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest

from safety_governor.adapters.audit_jsonl import MemoryAudit
from safety_governor.adapters.inbox_local import LocalInbox
from safety_governor.adapters.store_sqlite import SQLiteStore
from safety_governor.adapters.tickets_local import LocalTickets
from safety_governor.agents.offline import OfflineAgent
from safety_governor.agents.scripted import LatencyAgent
from safety_governor.approvals import ApprovalPolicy
from safety_governor.bootstrap import build
from safety_governor.config import Settings
from safety_governor.knowledge import seed_store
from safety_governor.models import Incident
from safety_governor.service.agent import AgentWorker
from safety_governor.service.board import Board, Counters, Pauser, WorkItem
from safety_governor.service.events import STATES, TERMINAL_STATES, EventBus
from safety_governor.service.lifecycle import TRANSITIONS, IllegalTransition, move
from safety_governor.service.worker import WorkerConfig, WorkerContext

CHECKOUT = Incident(id="inc-checkout", service="checkout-web", severity="medium", pattern="5xx_spike",
                    summary="5xx spike: 21% of POST /checkout/confirm failing (500), right after release "
                            "2026.11.26-2 deploy",
                    symptoms="HTTP 500 x9 on POST /checkout/confirm; errors began after release 2026.11.26-2 deploy")
PAYMENTS = Incident(id="inc-payments", service="payments-api", severity="high", pattern="5xx_spike",
                    summary="5xx spike: 45% of POST /api/v1/checkout failing (503/500)",
                    symptoms="HTTP 503 x6, 500 x4 on POST /api/v1/checkout; timeout latency")


class CountingAgent(LatencyAgent):
    """Records how many phases run at once, overall and per incident."""

    def __init__(self, seconds: float) -> None:
        super().__init__(OfflineAgent(), seconds)
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0
        self.per_incident: dict[str, int] = defaultdict(int)
        self.overlap_within_an_incident = False

    def converse(self, phase, prompt, *, incident, tools, context):
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
            self.per_incident[incident.id] += 1
            if self.per_incident[incident.id] > 1:
                self.overlap_within_an_incident = True
        try:
            return super().converse(phase, prompt, incident=incident, tools=tools, context=context)
        finally:
            with self.lock:
                self.now -= 1
                self.per_incident[incident.id] -= 1


def service(tmp_path: Path, knowledge: dict, *, agent=None, **config) -> tuple[WorkerContext, object, MemoryAudit]:
    store = SQLiteStore(tmp_path / "governor.db")
    seed_store(store, {**knowledge, "logs": [], "incidents": []}, source="test")
    audit = MemoryAudit()
    governor = build(Settings(output_dir=tmp_path), store=store, audit=audit, agent=agent)
    bus, stop = EventBus(), threading.Event()
    options = dict(hold_seconds=0.0, verify_window_seconds=1.0, verify_poll_seconds=0.05, retry_seconds=0.0)
    ctx = WorkerContext(store=store, tickets=LocalTickets(), channel=LocalInbox(), bus=bus, board=Board(),
                        counters=Counters(), pauser=Pauser(bus, stop, enabled=False, timeout=1), stop=stop,
                        config=WorkerConfig(**{**options, **config}), owner="test", audit=audit,
                        actions=governor.actions)
    return ctx, governor, audit


def add(ctx: WorkerContext, governor, incident: Incident) -> WorkItem:
    item = WorkItem(incident=incident, pipeline=governor.pipeline, approvals=ApprovalPolicy.of(("oncall",), ("oncall",)),
                    baseline_error_rate=0.0)
    ctx.store.claim_incident(incident, ctx.owner)
    ctx.board.add(item)
    ctx.board.wake()
    return item


def wait_for(done, timeout: float = 20.0) -> float:
    start = time.monotonic()
    while not done():
        assert time.monotonic() - start < timeout, "timed out"
        time.sleep(0.01)
    return time.monotonic() - start


def test_the_table_names_every_state_and_final_states_have_no_way_out() -> None:
    assert set(TRANSITIONS) == set(STATES)
    assert all(TRANSITIONS[s] == frozenset() for s in TERMINAL_STATES)
    # Nothing reaches EXECUTING but a decision that is ready to execute.
    assert [s for s, targets in TRANSITIONS.items() if "EXECUTING" in targets] == ["READY_TO_EXECUTE"]


def test_a_transition_the_table_forbids_is_refused_and_leaves_the_incident_where_it_was(tmp_path, knowledge) -> None:
    ctx, governor, audit = service(tmp_path, knowledge)
    item = add(ctx, governor, CHECKOUT)
    with pytest.raises(IllegalTransition, match="DETECTED → EXECUTING"):
        move(ctx, item, "EXECUTING", "skip the gate")
    move(ctx, item, "ANALYZING", "assessing")
    move(ctx, item, "PENDING_APPROVAL", "blocked")
    with pytest.raises(IllegalTransition):
        move(ctx, item, "VERIFYING", "pretend it ran")
    assert item.state == "PENDING_APPROVAL"
    assert [(r["from"], r["to"]) for r in audit.records["workflow_events"] if r["kind"] == "transition"] == [
        ("DETECTED", "ANALYZING"), ("ANALYZING", "PENDING_APPROVAL")]


def test_every_transition_of_an_incident_is_audited_in_order(tmp_path, knowledge) -> None:
    ctx, governor, audit = service(tmp_path, knowledge)
    item = add(ctx, governor, CHECKOUT)
    agent = AgentWorker(ctx)
    try:
        while item.state not in TERMINAL_STATES:
            agent.run_due()
    finally:
        agent.close()
    path = [(r["from"], r["to"]) for r in audit.records["workflow_events"]
            if r["kind"] == "transition" and r["incident_id"] == CHECKOUT.id]
    # No traffic after the fix: the window ends unresolved and the incident escalates.
    assert path == [("DETECTED", "ANALYZING"), ("ANALYZING", "READY_TO_EXECUTE"), ("READY_TO_EXECUTE", "EXECUTING"),
                    ("EXECUTING", "VERIFYING"), ("VERIFYING", "ESCALATED")]


@pytest.mark.parametrize("limit", [1, 3])
def test_agent_phases_of_different_incidents_run_concurrently_up_to_the_limit_and_in_order_within_one(
        tmp_path, knowledge, limit) -> None:
    agent_backend = CountingAgent(0.1)
    ctx, governor, _ = service(tmp_path, knowledge, agent=agent_backend, agent_concurrency=limit)
    items = [add(ctx, governor, CHECKOUT.model_copy(update={"id": f"inc-{n}", "severity": "critical"}))
             for n in range(4)]
    worker = AgentWorker(ctx)
    worker.start()
    try:
        wait_for(lambda: all(i.state == "PENDING_APPROVAL" for i in items))
    finally:
        ctx.stop.set()
        worker.join(10)
    assert agent_backend.peak == limit
    assert not agent_backend.overlap_within_an_incident


def test_an_incident_detected_while_another_is_verifying_gets_its_decision_without_the_window(
        tmp_path, knowledge) -> None:
    ctx, governor, _ = service(tmp_path, knowledge, verify_window_seconds=6.0, verify_poll_seconds=0.2,
                               agent_concurrency=1)
    checkout = add(ctx, governor, CHECKOUT)
    worker = AgentWorker(ctx)
    worker.start()
    try:
        wait_for(lambda: checkout.state == "VERIFYING")
        payments = add(ctx, governor, PAYMENTS)
        took = wait_for(lambda: payments.state == "PENDING_APPROVAL")
        assert checkout.state == "VERIFYING"  # still inside its 6 s window
        assert took < 3.0
    finally:
        ctx.stop.set()
        worker.join(10)


def test_two_services_on_one_store_work_each_incident_exactly_once_the_claim_arbitrates(tmp_path, knowledge) -> None:
    """Two governors over one shared store (as on Elasticsearch, where no file lock applies): both
    are offered the same incidents; the create-only claim gives each to exactly one of them."""
    from safety_governor.service.telemetry_workers import AuditWorker, ReplayItem

    ctx_a, governor, audit = service(tmp_path, knowledge, agent_concurrency=2)
    bus, stop = EventBus(), threading.Event()
    ctx_b = WorkerContext(store=ctx_a.store, tickets=LocalTickets(), channel=LocalInbox(), bus=bus, board=Board(),
                          counters=Counters(), pauser=Pauser(bus, stop, enabled=False, timeout=1), stop=stop,
                          config=ctx_a.config, owner="governor-b", audit=audit, actions=governor.actions)
    policy = ApprovalPolicy.of(("oncall",), ("oncall",))
    incidents = [PAYMENTS.model_copy(update={"id": f"inc-shared-{n}"}) for n in range(6)]

    def offer(ctx: WorkerContext) -> None:
        worker = AuditWorker(ctx, tail=None, pipeline=governor.pipeline, approvals=policy)  # type: ignore[arg-type]
        for incident in incidents:
            worker.open_replay(ReplayItem(incident=incident, pipeline=governor.pipeline, approvals=policy,
                                          store=ctx.store))

    offers = [threading.Thread(target=offer, args=(c,)) for c in (ctx_a, ctx_b)]
    for t in offers:
        t.start()
    for t in offers:
        t.join(30)
    agents = [AgentWorker(c) for c in (ctx_a, ctx_b)]
    for a in agents:
        a.start()
    try:
        wait_for(lambda: all(i.state == "PENDING_APPROVAL" for c in (ctx_a, ctx_b) for i in c.board.items()))
    finally:
        for c in (ctx_a, ctx_b):
            c.stop.set()
        for a in agents:
            a.join(10)
    worked = [i.incident.id for c in (ctx_a, ctx_b) for i in c.board.items()]
    assert sorted(worked) == sorted(i.id for i in incidents)  # each by exactly one governor
    decisions = [r["incident_id"] for r in audit.records["gate_decisions"]] if "gate_decisions" in audit.records else \
        [r["incident_id"] for r in audit.records["workflow_events"] if r.get("kind") == "gate_decision"]
    assert sorted(decisions) == sorted(i.id for i in incidents)

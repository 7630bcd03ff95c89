"""The dashboard's workers without a screen: real store, real pipeline, local tickets and inbox,
and the simulated production writing telemetry on its own thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from safety_governor.adapters.audit_jsonl import MemoryAudit
from safety_governor.adapters.inbox_local import LocalInbox
from safety_governor.adapters.store_sqlite import SQLiteStore
from safety_governor.adapters.tickets_local import LocalTickets
from safety_governor.approvals import ApprovalPolicy
from safety_governor.bootstrap import build
from safety_governor.config import Settings
from safety_governor.knowledge import seed_store
from safety_governor.models import Incident
from safety_governor.tui.controller import Controller
from safety_governor.service.runtime import TrafficWorker
from safety_governor.tui.state import DashboardState, EventBus, IncidentUpdated, WorkerUpdated, reduce_all
from safety_governor.service.telemetry import STORYLINE, Fault, TrafficSimulator
from safety_governor.service.agent import AgentWorker
from safety_governor.service.approval_loop import SlackWorker
from safety_governor.service.autopilot import Autopilot, autopilot_replies
from safety_governor.service.board import Board, Counters, Pauser, WorkItem
from safety_governor.service.telemetry_workers import LogsWorker
from safety_governor.service.worker import WorkerConfig, WorkerContext

CHECKOUT = Incident(id="inc-checkout", service="checkout-web", severity="medium", pattern="5xx_spike",
                    summary="5xx spike: 21% of POST /checkout/confirm failing (500), right after release "
                            "2026.11.26-2 deploy",
                    symptoms="HTTP 500 x9 on POST /checkout/confirm; errors began after release 2026.11.26-2 deploy")
AUTH = Incident(id="inc-auth", service="auth-service", severity="critical", pattern="credential_reset_spike",
                summary="Credential reset spike: POST /auth/reset-password at 10x normal volume with 429/500 "
                        "responses (86% failing)",
                symptoms="HTTP 429 x40, 500 x9 on POST /auth/reset-password; traffic from few IPs")
PAYMENTS = Incident(id="inc-payments", service="payments-api", severity="high", pattern="5xx_spike",
                    summary="5xx spike: 45% of POST /api/v1/checkout failing (503/500)",
                    symptoms="HTTP 503 x6, 500 x4 on POST /api/v1/checkout; timeout latency")


@dataclass
class Rig:
    ctx: WorkerContext
    governor: object
    audit: MemoryAudit
    tickets: LocalTickets
    inbox: LocalInbox
    world: TrafficSimulator
    events: list

    def item(self, incident: Incident, **kw: object) -> WorkItem:
        item = WorkItem(incident=incident, pipeline=self.governor.pipeline,  # type: ignore[attr-defined]
                        approvals=ApprovalPolicy.of(["oncall"], ["oncall"]), baseline_error_rate=0.02, **kw)
        self.ctx.store.claim_incident(incident, "test")
        self.ctx.board.add(item)
        return item

    def drain(self) -> list:
        self.events.extend(self.ctx.bus.drain())
        return self.events

    def states(self, incident_id: str) -> list[str]:
        seen: list[str] = []
        for e in self.drain():
            if isinstance(e, IncidentUpdated) and e.view.id == incident_id and (not seen or seen[-1] != e.view.state):
                seen.append(e.view.state)
        return seen


@pytest.fixture
def rig(tmp_path: Path, knowledge, request):
    faults = getattr(request, "param", STORYLINE)
    store = SQLiteStore(tmp_path / "governor.db")
    seed_store(store, {**knowledge, "logs": [], "incidents": []}, source="test")
    audit = MemoryAudit()
    governor = build(Settings(output_dir=tmp_path), store=store, audit=audit)
    tickets = LocalTickets(tmp_path / "governor.db")
    inbox = LocalInbox()
    bus, stop = EventBus(), threading.Event()
    # Every fault of the storyline active from the start, at a rate that makes verification quick.
    world = TrafficSimulator(store, rate=150, storyline=[_now(f) for f in faults])
    config = WorkerConfig(hold_seconds=0.0, verify_window_seconds=1.5, verify_poll_seconds=0.05, retry_seconds=0.0,
                          approvals_interval=0.01)
    ctx = WorkerContext(store=store, tickets=tickets, channel=inbox, bus=bus, board=Board(), counters=Counters(),
                        pauser=Pauser(bus, stop, enabled=False, timeout=1), stop=stop, config=config, owner="test",
                        audit=audit, actions=governor.actions, production=world)
    traffic = TrafficWorker(ctx, world, interval=0.05)
    traffic.start()
    yield Rig(ctx, governor, audit, tickets, inbox, world, [])
    stop.set()
    traffic.join(5)
    tickets.close()
    store.close()


def _now(fault: Fault) -> Fault:
    return replace(fault, start=0.0)


def run_until(done: Callable[[], bool], *steps: Callable[[], None], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "timed out"
        for step in steps:
            step()


def kinds(audit: MemoryAudit) -> list[str]:
    return [str(r.get("kind")) for r in audit.records["workflow_events"]]


def test_a_passed_incident_goes_from_detected_to_resolved_with_ticket_verification_and_a_learned_runbook(rig):
    item = rig.item(CHECKOUT)
    agent = AgentWorker(rig.ctx)
    run_until(lambda: item.state == "RESOLVED", agent.run_due)
    assert rig.states("inc-checkout") == ["ANALYZING", "READY_TO_EXECUTE", "EXECUTING", "VERIFYING", "LEARNING",
                                          "RESOLVED"]
    assert item.ticket.key == "SRE-101" and rig.tickets.get("SRE-101").status == "done"
    comments = rig.tickets.comments("SRE-101")
    assert comments[0].startswith("Gate execute for rollback_last_deploy")
    assert any("executed rollback_last_deploy" in c for c in comments)
    assert item.verification.resolved and item.learned["status"] == "pending_review"
    assert {"gate_decision", "execution_authorised", "verification", "runbook_learned"} <= set(kinds(rig.audit))
    assert rig.audit.records["agent_runs"][-1]["final_state"] == "executed"
    assert rig.world.effects[-1].cleared == ("checkout-web bad release",)
    assert rig.ctx.counters.metrics.auto_executed == 1 and rig.ctx.counters.metrics.kb_learned >= 1


def test_a_critical_incident_refuses_approve_from_the_keys_and_runs_only_after_an_override_with_a_reason(rig):
    item = rig.item(AUTH)
    agent, slack = AgentWorker(rig.ctx), SlackWorker(rig.ctx)
    run_until(lambda: item.state == "PENDING_APPROVAL", agent.run_due)
    controller = Controller(reduce_all(DashboardState(mode="fast", started_at=item.detected_at, now=item.detected_at),
                                       rig.drain()), inbox=rig.inbox, user="oncall")
    assert controller.state.selected == "inc-auth"

    controller.on_key("a")
    run_until(lambda: rig.ctx.counters.metrics.refusals == 1, slack.step)
    assert item.state == "PENDING_APPROVAL" and item.thread[-2].outcome == "refused"
    assert "the incident is critical" in item.thread[-1].text

    for key in ("f", "enter"):  # an override without a reason is not an override
        controller.on_key(key)
    run_until(lambda: item.session.events[-1].outcome == "invalid", slack.step)
    assert item.state == "PENDING_APPROVAL"

    for key in ["f", *"security on bridge", "enter"]:
        controller.on_key(key if key != " " else "space")
    run_until(lambda: item.state == "RESOLVED", slack.step, agent.run_due)
    assert item.session.override_reason == "security on bridge"
    assert item.execution.authorised_by == "oncall"
    events = kinds(rig.audit)
    assert events.index("approval_refused") < events.index("approval_accepted") < events.index("execution_authorised")
    assert rig.ctx.counters.metrics.overrides == 1
    assert any("refused" in c for c in rig.tickets.comments(item.ticket.key))


def test_hold_inside_the_hold_window_stops_the_auto_execution_until_someone_approves(rig):
    rig.ctx.config = replace(rig.ctx.config, hold_seconds=30.0)
    item = rig.item(CHECKOUT)
    agent, slack = AgentWorker(rig.ctx), SlackWorker(rig.ctx)
    run_until(lambda: item.state == "READY_TO_EXECUTE", agent.run_due)
    rig.inbox.push("inc-checkout", "oncall", "HOLD")
    run_until(lambda: item.state == "HELD", slack.step)
    agent.run_due()
    assert item.execution is None and item.step is None
    rig.inbox.push("inc-checkout", "oncall", "APPROVE")
    run_until(lambda: item.execution is not None, slack.step, agent.run_due)
    assert item.execution.authorised_by == "oncall"


def test_reject_closes_the_ticket_and_nothing_executes(rig):
    item = rig.item(PAYMENTS)
    agent, slack = AgentWorker(rig.ctx), SlackWorker(rig.ctx)
    run_until(lambda: item.state == "PENDING_APPROVAL", agent.run_due)
    assert item.assessment.gate.proposed_action == "restart_api_pods"
    assert rig.ctx.counters.metrics.unsafe_blocked == 1
    rig.inbox.push("inc-payments", "oncall", "REJECT contradicted by PM-2025-041")
    run_until(lambda: item.state == "REJECTED", slack.step)
    agent.run_due()
    assert item.execution is None and rig.ctx.store.count("action_executions") == 0
    assert rig.tickets.get(item.ticket.key).status == "done"
    assert rig.audit.records["agent_runs"][-1]["final_state"] == "rejected"


def test_a_reply_from_someone_who_is_not_an_approver_changes_nothing(rig):
    item = rig.item(PAYMENTS)
    agent, slack = AgentWorker(rig.ctx), SlackWorker(rig.ctx)
    run_until(lambda: item.state == "PENDING_APPROVAL", agent.run_due)
    rig.inbox.push("inc-payments", "mallory", "FORCE_OVERRIDE trust me")
    run_until(lambda: bool(item.session.events), slack.step)
    assert item.session.events[-1].outcome == "unauthorized" and item.state == "PENDING_APPROVAL"


@pytest.mark.parametrize("rig", [(Fault("bad release", "checkout-web", start=0, duration=600,
                                        requests=(("POST", "/checkout/confirm"), ("GET", "/checkout")),
                                        error_rate=0.9, codes=((500, 1.0),), extra_per_second=20,
                                        remedies=("disable_feature_flag",)),)], indirect=True)
def test_a_fix_that_does_not_recover_the_service_is_escalated_with_the_rollback_proposed(rig):
    item = rig.item(CHECKOUT)
    agent = AgentWorker(rig.ctx)
    run_until(lambda: item.state == "ESCALATED", agent.run_due)
    assert item.execution is not None and not item.verification.resolved
    assert item.verification.rollback_action == "redeploy_release"
    assert "Proposed rollback (not run): redeploy_release" in item.thread[-1].text
    assert rig.ctx.counters.metrics.escalated == 1


class FlakyTickets(LocalTickets):
    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def create(self, incident: Incident):
        if self.failures:
            self.failures -= 1
            raise RuntimeError("ticket service hiccup")
        return super().create(incident)


def test_an_exception_while_handling_an_incident_keeps_it_on_the_board_with_its_error_and_it_is_retried(rig):
    rig.ctx.tickets = FlakyTickets(failures=1)
    item = rig.item(PAYMENTS)
    agent = AgentWorker(rig.ctx)
    agent.run_due()
    assert item.error == "RuntimeError: ticket service hiccup" and item.attempts == 1
    assert rig.ctx.board.get("inc-payments") is item and item.state == "DETECTED"
    run_until(lambda: item.state == "PENDING_APPROVAL", agent.run_due)
    assert item.error is None and item.ticket.key == "SRE-101"


def test_an_incident_that_keeps_failing_is_escalated_with_its_error_not_lost(rig):
    rig.ctx.tickets = FlakyTickets(failures=99)
    item = rig.item(PAYMENTS)
    agent = AgentWorker(rig.ctx)
    run_until(lambda: item.state == "ESCALATED", agent.run_due)
    assert item.attempts == 3 and "ticket service hiccup" in item.error
    assert rig.ctx.board.items() == [item] and rig.ctx.counters.metrics.escalated == 1


class BrokenTail:
    def poll(self):
        raise RuntimeError("telemetry tail broke")

    def close(self) -> None:
        pass


def test_a_crashing_worker_is_shown_and_logged_while_the_other_workers_carry_on(rig):
    logs, agent = LogsWorker(rig.ctx, BrokenTail()), AgentWorker(rig.ctx)
    item = rig.item(CHECKOUT)
    logs.start()
    agent.start()
    try:
        run_until(lambda: item.state == "RESOLVED", lambda: time.sleep(0.05))
    finally:
        rig.ctx.stop.set()
        logs.join(5)
        agent.join(5)
    assert not logs.is_alive() and not agent.is_alive()
    assert logs.errors >= 1
    health = [e.view for e in rig.drain() if isinstance(e, WorkerUpdated) and e.view.name == "logs"]
    assert any(not v.ok and "telemetry tail broke" in v.detail for v in health)


def test_the_autopilot_rejects_unsafe_plans_and_overrides_a_critical_refusal_after_the_governor_answers(rig):
    gate_of = {}
    for incident in (PAYMENTS, AUTH, CHECKOUT):
        gate_of[incident.id] = rig.governor.pipeline.assess(incident).gate  # type: ignore[attr-defined]
    assert autopilot_replies(gate_of["inc-checkout"], "rollback_last_deploy") == []
    assert autopilot_replies(gate_of["inc-payments"], "restart_api_pods")[0].startswith("REJECT autopilot:")
    replies = autopilot_replies(gate_of["inc-auth"], "enable_reset_rate_limit")
    assert replies[0] == "APPROVE" and replies[1].startswith("FORCE_OVERRIDE ")

    pilot = Autopilot(rig.inbox, "oncall", rig.ctx.stop, think_seconds=1.0)
    rig.inbox.request(AUTH, gate_of["inc-auth"], message="critical")
    pilot.tick(100.0)
    pilot.tick(101.5)
    assert rig.inbox.replies("inc-auth") == [("oncall", "APPROVE")]
    pilot.tick(103.0)
    assert rig.inbox.replies("inc-auth") == []  # waits for the governor's answer to the APPROVE
    rig.inbox.notify("inc-auth", "APPROVE refused")
    pilot.tick(103.1)
    assert rig.inbox.replies("inc-auth")[0][1].startswith("FORCE_OVERRIDE ")


def test_present_mode_pauses_at_the_override_and_runs_nothing_until_space(rig):
    from safety_governor.tui.state import BannerChanged

    rig.ctx.pauser = Pauser(rig.ctx.bus, rig.ctx.stop, enabled=True, timeout=30)
    item = rig.item(AUTH)
    agent, slack = AgentWorker(rig.ctx), SlackWorker(rig.ctx)
    answer = threading.Thread(target=agent.run_due)  # the critical block itself is a pause
    answer.start()
    run_until(lambda: any(isinstance(e, BannerChanged) and e.text for e in rig.drain()), lambda: time.sleep(0.02))
    assert "SRE-101 critical auth-service: gate blocked enable_reset_rate_limit" in \
        [e.text for e in rig.events if isinstance(e, BannerChanged) and e.text][-1]
    rig.ctx.pauser.resume()
    answer.join(5)
    rig.inbox.push("inc-auth", "oncall", "FORCE_OVERRIDE security on bridge")
    reply = threading.Thread(target=slack.step)
    reply.start()
    run_until(lambda: item.state == "READY_TO_EXECUTE", lambda: time.sleep(0.02))
    time.sleep(0.2)
    assert item.step is None and item.execution is None  # the override is shown before anything runs
    rig.ctx.pauser.resume()
    reply.join(5)
    run_until(lambda: item.execution is not None, agent.run_due)
    assert item.execution.authorised_by == "oncall"


class FlakyAfterExecution(LocalTickets):
    """Fails the first comment made after the execution, the way a ticket service hiccups."""

    def __init__(self) -> None:
        super().__init__()
        self.failed = False

    def comment(self, key: str, text: str) -> None:
        if text.startswith("executed") and not self.failed:
            self.failed = True
            raise RuntimeError("ticket service hiccup")
        super().comment(key, text)


def test_a_failure_after_the_execution_is_retried_without_running_the_action_twice(rig):
    rig.ctx.tickets = FlakyAfterExecution()
    item = rig.item(CHECKOUT)
    agent = AgentWorker(rig.ctx)
    run_until(lambda: item.state == "RESOLVED", agent.run_due)
    assert rig.ctx.tickets.failed and item.attempts == 1
    assert rig.ctx.store.count("action_executions") == 1 and len(rig.world.effects) == 1

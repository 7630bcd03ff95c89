"""The dashboard across restarts: a Runtime over a store file, stopped and built again over the
same file, with the real pipeline, local tickets and inbox (fast mode), or the real slack-sdk
client against a local fake of the Slack Web API on 127.0.0.1 (live mode); and the ``l`` key
for learned runbooks, through the controller without a terminal."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from slack_wire import FakeSlack, closed_port

from safety_governor.adapters.store_sqlite import SQLiteStore
from safety_governor.config import Settings
from safety_governor.knowledge import seed_store
from safety_governor.models import Incident
from safety_governor.tui.controller import Controller
from safety_governor.tui.dashboard import render_text
from safety_governor.service.runtime import Options, Runtime, TrafficWorker
from safety_governor.tui.state import DashboardState, reduce_all
from safety_governor.service.agent import AgentWorker
from safety_governor.service.approval_loop import SlackWorker
from safety_governor.service.board import WorkItem

AUTH = Incident(id="inc-auth", service="auth-service", severity="critical", pattern="credential_reset_spike",
                summary="Credential reset spike: POST /auth/reset-password at 10x normal volume with 429/500 "
                        "responses (86% failing)",
                symptoms="HTTP 429 x40, 500 x9 on POST /auth/reset-password; traffic from few IPs")
PAYMENTS = Incident(id="inc-payments", service="payments-api", severity="high", pattern="5xx_spike",
                    summary="5xx spike: 45% of POST /api/v1/checkout failing (503/500)",
                    symptoms="HTTP 503 x6, 500 x4 on POST /api/v1/checkout; timeout latency")
CHECKOUT = Incident(id="inc-checkout", service="checkout-web", severity="medium", pattern="5xx_spike",
                    summary="5xx spike: 21% of POST /checkout/confirm failing (500), right after release "
                            "2026.11.26-2 deploy",
                    symptoms="HTTP 500 x9 on POST /checkout/confirm; errors began after release 2026.11.26-2 deploy")
OVERRIDE = "FORCE_OVERRIDE security on the bridge, reset flood confirmed"


class Dashboard:
    """One run of the dashboard (a Runtime whose worker steps the test drives by hand)."""

    def __init__(self, settings: Settings, options: Options | None = None, **kw: object) -> None:
        self.runtime = Runtime.build(settings, options or Options(mode="fast", storyline="none",
                                                                   prefill_seconds=20, rate=150), **kw)
        ctx = self.runtime.context
        ctx.config = replace(ctx.config, hold_seconds=0.0, verify_window_seconds=1.5, verify_poll_seconds=0.05,
                             retry_seconds=0.0, approvals_interval=0.01)
        self.agent = next(w for w in self.runtime.workers if isinstance(w, AgentWorker))
        self.slack = next(w for w in self.runtime.workers if isinstance(w, SlackWorker))
        self.events: list = []

    @property
    def store(self):
        return self.runtime.store

    def add(self, incident: Incident) -> WorkItem:
        rt = self.runtime
        item = WorkItem(incident=incident, pipeline=rt.governor.pipeline, approvals=rt.audit_worker.approvals,
                        baseline_error_rate=0.02, due=time.monotonic())
        assert rt.store.claim_incident(incident, "test")
        rt.board.add(item)
        return item

    def block(self, incident: Incident) -> WorkItem:
        item = self.add(incident)
        run_until(lambda: item.state == "PENDING_APPROVAL", self.agent.run_due)
        return item

    def failing(self, service: str, *, errors: int = 400) -> None:
        """The service is failing now (5xx in the last seconds): an action taken next is credited
        with the recovery that follows it, not one that already happened."""
        now = datetime.now(UTC)
        self.store.index_documents("logs", [
            {"id": f"fault-{service}-{n}", "timestamp": (now - timedelta(seconds=n % 5)).isoformat(),
             "service": service, "request": "/checkout/confirm", "response": "500", "bytes": 0}
            for n in range(errors)])

    def traffic(self) -> TrafficWorker:
        worker = next(w for w in self.runtime.workers if isinstance(w, TrafficWorker))
        worker.start()
        return worker

    def state(self) -> DashboardState:
        self.events.extend(self.runtime.bus.drain())
        now = datetime.now(UTC)
        return reduce_all(DashboardState(mode=self.runtime.options.mode, started_at=now, now=now), self.events)

    def executions(self, incident_id: str) -> int:
        return len(self.store.events("action_executions", incident_id))

    def close(self) -> None:
        self.runtime.stop()
        self.runtime.close()


def run_until(done: Callable[[], bool], *steps: Callable[[], None], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "timed out"
        for step in steps:
            step()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(output_dir=tmp_path / "output", store_path=tmp_path / "state" / "governor.db")


def audit_kinds(settings: Settings) -> list[str]:
    path = settings.output_dir / "workflow_events.jsonl"
    return [json.loads(line).get("kind") for line in path.read_text().splitlines()] if path.exists() else []


def test_a_restarted_dashboard_shows_the_blocked_incident_pending_with_its_ticket_and_an_override_executes_it_once(
        settings):
    first = Dashboard(settings)
    before = first.block(AUTH)
    ticket, decision = before.ticket.key, before.assessment.gate.decision_id
    first.close()  # quit while the incident waits for a human

    second = Dashboard(settings)
    [item] = second.runtime.resume()
    assert (item.incident.id, item.state, item.ticket.key) == ("inc-auth", "PENDING_APPROVAL", ticket)
    assert item.assessment.gate.decision_id == decision and item.step is None
    assert second.runtime.inbox.get_request("inc-auth") is not None  # the local inbox has the request again
    screen = render_text(second.state(), width=100, height=30)
    assert ticket in screen and "PENDING_APPROVAL" in screen and "1 awaiting a human" in screen
    assert second.runtime.resume() == []  # idempotent

    controller = Controller(second.state(), inbox=second.runtime.inbox, user="oncall")
    assert controller.state.selected == "inc-auth"
    for key in ["f", *OVERRIDE.removeprefix("FORCE_OVERRIDE "), "enter"]:
        controller.on_key("space" if key == " " else key)
    run_until(lambda: item.state not in ("PENDING_APPROVAL", "READY_TO_EXECUTE", "EXECUTING"),
              second.slack.step, second.agent.run_due)
    assert item.execution is not None and item.execution.authorised_by == "oncall"
    assert second.executions("inc-auth") == 1
    run_until(lambda: item.state in ("RESOLVED", "ESCALATED"), second.agent.run_due)
    second.close()

    third = Dashboard(settings)
    assert third.runtime.resume() == []  # the wait closed with the incident
    assert third.executions("inc-auth") == 1
    third.close()


def test_a_reply_applied_before_the_restart_is_not_applied_again_and_a_held_incident_comes_back_held(settings):
    first = Dashboard(settings)
    item = first.block(PAYMENTS)
    first.runtime.inbox.push("inc-payments", "oncall", "HOLD checking with the payments team")
    run_until(lambda: item.state == "HELD", first.slack.step)
    first.runtime.inbox.push("inc-payments", "oncall", "REJECT")  # pushed, never read: lost with the process
    first.close()

    second = Dashboard(settings)
    [resumed] = second.runtime.resume()
    assert resumed.state == "HELD" and resumed.session.state == "held"
    assert [(e.author, e.outcome) for e in resumed.thread if e.kind == "reply"] == [("oncall", "accepted")]
    for _ in range(5):
        second.slack.step()
    outcomes = [e["kind"] for e in second.store.events("workflow_events", "inc-payments")
                if e["kind"].startswith("approval_")]
    assert outcomes == ["approval_accepted"]  # the HOLD once, not again after the restart
    assert resumed.state == "HELD" and second.executions("inc-payments") == 0

    second.runtime.inbox.push("inc-payments", "oncall", "FORCE_OVERRIDE payments team confirmed the pods are wedged")
    run_until(lambda: resumed.execution is not None, second.slack.step, second.agent.run_due)
    assert resumed.execution.authorised_by == "oncall" and second.executions("inc-payments") == 1
    second.close()


def test_a_decision_executed_just_before_the_dashboard_stopped_is_verified_after_the_restart_and_never_run_again(
        settings):
    first = Dashboard(settings)
    item = first.block(AUTH)
    first.runtime.inbox.push("inc-auth", "oncall", OVERRIDE)
    run_until(lambda: item.state == "READY_TO_EXECUTE", first.slack.step)
    # The action ran, and the dashboard stopped before it noted anything else.
    assert first.runtime.governor.pipeline.execute(item.assessment, item.session) is not None
    first.close()

    second = Dashboard(settings)
    [resumed] = second.runtime.resume()
    assert resumed.state == "VERIFYING" and resumed.execution is not None
    assert "not executed again" in resumed.thread[-1].text
    # Even a queue item that believes it still has to execute finds the earlier execution.
    resumed.state, resumed.step, resumed.execution = "READY_TO_EXECUTE", "execute", None
    second.agent.run_due()
    assert resumed.execution is not None and second.executions("inc-auth") == 1
    assert any("already executed" in line and "not executed again" in line for line in second.state().activity)
    run_until(lambda: resumed.state in ("RESOLVED", "ESCALATED"), second.agent.run_due)
    assert second.executions("inc-auth") == 1
    second.close()

    third = Dashboard(settings)
    assert third.runtime.resume() == [] and third.executions("inc-auth") == 1
    third.close()


def slack_settings(settings: Settings, url: str) -> Settings:
    return Settings(output_dir=settings.output_dir, store_path=settings.store_path, slack_bot_token="xoxb-test",
                    slack_channel="#incidents", slack_api_url=url, slack_poll_seconds=0.05,
                    slack_approvers=("UALICE01",), slack_overriders=("UBOB0001",))


def test_while_the_local_fake_slack_is_down_the_incident_stays_pending_the_outage_shows_and_a_restart_posts_it(
        settings, knowledge):
    store = SQLiteStore(settings.resolved_store_path)  # live mode reads the knowledge already loaded
    seed_store(store, knowledge, source="test")
    store.close()
    port = closed_port()
    live = Options(mode="live")
    first = Dashboard(slack_settings(settings, f"http://127.0.0.1:{port}/"), live)
    item = first.block(AUTH)
    assert item.requested and first.runtime.inbox.get_request("inc-auth") is not None  # the console has it
    for _ in range(3):
        first.slack.step()
    assert item.state == "PENDING_APPROVAL" and first.executions("inc-auth") == 0
    state = first.state()
    [approvals] = [i for i in state.integrations if i.role == "approvals"]
    assert not approvals.ok and "unreachable" in approvals.detail
    assert any("✗ slack unavailable" in line and "nothing executes without a reply" in line
               for line in state.activity)
    assert "integration_error" in audit_kinds(settings)
    first.close()

    slack = FakeSlack(port=port).start()
    try:
        second = Dashboard(slack_settings(settings, slack.url), live)
        [resumed] = second.runtime.resume()
        assert resumed.state == "PENDING_APPROVAL"
        [post] = [c for c in slack.calls_to("chat.postMessage") if "blocks" in c.body]
        assert "Approval needed: inc-auth" in json.dumps(post.body["blocks"])
        ts = slack.top_level()[0]["ts"]
        slack.add_reply(ts, "UALICE01", "APPROVE")
        slack.add_reply(ts, "UBOB0001", OVERRIDE)
        run_until(lambda: resumed.execution is not None, second.slack.step, second.agent.run_due)
        assert [e.outcome for e in resumed.session.events] == ["refused", "accepted"]
        assert resumed.execution.authorised_by == "UBOB0001" and second.executions("inc-auth") == 1
        for _ in range(3):
            second.slack.step()  # the thread is read again: each reply was processed once
        assert len(resumed.session.events) == 2
        second.close()
    finally:
        slack.stop()


def test_an_action_on_a_service_that_had_already_recovered_is_resolved_but_not_credited_or_learned(settings):
    """Steady traffic, no fault (as after a restart with --storyline none): the service is healthy
    before the action runs, so the clean traffic after it proves nothing about the action."""
    dash = Dashboard(settings)
    dash.traffic()
    item = dash.add(CHECKOUT)
    run_until(lambda: item.state == "RESOLVED", dash.agent.run_due)
    assert item.verification.resolved and not item.verification.credited
    assert item.learned is None and "the recovery preceded the action" in item.outcome
    assert dash.store.count("runbooks", {"source": "agent_learning"}) == 0
    dash.close()


def test_the_l_key_approves_the_selected_incidents_learned_runbook_as_the_local_approver_audited_and_counted(
        settings):
    dash = Dashboard(settings)
    dash.traffic()
    dash.failing("checkout-web")
    item = dash.add(CHECKOUT)
    run_until(lambda: item.state == "RESOLVED", dash.agent.run_due)
    assert item.verification.credited, item.outcome
    assert item.learned["status"] == "pending_review"
    state = dash.state()
    assert state.metrics.kb_pending == 1
    runbooks_before = state.metrics.kb_runbooks
    assert "l approve runbook" in render_text(state, width=100, height=30)

    mallory = Controller(state, review=dash.runtime.request_review, user="mallory")
    mallory.on_key("l")
    dash.slack.step()
    assert dash.store.get("runbooks", item.learned["id"])["status"] == "pending_review"
    assert "runbook_review_refused" in audit_kinds(settings)
    assert any("runbook approval refused: mallory is not a configured approver" in line
               for line in dash.state().activity)

    controller = Controller(dash.state(), review=dash.runtime.request_review, user="oncall")
    assert controller.state.selected == "inc-checkout"
    controller.on_key("l")
    assert controller.state.hint == f"approval of runbook {item.learned['id']} sent as oncall"
    dash.slack.step()
    doc = dash.store.get("runbooks", item.learned["id"])
    assert doc["status"] == "approved" and doc["approved_by"] == "oncall"
    assert "runbook_approved" in audit_kinds(settings)
    state = dash.state()
    assert state.metrics.kb_pending == 0 and state.metrics.kb_runbooks == runbooks_before + 1
    assert state.incident("inc-checkout").learned_status == "approved"

    controller.state = state
    controller.on_key("l")  # nothing left to approve: said so, nothing asked
    assert "has no learned runbook waiting for review" in controller.state.hint
    assert dash.runtime.context.reviews.empty()
    dash.close()

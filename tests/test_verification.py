"""Verification: the service's error rate after an execution, watched for a bounded window
(injected clock and sleep: no real waiting)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from safety_governor.adapters.store_sqlite import SQLiteStore
from safety_governor.approvals import ApprovalPolicy
from safety_governor.catalogue import ActionCatalogue
from safety_governor.config import DEFAULT_DATA_DIR, Settings
from safety_governor.errors import StoreError
from safety_governor.incident_state import current_state
from safety_governor.models import Incident
from safety_governor.verification import options_from_settings, verify_recovery

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
CHECKOUT = Incident(id="inc-v1", service="checkout-web", severity="medium", summary="5xx spike after deploy")
_ids = itertools.count()


@pytest.fixture(scope="module")
def catalogue() -> ActionCatalogue:
    return ActionCatalogue.load(DEFAULT_DATA_DIR / "actions.json")


@pytest.fixture
def empty_store():
    s = SQLiteStore(":memory:")
    yield s
    s.close()


def traffic(store, service: str, at: datetime, *, requests: int, errors: int) -> None:
    store.index_documents("logs", [
        {"id": f"t-{next(_ids)}", "timestamp": at.isoformat(), "service": service, "request": "/checkout",
         "response": "503" if n < errors else "200", "bytes": 512}
        for n in range(requests)])


class FakeTime:
    """A clock that moves only when slept; each tick can log new traffic."""

    def __init__(self, start: datetime, on_tick=None) -> None:
        self.now = start
        self.sleeps: list[float] = []
        self.on_tick = on_tick

    def clock(self) -> datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += timedelta(seconds=seconds)
        if self.on_tick:
            self.on_tick(self.now)


def test_recovering_traffic_after_the_execution_resolves_the_incident(empty_store, catalogue):
    traffic(empty_store, "checkout-web", T0 - timedelta(minutes=3), requests=50, errors=20)  # the incident
    clock = FakeTime(T0, on_tick=lambda now: traffic(empty_store, "checkout-web", now, requests=10,
                                                     errors=0 if now > T0 + timedelta(seconds=2) else 6))
    result = verify_recovery(empty_store, CHECKOUT, action="rollback_last_deploy", catalogue=catalogue,
                             threshold=0.2, window_seconds=10, poll_interval=1, clock=clock.clock,
                             sleep=clock.sleep)
    assert result.resolved and result.next_step == "resolve" and result.rollback_action is None
    assert result.error_rate_before == 0.4
    # Ticks 1-2 log 60% errors, then clean traffic: the rate since the execution falls to 12/70.
    assert [s.total for s in result.samples] == [0, 10, 20, 30, 40, 50, 60, 70]
    assert result.error_rate_after == pytest.approx(12 / 70, abs=1e-4)
    assert "under the threshold 20.0%" in result.reason
    assert len(clock.sleeps) == 7


def test_a_recovery_that_preceded_the_action_resolves_but_is_not_credited_to_it(empty_store, catalogue):
    """The service failed, then recovered on its own before the (late) override ran: the clean
    traffic after the action proves nothing about the action."""
    traffic(empty_store, "checkout-web", T0 - timedelta(minutes=5), requests=50, errors=40)  # the incident
    traffic(empty_store, "checkout-web", T0 - timedelta(seconds=30), requests=30, errors=0)  # already healthy
    clock = FakeTime(T0, on_tick=lambda now: traffic(empty_store, "checkout-web", now, requests=10, errors=0))
    result = verify_recovery(empty_store, CHECKOUT, action="rollback_last_deploy", catalogue=catalogue,
                             threshold=0.1, window_seconds=5, poll_interval=1, clock=clock.clock, sleep=clock.sleep)
    assert result.resolved and not result.credited and result.next_step == "resolve"
    assert result.error_rate_at_action == 0.0
    assert "the recovery preceded the action, so it is not credited to it and nothing is learned" in result.reason


def test_a_recovery_while_the_errors_were_still_elevated_at_the_action_is_credited(empty_store, catalogue):
    traffic(empty_store, "checkout-web", T0 - timedelta(seconds=30), requests=30, errors=15)  # still failing
    clock = FakeTime(T0, on_tick=lambda now: traffic(empty_store, "checkout-web", now, requests=10, errors=0))
    result = verify_recovery(empty_store, CHECKOUT, action="rollback_last_deploy", catalogue=catalogue,
                             threshold=0.1, window_seconds=5, poll_interval=1, clock=clock.clock, sleep=clock.sleep)
    assert result.resolved and result.credited and result.error_rate_at_action == 0.5
    assert "preceded" not in result.reason


def test_errors_that_persist_escalate_and_propose_the_rollback_of_a_reversible_action(empty_store, catalogue):
    clock = FakeTime(T0, on_tick=lambda now: traffic(empty_store, "checkout-web", now, requests=10, errors=5))
    result = verify_recovery(empty_store, CHECKOUT, action="rollback_last_deploy", catalogue=catalogue,
                             baseline_error_rate=0.5, threshold=0.1, window_seconds=5, poll_interval=1,
                             clock=clock.clock, sleep=clock.sleep)
    assert not result.resolved and result.next_step == "escalate_with_rollback"
    assert result.rollback_action == "redeploy_release" and result.reversible is True
    assert result.error_rate_after == 0.5 and len(result.samples) == 6 and clock.sleeps == [1, 1, 1, 1, 1]
    assert "still 50.0% over 50 requests after 5s" in result.reason
    assert result.reason.endswith("escalating and proposing the rollback redeploy_release")


def test_an_irreversible_action_that_did_not_help_escalates_without_a_rollback(empty_store, catalogue):
    incident = Incident(id="inc-v2", service="inventory-db", severity="high", summary="lock waits")
    clock = FakeTime(T0, on_tick=lambda now: traffic(empty_store, "inventory-db", now, requests=10, errors=9))
    result = verify_recovery(empty_store, incident, action=catalogue.get("kill_long_running_queries"),
                             window_seconds=2, poll_interval=1, clock=clock.clock, sleep=clock.sleep)
    assert not result.resolved and result.rollback_action is None and result.next_step == "escalate"
    assert "kill_long_running_queries is not reversible" in result.reason


def test_too_little_traffic_to_judge_is_not_a_recovery(empty_store, catalogue):
    clock = FakeTime(T0, on_tick=lambda now: traffic(empty_store, "checkout-web", now, requests=1, errors=0))
    result = verify_recovery(empty_store, CHECKOUT, action="rollback_last_deploy", catalogue=catalogue,
                             window_seconds=3, poll_interval=1, min_requests=5, clock=clock.clock,
                             sleep=clock.sleep)
    assert not result.resolved and result.error_rate_after == 0.0
    assert "only 3 request(s) logged for checkout-web within 3s" in result.reason


def test_traffic_of_other_services_and_before_the_execution_does_not_count(empty_store, catalogue):
    traffic(empty_store, "checkout-web", T0 - timedelta(seconds=5), requests=40, errors=0)
    traffic(empty_store, "payments-api", T0 + timedelta(seconds=1), requests=40, errors=0)
    clock = FakeTime(T0)
    result = verify_recovery(empty_store, CHECKOUT, action="rollback_last_deploy", catalogue=catalogue,
                             window_seconds=2, poll_interval=1, clock=clock.clock, sleep=clock.sleep)
    assert not result.resolved and all(s.total == 0 for s in result.samples)


def test_the_watch_is_bounded_even_when_the_clock_never_moves(empty_store, catalogue):
    sleeps: list[float] = []
    result = verify_recovery(empty_store, CHECKOUT, action="rollback_last_deploy", catalogue=catalogue,
                             window_seconds=4, poll_interval=1, clock=lambda: T0, sleep=sleeps.append)
    assert len(result.samples) == 5 and len(sleeps) == 4 and not result.resolved


class _TelemetryDown(SQLiteStore):
    def log_stats(self, **kwargs):
        raise StoreError("store query failed: database is locked")


def test_telemetry_that_cannot_be_read_escalates(catalogue):
    store = _TelemetryDown(":memory:")
    result = verify_recovery(store, CHECKOUT, action="rollback_last_deploy", catalogue=catalogue,
                             clock=lambda: T0, sleep=lambda s: None)
    store.close()
    assert not result.resolved and result.reason.startswith("telemetry unavailable during verification")
    assert result.rollback_action == "redeploy_release"


def _executed(governor, knowledge, incident_id):
    incident = Incident.model_validate(next(i for i in knowledge["incidents"] if i["id"] == incident_id))
    a = governor.pipeline.assess(incident)
    session = governor.pipeline.approval_session(a, ApprovalPolicy.of(["oncall"], []))
    governor.pipeline.record_decision(a)
    return a, governor.pipeline.execute(a, session)


def test_the_pipeline_records_a_verified_recovery_and_resolves_the_incident(governor, knowledge, store, audit):
    a, execution = _executed(governor, knowledge, "inc-004")
    clock = FakeTime(execution.at, on_tick=lambda now: traffic(store, "checkout-web", now, requests=10, errors=0))
    options = options_from_settings(Settings(verify_window_seconds=5, verify_poll_seconds=1,
                                             verify_error_rate_threshold=0.1))
    result = governor.pipeline.verify(a, execution, clock=clock.clock, sleep=clock.sleep, **options)
    assert result.resolved and result.window_seconds == 5 and current_state(store, "inc-004") == "resolved"
    [event] = [e for e in audit.records["workflow_events"] if e["kind"] == "verification"]
    assert event["resolved"] is True and event["next_step"] == "resolve"
    assert event["execution_id"] == execution.execution_id


def test_the_pipeline_escalates_a_failed_recovery_with_the_catalogues_rollback(governor, knowledge, store, audit):
    a, execution = _executed(governor, knowledge, "inc-004")
    clock = FakeTime(execution.at, on_tick=lambda now: traffic(store, "checkout-web", now, requests=10, errors=8))
    result = governor.pipeline.verify(a, execution, window_seconds=3, poll_interval=1, clock=clock.clock,
                                      sleep=clock.sleep)
    assert not result.resolved and result.rollback_action == "redeploy_release"
    assert current_state(store, "inc-004") == "escalated"
    [event] = [e for e in audit.records["workflow_events"] if e["kind"] == "verification"]
    assert event["next_step"] == "escalate_with_rollback"
    assert governor.pipeline.learn(a, execution, result) is None


def test_the_pipeline_does_not_learn_a_runbook_from_a_recovery_that_preceded_the_action(
    governor, knowledge, store, audit
):
    a, execution = _executed(governor, knowledge, "inc-004")
    traffic(store, "checkout-web", execution.at - timedelta(seconds=20), requests=40, errors=0)
    clock = FakeTime(execution.at, on_tick=lambda now: traffic(store, "checkout-web", now, requests=10, errors=0))
    result = governor.pipeline.verify(a, execution, window_seconds=3, poll_interval=1, threshold=0.1,
                                      clock=clock.clock, sleep=clock.sleep)
    assert result.resolved and not result.credited and current_state(store, "inc-004") == "resolved"
    [event] = [e for e in audit.records["workflow_events"] if e["kind"] == "verification"]
    assert event["credited"] is False and "preceded the action" in event["reason"]
    assert governor.pipeline.learn(a, execution, result) is None
    assert not [e for e in audit.records["workflow_events"] if e["kind"] == "runbook_learned"]

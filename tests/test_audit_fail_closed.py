"""Principle 4, write by write: each audit write on the way to an execution fails closed on its
own (the decision, its metrics, the human's reply, the authorisation), and so does each sink of a
tee. A failure in one write must not be swallowed by the step that made it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from safety_governor.adapters.audit_jsonl import JsonlAudit, MemoryAudit, TeeAudit
from safety_governor.audit_chain import verify
from safety_governor.bootstrap import build
from safety_governor.errors import AuditWriteError
from test_pipeline import BATCH_MEDIUM, ONCALL, PAYMENTS_HIGH, RESTART_PLAN, scripted

OVERRIDE = [("oncall", "FORCE_OVERRIDE checked with the database team")]


class FailsOn(MemoryAudit):
    """A sink that refuses exactly one kind of record (``stream`` or ``stream:kind``)."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.stream, _, self.kind = target.partition(":")

    def record(self, stream: str, record: Mapping[str, Any]) -> None:
        if stream == self.stream and (not self.kind or record.get("kind") == self.kind):
            raise AuditWriteError(f"cannot write the {stream} audit trail: simulated failure of {self.kind}")
        super().record(stream, record)


class CountingExecutor:
    """The real dry-run executor, counting calls: nothing may reach it."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.calls, self.name = inner, 0, inner.name

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.inner.execute(*args, **kwargs)

    def preview(self, *args: Any, **kwargs: Any) -> str:
        return self.inner.preview(*args, **kwargs)


def run_with(settings, store, audit, incident, *, agent=None, replies=()):
    governor = build(settings, store=store, audit=audit, agent=agent)
    executor = CountingExecutor(governor.executor)
    governor.pipeline.executor = executor
    record = governor.pipeline.run(incident, replies=list(replies), approvals=ONCALL)
    return record, executor


def test_the_automatic_path_executes_when_every_write_succeeds(settings, store):
    record, executor = run_with(settings, store, MemoryAudit(), BATCH_MEDIUM)
    assert record.executed and executor.calls == 1


@pytest.mark.parametrize("target", ["workflow_events:gate_decision", "reliability_metrics",
                                    "workflow_events:execution_authorised"])
def test_one_failing_write_on_the_automatic_path_stops_the_execution(settings, store, target):
    record, executor = run_with(settings, store, FailsOn(target), BATCH_MEDIUM)
    assert record.gate.decision == "execute"
    assert record.final_state == "audit_failed" and not record.executed
    assert executor.calls == 0 and store.count("action_executions") == 0


def test_the_override_path_executes_when_every_write_succeeds(settings, store):
    record, executor = run_with(settings, store, MemoryAudit(), PAYMENTS_HIGH, agent=scripted(plan=RESTART_PLAN),
                                replies=OVERRIDE)
    assert record.executed and executor.calls == 1


@pytest.mark.parametrize("target", ["workflow_events:gate_decision", "workflow_events:approval_accepted",
                                    "workflow_events:execution_authorised"])
def test_one_failing_write_on_the_override_path_stops_the_execution(settings, store, target):
    record, executor = run_with(settings, store, FailsOn(target), PAYMENTS_HIGH, agent=scripted(plan=RESTART_PLAN),
                                replies=OVERRIDE)
    assert not record.executed and executor.calls == 0 and store.count("action_executions") == 0


@pytest.mark.parametrize("failing", [0, 1])
@pytest.mark.parametrize("target", ["workflow_events:gate_decision", "reliability_metrics",
                                    "workflow_events:execution_authorised"])
def test_each_sink_of_a_tee_failing_alone_stops_the_execution(settings, store, tmp_path, failing, target):
    sinks: list[Any] = [JsonlAudit(tmp_path / "trail"), MemoryAudit()]
    sinks[failing] = FailsOn(target)
    record, executor = run_with(settings, store, TeeAudit(*sinks), BATCH_MEDIUM)
    assert not record.executed and executor.calls == 0 and store.count("action_executions") == 0


def test_a_tee_of_a_chained_file_and_memory_executes_and_keeps_the_chain(settings, store, tmp_path):
    memory = MemoryAudit()
    record, _ = run_with(settings, store, TeeAudit(JsonlAudit(tmp_path / "trail"), memory), BATCH_MEDIUM)
    assert record.executed
    assert any(e["kind"] == "execution" for e in memory.records["workflow_events"])
    checks = verify(tmp_path / "trail")
    assert {c.path.name for c in checks} >= {"workflow_events.jsonl", "agent_runs.jsonl", "tool_trace.jsonl"}
    assert all(c.ok for c in checks)

"""The dry-run executor: renders exactly what would be done and records it; runs nothing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from ..errors import ExecutionRefused
from ..models import ExecutionRecord, GateOutput, Incident
from ..ports import Store


class DryRunExecutor:
    name = "dry_run"

    def __init__(self, store: Store) -> None:
        self.store = store

    def execute(self, incident: Incident, gate: GateOutput, *, authorised_by: str) -> ExecutionRecord:
        if not gate.proposed_action:
            raise ExecutionRefused(f"{incident.id}: no action to execute")
        if gate.decision != "execute" and authorised_by in ("", "gate"):
            raise ExecutionRefused(f"{incident.id}: the gate blocked this action and no human authorised it")
        preview = (
            f"[dry-run] would run '{gate.proposed_action}' on service {incident.service} "
            f"for {incident.id} (decision {gate.decision_id}, authorised by {authorised_by})"
        )
        record = ExecutionRecord(
            execution_id=f"exe-{uuid.uuid4().hex[:12]}",
            incident_id=incident.id,
            decision_id=gate.decision_id,
            action=gate.proposed_action,
            mode=self.name,
            status="dry_run",
            preview=preview,
            authorised_by=authorised_by,
            at=datetime.now(UTC),
        )
        self.store.append_event(
            "action_executions", {"kind": "execution", **record.model_dump(mode="json"), "id": record.execution_id}
        )
        return record

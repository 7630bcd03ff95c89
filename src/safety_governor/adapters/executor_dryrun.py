"""The dry-run executor: renders exactly what would be done and records it; runs nothing.

It makes every check a real executor makes (the gate passed or a human authorised it, the action
is catalogued for the service, the parameters are valid). One difference, because nothing runs:
a required parameter that nobody supplied (the plan carries none) is rendered as a placeholder
(``pop=<required string>``) and listed in ``missing_parameters``, where the webhook executor refuses.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from ..catalogue import ActionCatalogue, PreparedAction, prepare_action
from ..errors import ExecutionRefused, StoreError
from ..models import ExecutionRecord, GateOutput, Incident
from ..ports import Store


def execution_document(record: ExecutionRecord, prepared: PreparedAction | None, **extra: Any) -> dict[str, Any]:
    """The ``action_executions`` document for an execution record."""
    doc: dict[str, Any] = {"kind": "execution", **record.model_dump(mode="json"), "id": record.execution_id}
    if prepared is not None:
        doc.update(service=prepared.service, parameters=prepared.parameters, risk=prepared.action.risk,
                   reversible=prepared.action.reversible, rollback_action=prepared.action.rollback_action,
                   missing_parameters=prepared.missing)
    doc.update(extra)
    return doc


class DryRunExecutor:
    """Args:
    store: where ``action_executions`` documents are recorded.
    catalogue: the action catalogue; ``None`` means an empty one (every action is refused).
    """

    name = "dry_run"

    def __init__(self, store: Store, catalogue: ActionCatalogue | None = None) -> None:
        self.store = store
        self.catalogue = catalogue if catalogue is not None else ActionCatalogue([], source="(none)")

    def _text(self, incident: Incident, gate: GateOutput, prepared: PreparedAction) -> str:
        text = f"[dry-run] would run {prepared.describe()} for {incident.id} (decision {gate.decision_id})"
        if prepared.missing:
            text += f"; a real run needs {', '.join(prepared.missing)}"
        return text

    def preview(self, incident: Incident, gate: GateOutput, parameters: Mapping[str, Any] | None = None) -> str:
        try:
            prepared = prepare_action(self.catalogue, incident, gate, parameters=parameters, allow_missing=True)
        except ExecutionRefused as exc:
            return f"[dry-run] would refuse: {exc}"
        return self._text(incident, gate, prepared)

    def execute(
        self,
        incident: Incident,
        gate: GateOutput,
        *,
        authorised_by: str,
        parameters: Mapping[str, Any] | None = None,
    ) -> ExecutionRecord:
        prepared = prepare_action(self.catalogue, incident, gate, parameters=parameters, authorised_by=authorised_by,
                                  allow_missing=True)
        record = ExecutionRecord(
            execution_id=f"exe-{uuid.uuid4().hex[:12]}",
            incident_id=incident.id,
            decision_id=gate.decision_id,
            action=prepared.action.id,
            mode=self.name,
            status="dry_run",
            preview=self._text(incident, gate, prepared),
            authorised_by=authorised_by,
            at=datetime.now(UTC),
        )
        try:
            self.store.append_event("action_executions", execution_document(record, prepared))
        except StoreError as exc:
            # Nothing that is not recorded counts as done.
            raise ExecutionRefused(f"{incident.id}: cannot record the dry run: {exc}") from exc
        return record

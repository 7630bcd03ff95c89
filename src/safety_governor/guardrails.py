"""Guardrails an operator can pull: the kill switch, change freeze windows, rate and blast-radius
limits, and the circuit breaker on failed verifications.

Their state lives in the store, so every governor on the same Elasticsearch sees it:

* the kill switch is the last ``workflow_events`` record of kind ``guardrail_freeze``
  (``{"on": bool, "by", "reason", "at"}``);
* execution counts come from ``action_executions`` (``authorised_by: gate`` is automatic);
* failed verifications are ``workflow_events`` of kind ``verification`` with ``resolved: false``,
  counted per service after its last ``guardrail_breaker_reset``.

``read_state`` turns that into ``GuardrailState``, the facts the gate reads; the thresholds
(``GuardrailConfig``) are part of the gate policy, so the decision's config hash covers them.
The gate's rules ``frozen``, ``change_freeze``, ``rate_limited`` and ``circuit_open`` live in
``gate.py``. The switches (``set_freeze``, ``reset_breaker``) audit first, then write the store.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .models import GuardrailState
from .ports import AuditSink, Store, event_time

FREEZE_KIND = "guardrail_freeze"
BREAKER_RESET_KIND = "guardrail_breaker_reset"
VERIFICATION_KIND = "verification"
AUTOMATIC = "gate"  # ``authorised_by`` of an execution nobody approved
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_NAMES = {**{d: d for d in DAYS}, **{full: full[:3] for full in (
    "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")}}
_HHMM = re.compile(r"^([01]\d|2[0-4]):([0-5]\d)$")


def _now() -> datetime:
    return datetime.now(UTC)


def _minutes(value: str) -> int:
    match = _HHMM.match(value)
    if not match or (match.group(1) == "24" and match.group(2) != "00"):
        raise ValueError(f"'{value}' is not a time HH:MM (00:00-24:00, UTC)")
    return int(match.group(1)) * 60 + int(match.group(2))


class FreezeWindow(BaseModel):
    """A change freeze: a fixed UTC span (``start``/``end``), or a weekly rule (``days`` with
    ``from``/``to`` in UTC; ``from`` after ``to`` runs past midnight into the next day)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    service: str = "*"
    name: str = ""
    start: datetime | None = None
    end: datetime | None = None
    days: tuple[str, ...] = ()
    from_: str | None = Field(None, alias="from")
    to: str | None = None

    @field_validator("days", mode="before")
    @classmethod
    def _days(cls, value: Any) -> Any:
        if not isinstance(value, (list, tuple)):
            return value
        names = [str(d).strip().lower() for d in value]
        bad = [d for d in names if d not in _DAY_NAMES]
        if bad:
            raise ValueError(f"unknown day(s) {', '.join(bad)} (expected {', '.join(DAYS)} or full names)")
        return tuple(_DAY_NAMES[d] for d in names)

    @model_validator(mode="after")
    def _one_shape(self) -> FreezeWindow:
        fixed = self.start is not None or self.end is not None
        weekly = bool(self.days) or self.from_ is not None or self.to is not None
        if fixed == weekly:
            raise ValueError("a freeze window has either start and end, or days with from and to")
        if fixed:
            if self.start is None or self.end is None:
                raise ValueError("a fixed freeze window needs both start and end")
            if self.start.tzinfo is None or self.end.tzinfo is None:
                raise ValueError("start and end need a time zone (e.g. 2026-12-24T00:00:00Z)")
            if self.end <= self.start:
                raise ValueError("end must be after start")
        else:
            if not self.days or self.from_ is None or self.to is None:
                raise ValueError("a weekly freeze window needs days, from and to")
            _minutes(self.from_)  # raises on a malformed time
            _minutes(self.to)
        return self

    def applies_to(self, service: str) -> bool:
        return self.service.strip() == "*" or self.service.strip().lower() == service.strip().lower()

    def covers(self, at: datetime) -> bool:
        """Whether ``at`` falls inside the window (start inclusive, end exclusive)."""
        if self.start is not None and self.end is not None:
            return self.start <= at < self.end
        assert self.from_ is not None and self.to is not None
        at = at.astimezone(UTC)
        minute = at.hour * 60 + at.minute
        begin, finish = _minutes(self.from_), _minutes(self.to)
        today, yesterday = DAYS[at.weekday()], DAYS[(at.weekday() - 1) % 7]
        if begin < finish:
            return today in self.days and begin <= minute < finish
        # Past midnight: the evening part belongs to today, the morning part to yesterday's rule.
        return (today in self.days and minute >= begin) or (yesterday in self.days and minute < finish)

    def describe(self) -> str:
        label = f"'{self.name}' " if self.name else ""
        if self.start is not None and self.end is not None:
            span = f"{self.start.astimezone(UTC):%Y-%m-%d %H:%M}-{self.end.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
        else:
            span = f"{','.join(self.days)} {self.from_}-{self.to} UTC"
        return f"{label}({self.service}, {span})"


class GuardrailConfig(BaseModel):
    """Limits on what the governor does on its own (part of the gate policy)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_executions_per_service_per_hour: int = Field(3, ge=0)
    cooldown_minutes: float = Field(5.0, ge=0)
    max_executions_per_hour: int = Field(10, ge=0)
    breaker_failures: int = Field(2, ge=1)
    breaker_window_minutes: float = Field(60.0, gt=0)
    freeze_windows: tuple[FreezeWindow, ...] = ()


def freeze_status(store: Store) -> dict[str, Any] | None:
    """The kill switch's last record (``on``, ``by``, ``reason``, ``at``), or ``None`` if never set."""
    latest = store.recent_events("workflow_events", kind=FREEZE_KIND, limit=1)
    return latest[0] if latest else None


def read_state(store: Store, service: str, *, incident_id: str, action: str, config: GuardrailConfig,
               now: datetime | None = None) -> GuardrailState:
    """The guardrail facts for one incident's service and proposed action, read from the store
    (the gate compares them with the policy's limits).

    Raises ``StoreError`` when the store cannot answer: the caller blocks (missing state is not
    permission)."""
    now = now or _now()
    hour_ago = now - timedelta(hours=1)
    freeze = freeze_status(store)
    frozen = bool(freeze and freeze.get("on"))
    executions = [d for d in store.recent_events("action_executions", kind="execution", since=hour_ago)
                  if d.get("status") != "refused"]
    on_service = [d for d in executions if _same(d.get("service"), service)]
    resets = [r for r in store.recent_events("workflow_events", kind=BREAKER_RESET_KIND, limit=100)
              if _same(r.get("service"), service)]
    reset_at = event_time(resets[0]) if resets else None
    failed = [at for v in store.recent_events("workflow_events", kind=VERIFICATION_KIND, limit=1000)
              if v.get("resolved") is False and _same(v.get("service"), service)
              and (at := event_time(v)) > (reset_at or datetime.min.replace(tzinfo=UTC))]
    same_action = [v for v in store.events("workflow_events", incident_id, kind=VERIFICATION_KIND)
                   if v.get("resolved") is False and _same(v.get("action"), action)]
    return GuardrailState(
        now=now,
        frozen=frozen,
        frozen_by=str(freeze.get("by")) if frozen and freeze else None,
        frozen_reason=str(freeze.get("reason") or "") if frozen and freeze else None,
        frozen_at=event_time(freeze) if frozen and freeze else None,
        service_automatic_executions=sum(d.get("authorised_by") == AUTOMATIC for d in on_service),
        automatic_executions=sum(d.get("authorised_by") == AUTOMATIC for d in executions),
        last_service_execution_at=max((event_time(d) for d in on_service), default=None),
        failed_verifications_at=sorted(failed),
        breaker_reset_at=reset_at,
        failed_same_action=bool(same_action),
    )


def _same(value: Any, service: str) -> bool:
    return str(value or "").strip().lower() == service.strip().lower()


def set_freeze(store: Store, audit: AuditSink, *, on: bool, by: str, reason: str = "") -> dict[str, Any]:
    """Switch the kill switch (audit first, then the store; raises if either fails)."""
    event = {"kind": FREEZE_KIND, "on": on, "by": by, "reason": reason, "at": _now().isoformat()}
    audit.record("workflow_events", event)
    store.append_event("workflow_events", event)
    return event


def reset_breaker(store: Store, audit: AuditSink, *, service: str, by: str, reason: str = "") -> dict[str, Any]:
    """Close the circuit breaker of ``service``: failed verifications before now stop counting."""
    event = {"kind": BREAKER_RESET_KIND, "service": service, "by": by, "reason": reason, "at": _now().isoformat()}
    audit.record("workflow_events", event)
    store.append_event("workflow_events", event)
    return event

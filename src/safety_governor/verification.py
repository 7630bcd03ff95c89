"""Verification: after an action ran, watch the service's telemetry for a bounded window.

The incident counts as resolved when the error rate (4xx + 5xx share, as ``Store.log_stats``
computes it) of the requests logged *since the execution* falls under the threshold, with at
least ``min_requests`` requests to judge by. If the window ends first, the incident escalates,
and for a reversible action the catalogue's rollback action is proposed (never run here).

"Since the execution" uses only the ``Store`` port: ``log_stats`` counts ``(now - window, now]``,
so asking with ``now = executed_at + window`` counts exactly the lines logged after
``executed_at`` (nothing is logged in the future). Pure logic plus the port; the clock and the
sleep are injected, so tests run instantly.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field

from .catalogue import ActionCatalogue, CatalogueAction
from .errors import StoreError
from .models import Incident, LogSummary, normalise_action
from .ports import Store

DEFAULT_THRESHOLD = 0.10
DEFAULT_WINDOW_SECONDS = 10.0
DEFAULT_POLL_SECONDS = 1.0
BASELINE_MINUTES = 15


class VerificationSample(BaseModel):
    """One look at the telemetry since the execution."""

    at: datetime
    total: int
    errors: int
    error_rate: float


class VerificationResult(BaseModel):
    """What verification concluded for one executed action."""

    incident_id: str
    service: str
    action: str
    resolved: bool
    error_rate_before: float | None = None
    error_rate_after: float | None = None
    threshold: float
    window_seconds: float
    samples: list[VerificationSample] = Field(default_factory=list)
    reason: str
    reversible: bool | None = None
    rollback_action: str | None = None  # proposed (not run) when unresolved and reversible
    started_at: datetime
    finished_at: datetime

    @property
    def next_step(self) -> str:
        """``resolve``, ``escalate`` or ``escalate_with_rollback``."""
        if self.resolved:
            return "resolve"
        return "escalate_with_rollback" if self.rollback_action else "escalate"


def _utcnow() -> datetime:
    return datetime.now(UTC)


def options_from_settings(settings: Any) -> dict[str, Any]:
    """``verify_recovery`` keyword arguments from ``Settings`` (``VERIFY_WINDOW_SECONDS``,
    ``VERIFY_POLL_SECONDS``, ``VERIFY_ERROR_RATE_THRESHOLD``)."""
    return {"window_seconds": settings.verify_window_seconds, "poll_interval": settings.verify_poll_seconds,
            "threshold": settings.verify_error_rate_threshold}


def errors_since(
    store: Store, service: str, since: datetime, *, horizon_seconds: float
) -> LogSummary:
    """Requests logged for ``service`` after ``since`` (up to ``horizon_seconds`` later)."""
    minutes = max(1, math.ceil(horizon_seconds / 60))
    return store.log_stats(service=service, window_minutes=minutes, now=since + timedelta(minutes=minutes))


def verify_recovery(
    store: Store,
    incident: Incident,
    *,
    action: str | CatalogueAction,
    catalogue: ActionCatalogue | None = None,
    baseline_error_rate: float | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    window_seconds: float = DEFAULT_WINDOW_SECONDS,
    poll_interval: float = DEFAULT_POLL_SECONDS,
    min_requests: int = 5,
    executed_at: datetime | None = None,
    clock: Callable[[], datetime] = _utcnow,
    sleep: Callable[[float], None] = time.sleep,
) -> VerificationResult:
    """Watch ``incident.service`` until its error rate since ``executed_at`` is under
    ``threshold``, or until ``window_seconds`` have passed.

    Args:
        store: the telemetry (``log_stats``) source.
        incident: the incident whose service is watched.
        action: the executed action (an id, or the catalogue entry).
        catalogue: where an action id is looked up for ``reversible``/``rollback_action``.
        baseline_error_rate: the rate before the execution; default: ``log_stats`` over the
            15 minutes before ``executed_at``.
        threshold: the error rate (0-1) under which the service counts as recovered.
        window_seconds: how long to watch at most (seconds in fast mode).
        poll_interval: seconds between looks; the number of looks is bounded by
            ``window_seconds / poll_interval + 1`` whatever the clock does.
        min_requests: requests needed before a rate counts as recovered.
        executed_at: when the action ran (default: now).
        clock: returns the current UTC time (injected in tests).
        sleep: waits ``seconds`` (injected in tests).

    A store failure ends the watch unresolved (fail closed: escalate).
    """
    started = clock()
    since = executed_at or started
    entry = action if isinstance(action, CatalogueAction) else (catalogue.get(action) if catalogue else None)
    action_id = entry.id if entry else normalise_action(str(action))
    before = baseline_error_rate
    samples: list[VerificationSample] = []
    reason = ""
    resolved = False
    try:
        if before is None:
            before = store.log_stats(service=incident.service, window_minutes=BASELINE_MINUTES, now=since).error_rate
        polls = int(max(0.0, window_seconds) // poll_interval) + 1 if poll_interval > 0 else 1
        deadline = started + timedelta(seconds=window_seconds)
        for poll in range(polls):
            stats = errors_since(store, incident.service, since, horizon_seconds=window_seconds + 60)
            errors = stats.errors
            samples.append(VerificationSample(at=clock(), total=stats.total, errors=errors,
                                              error_rate=stats.error_rate))
            if stats.total >= min_requests and stats.error_rate < threshold:
                resolved = True
                reason = (f"error rate since the execution is {stats.error_rate:.1%} over {stats.total} requests, "
                          f"under the threshold {threshold:.1%}")
                break
            if poll + 1 >= polls or clock() + timedelta(seconds=poll_interval) > deadline + timedelta(seconds=1e-6):
                break
            sleep(poll_interval)
    except StoreError as exc:
        reason = f"telemetry unavailable during verification: {exc}"
    if not resolved and not reason:
        last = samples[-1] if samples else None
        if last is None or last.total < min_requests:
            seen = last.total if last else 0
            reason = (f"only {seen} request(s) logged for {incident.service} within {window_seconds:g}s "
                      f"of the execution (need {min_requests}); cannot confirm recovery")
        else:
            reason = (f"error rate since the execution is still {last.error_rate:.1%} over {last.total} "
                      f"requests after {window_seconds:g}s (threshold {threshold:.1%})")
    rollback = None
    if not resolved:
        if entry is not None and entry.reversible and entry.rollback_action:
            rollback = entry.rollback_action
            reason += f"; escalating and proposing the rollback {rollback}"
        elif entry is not None and not entry.reversible:
            reason += f"; {action_id} is not reversible, escalating"
        else:
            reason += "; escalating"
    return VerificationResult(
        incident_id=incident.id, service=incident.service, action=action_id, resolved=resolved,
        error_rate_before=before, error_rate_after=samples[-1].error_rate if samples else None,
        threshold=threshold, window_seconds=window_seconds, samples=samples, reason=reason,
        reversible=entry.reversible if entry else None, rollback_action=rollback,
        started_at=started, finished_at=clock(),
    )

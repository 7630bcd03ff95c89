"""Verification: after an action ran, watch the service's telemetry for a bounded window.

The incident counts as resolved when the error rate (4xx + 5xx share, as ``Store.log_stats``
computes it) of the requests logged *since the execution* falls under the threshold, with at
least ``min_requests`` requests to judge by. If the window ends first, the incident escalates,
and for a reversible action the catalogue's rollback action is proposed (never run here).

The recovery is credited to the action (``credited``, which learning requires) only if the
service was still failing when it ran: when the minute before the execution already shows an
error rate under the threshold (with ``min_requests`` requests), the incident is resolved but the
recovery is recorded as having preceded the action, and no runbook is learned from it.

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
AT_ACTION_MINUTES = 1


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
    # False when the service had already recovered before the action ran (or it did not recover):
    # the recovery is then not the action's doing, and nothing is learned from it.
    credited: bool = False
    error_rate_before: float | None = None
    error_rate_at_action: float | None = None  # the minute before the action ran
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


class RecoveryWatch:
    """Verification as a series of looks: ``poll`` takes one and returns the result once the watch
    is over (``None``: look again after ``poll_interval``). Nothing here sleeps, so a service can
    schedule the next look and do other work meanwhile; ``verify_recovery`` is the blocking loop.

    Args: as ``verify_recovery`` (without ``sleep``).
    """

    def __init__(
        self,
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
    ) -> None:
        self.store, self.incident, self.clock = store, incident, clock
        self.threshold, self.window_seconds, self.poll_interval = threshold, window_seconds, poll_interval
        self.min_requests = min_requests
        self.started = clock()
        self.since = executed_at or self.started
        self.entry = action if isinstance(action, CatalogueAction) else (catalogue.get(action) if catalogue else None)
        self.action_id = self.entry.id if self.entry else normalise_action(str(action))
        self.before = baseline_error_rate
        self.at_action: LogSummary | None = None
        self.samples: list[VerificationSample] = []
        # The number of looks is bounded whatever the clock does.
        self.polls = int(max(0.0, window_seconds) // poll_interval) + 1 if poll_interval > 0 else 1
        self.deadline = self.started + timedelta(seconds=window_seconds)

    def poll(self) -> VerificationResult | None:
        """One look at the telemetry since the execution. A store failure ends the watch
        unresolved (fail closed: escalate)."""
        service = self.incident.service
        try:
            if self.before is None:
                self.before = self.store.log_stats(service=service, window_minutes=BASELINE_MINUTES,
                                                   now=self.since).error_rate
            if self.at_action is None:
                # Was the service still failing when the action ran? A recovery already under way
                # cannot be credited to the action (or learned as a runbook for it).
                self.at_action = self.store.log_stats(service=service, window_minutes=AT_ACTION_MINUTES,
                                                      now=self.since)
            stats = errors_since(self.store, service, self.since, horizon_seconds=self.window_seconds + 60)
        except StoreError as exc:
            return self._finish(False, f"telemetry unavailable during verification: {exc}")
        self.samples.append(VerificationSample(at=self.clock(), total=stats.total, errors=stats.errors,
                                               error_rate=stats.error_rate))
        if stats.total >= self.min_requests and stats.error_rate < self.threshold:
            return self._finish(True, f"error rate since the execution is {stats.error_rate:.1%} over {stats.total} "
                                      f"requests, under the threshold {self.threshold:.1%}")
        if (len(self.samples) >= self.polls
                or self.clock() + timedelta(seconds=self.poll_interval) > self.deadline + timedelta(seconds=1e-6)):
            return self._finish(False, "")
        return None

    def _finish(self, resolved: bool, reason: str) -> VerificationResult:
        samples, entry, window = self.samples, self.entry, self.window_seconds
        if not resolved and not reason:
            last = samples[-1] if samples else None
            if last is None or last.total < self.min_requests:
                seen = last.total if last else 0
                reason = (f"only {seen} request(s) logged for {self.incident.service} within {window:g}s "
                          f"of the execution (need {self.min_requests}); cannot confirm recovery")
            else:
                reason = (f"error rate since the execution is still {last.error_rate:.1%} over {last.total} "
                          f"requests after {window:g}s (threshold {self.threshold:.1%})")
        at_action = self.at_action
        recovered_before = (at_action is not None and at_action.total >= self.min_requests
                            and at_action.error_rate < self.threshold)
        if resolved and recovered_before:
            assert at_action is not None
            reason += (f"; but the error rate was already {at_action.error_rate:.1%} over {at_action.total} "
                       f"requests in the minute before {self.action_id} ran: the recovery preceded the action, "
                       "so it is not credited to it and nothing is learned")
        rollback = None
        if not resolved:
            if entry is not None and entry.reversible and entry.rollback_action:
                rollback = entry.rollback_action
                reason += f"; escalating and proposing the rollback {rollback}"
            elif entry is not None and not entry.reversible:
                reason += f"; {self.action_id} is not reversible, escalating"
            else:
                reason += "; escalating"
        return VerificationResult(
            incident_id=self.incident.id, service=self.incident.service, action=self.action_id, resolved=resolved,
            credited=resolved and not recovered_before, error_rate_before=self.before,
            error_rate_at_action=at_action.error_rate if at_action is not None else None,
            error_rate_after=samples[-1].error_rate if samples else None,
            threshold=self.threshold, window_seconds=window, samples=samples, reason=reason,
            reversible=entry.reversible if entry else None, rollback_action=rollback,
            started_at=self.started, finished_at=self.clock(),
        )


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
    ``threshold``, or until ``window_seconds`` have passed (``RecoveryWatch`` looks, with
    ``sleep`` between them).

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
    watch = RecoveryWatch(store, incident, action=action, catalogue=catalogue, baseline_error_rate=baseline_error_rate,
                          threshold=threshold, window_seconds=window_seconds, poll_interval=poll_interval,
                          min_requests=min_requests, executed_at=executed_at, clock=clock)
    while (result := watch.poll()) is None:
        sleep(poll_interval)
    return result

"""The kill switch on the dashboard: a worker that reads it from the store (where the CLI, the
``F`` key or another governor on the same store may have flipped it) and shows it in the header,
and the switch behind the ``F`` key (configured overriders only, audited)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import GovernorError
from ..guardrails import freeze_status, set_freeze
from .events import FreezeChanged
from .worker import Worker, WorkerContext


def frozen_text(event: Mapping[str, Any] | None) -> str | None:
    """The header's line for a kill-switch record, or ``None`` when it is off."""
    if not event or not event.get("on"):
        return None
    at = str(event.get("at") or "")[11:16]
    return f"FROZEN by {event.get('by')}{f' at {at} UTC' if at else ''}: {event.get('reason') or 'no reason given'}"


class GuardrailWatch(Worker):
    """Reads the kill switch every ``interval`` seconds and posts it when it changes."""

    role = "guardrails"

    def __init__(self, ctx: WorkerContext, *, interval: float = 2.0) -> None:
        super().__init__(ctx)
        self.interval = interval
        self.shown: tuple[bool, str | None] = (False, None)

    def step(self) -> None:
        event = freeze_status(self.ctx.store)
        text = frozen_text(event)
        if (True, text) != self.shown:
            self.ctx.bus.post(FreezeChanged(text))
            if self.shown[0] or text:  # the first look only speaks when frozen
                self.ctx.activity("guardrails", f"⛔ kill switch ON: {text}" if text else
                                  f"kill switch off (by {(event or {}).get('by', '?')})",
                                  level="warn" if text else "info")
            self.shown = (True, text)
        self.ctx.stop.wait(self.interval)


def switch_freeze(ctx: WorkerContext, overriders: tuple[str, ...], *, on: bool, reason: str, user: str) -> str:
    """The ``F`` key: switch the kill switch as ``user`` (an overrider), audited; returns the hint."""
    if user not in overriders:
        return f"{user} is not a configured overrider: the kill switch is unchanged"
    if on and not reason.strip():
        return "a freeze needs a reason: press F and type it"
    try:
        set_freeze(ctx.store, ctx.audit, on=on, by=user, reason=reason.strip())
    except GovernorError as exc:
        return f"the kill switch could not be switched: {exc}"
    ctx.bus.post(FreezeChanged(frozen_text({"on": on, "by": user, "reason": reason.strip()})))
    return f"kill switch {'ON' if on else 'off'} (by {user})"

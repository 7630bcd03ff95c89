"""The UI thread's side: folds events into snapshots and turns keys into approval replies.

Keys act as the configured local user and only ever *push a reply* into the local inbox; what a
reply means is decided by the slack worker through the core's ``ApprovalSession`` rules (critical
refuses APPROVE, FORCE_OVERRIDE needs a reason, only configured users count), and is audited
there, exactly like a Slack reply. The ``l`` key likewise only asks the approval loop to approve
the selection's learned runbook; the loop checks that the user is an approver and audits it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from ..errors import GovernorError
from .frames import PanelCache
from .dashboard import Dashboard
from .state import DashboardState, KeyPressed, Prompt, reduce

REPLY_KEYS = {"a": "APPROVE", "h": "HOLD", "r": "REJECT"}
ANSWERABLE = frozenset({"PENDING_APPROVAL", "HELD", "READY_TO_EXECUTE"})
HINT_SECONDS = 6.0


class Controller:
    """Args:
    state: the first snapshot.
    inbox: the local inbox keys push replies into (``None``: approvals happen elsewhere).
    user: the configured local user the keys act as.
    resume: continues a present-mode pause (the space key).
    review: ``(incident_id, user)``: asks for the incident's learned runbook to be approved
        (the ``l`` key; ``None``: not available here).
    clock: wall-clock time for the header.
    freeze: ``(on, reason, user) -> message``: switches the kill switch (the ``F`` key; ``None``:
        not available here). Whether the user may is decided behind it.
    """

    def __init__(self, state: DashboardState, *, inbox: Any = None, user: str = "oncall",
                 resume: Callable[[], None] | None = None, review: Callable[[str, str], None] | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 freeze: Callable[[bool, str, str], str] | None = None) -> None:
        self.state = state
        self.freeze = freeze
        self.inbox = inbox
        self.user = user
        self.resume = resume
        self.review = review
        self.clock = clock
        self.quit = False
        self.cache = PanelCache()
        self._hint_at = 0.0

    # --- events --------------------------------------------------------------------------

    def handle(self, events: Iterable[Any]) -> bool:
        """Apply events (worker updates and keys); True when the screen should change."""
        changed = False
        for event in events:
            if isinstance(event, KeyPressed):
                self.on_key(event.key)
            else:
                self.state = reduce(self.state, event)
            changed = True
        if self.state.hint and time.monotonic() - self._hint_at > HINT_SECONDS:
            self.state = replace(self.state, hint=None)
            changed = True
        return changed

    def snapshot(self) -> DashboardState:
        return replace(self.state, now=self.clock())

    def renderable(self) -> Dashboard:
        """The frame to draw: the snapshot now, through the panel cache (only the panels whose
        data changed are rebuilt)."""
        return Dashboard(self.snapshot(), cache=self.cache)

    def _hint(self, text: str) -> None:
        self.state = replace(self.state, hint=text)
        self._hint_at = time.monotonic()

    # --- keys ----------------------------------------------------------------------------

    def on_key(self, key: str) -> None:
        if self.state.prompt is not None:
            self._prompt_key(key)
            return
        if key in ("q", "Q"):
            self.quit = True
        elif key in ("up", "k"):
            self.move(-1)
        elif key in ("down", "j"):
            self.move(1)
        elif key in ("pageup", "pagedown"):
            self.move(-10 if key == "pageup" else 10)
        elif key == "esc":
            self.state = replace(self.state, follow=True)
            self._hint("selection follows the incident that needs attention")
        elif key == "space":
            if self.resume is not None:
                self.resume()
        elif key in REPLY_KEYS:
            self.reply(REPLY_KEYS[key])
        elif key == "l":
            self.approve_runbook()
        elif key == "F":
            self.toggle_freeze()
        elif key == "f":
            view = self._answerable()
            if view is not None:
                self.state = replace(self.state, prompt=Prompt(incident_id=view.id,
                                                               label=f"FORCE_OVERRIDE {view.ticket or view.id} reason"))

    def move(self, delta: int) -> None:
        order = self.state.display_order()
        if not order:
            return
        ids = [v.id for v in order]
        index = ids.index(self.state.selected) if self.state.selected in ids else 0
        index = max(0, min(len(ids) - 1, index + delta))
        self.state = replace(self.state, selected=ids[index], follow=False)

    def _answerable(self) -> Any:
        view = self.state.selected_incident
        if view is None:
            self._hint("no incident selected")
            return None
        if self.inbox is None or not hasattr(self.inbox, "push"):
            self._hint("approvals happen in the configured approval channel, not here")
            return None
        if view.state not in ANSWERABLE:
            self._hint(f"{view.ticket or view.id} is {view.state}: nothing to approve")
            return None
        return view

    def reply(self, text: str, view: Any = None) -> bool:
        view = view or self._answerable()
        if view is None:
            return False
        try:
            self.inbox.push(view.id, self.user, text)
        except GovernorError as exc:
            self._hint(str(exc))
            return False
        command = text.split(maxsplit=1)[0]
        self._hint(f"{command} sent for {view.ticket or view.id} as {self.user}")
        return True

    def approve_runbook(self) -> bool:
        """The ``l`` key: approve the learned runbook of the selection (the loop decides)."""
        view = self.state.selected_incident
        if view is None:
            self._hint("no incident selected")
            return False
        if self.review is None:
            self._hint("learned runbooks are reviewed with: python -m safety_governor runbooks")
            return False
        if not view.learned or view.learned_status != "pending_review":
            status = f" ({view.learned} is {view.learned_status})" if view.learned else ""
            self._hint(f"{view.ticket or view.id} has no learned runbook waiting for review{status}")
            return False
        self.review(view.id, self.user)
        self._hint(f"approval of runbook {view.learned} sent as {self.user}")
        return True

    def toggle_freeze(self) -> None:
        """The ``F`` key: switch the kill switch off, or ask for the reason to switch it on."""
        if self.freeze is None:
            self._hint("the kill switch is switched with: python -m safety_governor freeze on|off")
        elif self.state.frozen:
            self._hint(self.freeze(False, "", self.user))
        else:
            self.state = replace(self.state, prompt=Prompt(incident_id="", label="FREEZE reason", kind="freeze"))

    def _prompt_key(self, key: str) -> None:
        prompt = self.state.prompt
        assert prompt is not None
        if key == "esc":
            self.state = replace(self.state, prompt=None)
            self._hint("freeze cancelled" if prompt.kind == "freeze" else "override cancelled")
        elif key == "enter":
            self.state = replace(self.state, prompt=None)
            reason = prompt.text.strip()
            if prompt.kind == "freeze":
                if self.freeze is not None:
                    self._hint(self.freeze(True, reason, self.user))
                return
            view = self.state.incident(prompt.incident_id)
            # An empty reason is sent as typed: the core rules answer that a reason is required.
            if view is not None:
                self.reply(f"FORCE_OVERRIDE {reason}".strip(), view)
        elif key == "backspace":
            self.state = replace(self.state, prompt=replace(prompt, text=prompt.text[:-1]))
        elif key == "space":
            self.state = replace(self.state, prompt=replace(prompt, text=prompt.text + " "))
        elif len(key) == 1 and len(prompt.text) < 200:
            self.state = replace(self.state, prompt=replace(prompt, text=prompt.text + key))

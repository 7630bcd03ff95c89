"""A scripted on-call for unattended walkthroughs and scenario replays."""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

from ..errors import GovernorError
from .board import UNSAFE_RULES


def autopilot_replies(gate: Any, action: str | None) -> list[str]:
    """What the scripted on-call answers for a gate decision: nothing for a passed gate, REJECT
    for an unsafe plan, APPROVE then FORCE_OVERRIDE where APPROVE is refused, APPROVE otherwise."""
    if gate.decision == "execute":
        return []
    unsafe = [r for r in gate.rule_ids if r in UNSAFE_RULES]
    if unsafe:
        return [f"REJECT autopilot: {', '.join(unsafe)}; not running {action or 'the plan'}, paging the service owner"]
    if gate.approval_required == "force_override":
        return ["APPROVE", f"FORCE_OVERRIDE autopilot walkthrough: on-call confirms {action} is the documented fix"]
    return ["APPROVE"]


class Autopilot(threading.Thread):
    """A scripted on-call for unattended walkthroughs: answers requests in the local inbox.

    Args:
        inbox: the local inbox (it needs ``requests``, ``thread`` and ``push``).
        user: who the on-call is (a configured approver, or its replies are ``unauthorized``).
        scripts: fixed replies ``(user, text)`` per incident id (scenario replays); other
            incidents get ``autopilot_replies`` when ``answer_all``.
        think_seconds: the pause before each reply.
    """

    def __init__(self, inbox: Any, user: str, stop: threading.Event, *, think_seconds: float = 1.5,
                 scripts: dict[str, list[tuple[str, str]]] | None = None, answer_all: bool = True) -> None:
        super().__init__(name="governor-autopilot", daemon=True)
        self.inbox = inbox
        self.user = user
        self.stop = stop
        self.think = think_seconds
        self.scripts = dict(scripts or {})
        self.answer_all = answer_all
        self._plans: dict[str, deque[tuple[str, str]]] = {}
        self._next: dict[str, float] = {}
        self._answered: dict[str, int] = {}

    def run(self) -> None:
        while not self.stop.wait(0.3):
            try:
                self.tick(time.monotonic())
            except GovernorError:
                continue  # the request closed meanwhile; nothing to answer

    def tick(self, now: float) -> None:
        for request in self.inbox.requests():
            incident_id = request.incident.id
            plan = self._plans.get(incident_id)
            if plan is None:
                if incident_id in self.scripts:
                    replies = self.scripts[incident_id]
                elif self.answer_all:
                    replies = [(self.user, t) for t in autopilot_replies(request.gate, request.gate.proposed_action)]
                else:
                    replies = []
                plan = self._plans[incident_id] = deque(replies)
                self._next[incident_id] = now + self.think
                self._answered[incident_id] = -1  # the first reply waits for nobody
            if not plan or now < self._next[incident_id]:
                continue
            thread = self.inbox.thread(incident_id)
            # Wait for the governor's answer to the previous reply (or give up waiting after 8 s).
            if len(thread) <= self._answered[incident_id] and now < self._next[incident_id] + 8:
                continue
            user, text = plan.popleft()
            self.inbox.push(incident_id, user, text)
            self._answered[incident_id] = len(self.inbox.thread(incident_id))
            self._next[incident_id] = now + self.think

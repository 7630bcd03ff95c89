"""The local approval inbox: the offline ``ApprovalChannel`` (TUI keys, CLI, scripted on-call).

A request opens a thread per incident; humans (the TUI's keys, the autopilot, a scenario's
scripted replies) ``push`` replies into it; the approval loop reads each reply exactly once with
``replies`` (or ``pending_replies`` + ``ack``). The inbox only carries text: what a reply means is
decided by the core's approval rules (``approvals.ApprovalSession``), exactly as for Slack.

With an ``ApprovalState`` (a store), the inbox also receives replies written to the store by
another process (``python -m safety_governor approvals reply``): they survive a restart and are
handed out until acknowledged, so a running dashboard applies each of them exactly once.
"""

from __future__ import annotations

import threading
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from ..errors import ApprovalChannelError
from ..models import GateOutput, Incident
from ..ports import Readiness, Ticket

if TYPE_CHECKING:
    from ..approval_state import ApprovalState, Reply

LOCAL_KEY = "local:"  # replies pushed in this process (in memory)
STORED_KEY = "cli:"  # replies queued in the store from a shell; Slack's stored replies are not ours

MessageKind = Literal["request", "reply", "notify"]


@dataclass(frozen=True)
class InboxMessage:
    """One message of an incident's thread."""

    at: datetime
    incident_id: str
    author: str
    text: str
    kind: MessageKind


@dataclass(frozen=True)
class InboxRequest:
    """An approval request as posted: what the on-call sees."""

    handle: str
    incident: Incident
    gate: GateOutput
    message: str
    ticket: Ticket | None
    at: datetime


class LocalInbox:
    """The in-process approval channel.

    Args:
        author: the name the governor posts under in threads.
        state: the store's approval bookkeeping; replies recorded there (by the CLI) are read too.
    """

    name = "local-inbox"

    def __init__(self, author: str = "governor", *, state: ApprovalState | None = None) -> None:
        self.author = author
        self.state = state
        self._shown: set[str] = set()  # stored replies already added to a thread
        self._cond = threading.Condition()
        self._requests: dict[str, InboxRequest] = {}
        self._pending: dict[str, deque[tuple[str, str]]] = {}
        self._threads: dict[str, list[InboxMessage]] = {}
        self._seq = 0

    def _append(self, incident_id: str, author: str, text: str, kind: MessageKind) -> None:
        self._threads.setdefault(incident_id, []).append(
            InboxMessage(at=datetime.now(UTC), incident_id=incident_id, author=author, text=text, kind=kind))

    def request(self, incident: Incident, gate: GateOutput, *, message: str, ticket: Ticket | None = None) -> str:
        """Open (or re-open) the incident's thread with the request; returns its handle."""
        with self._cond:
            self._seq += 1
            handle = f"inbox-{self._seq}"
            self._requests[incident.id] = InboxRequest(handle=handle, incident=incident, gate=gate, message=message,
                                                       ticket=ticket, at=datetime.now(UTC))
            self._pending.setdefault(incident.id, deque())
            self._append(incident.id, self.author, message, "request")
            self._cond.notify_all()
            return handle

    def push(self, incident_id: str, user: str, text: str) -> None:
        """A human reply. Raises ``ApprovalChannelError`` when nothing was requested for the incident."""
        with self._cond:
            if incident_id not in self._requests:
                raise ApprovalChannelError(f"no approval request is open for {incident_id}")
            self._pending[incident_id].append((user, text))
            self._append(incident_id, user, text, "reply")
            self._cond.notify_all()

    def pending_replies(self, incident_id: str) -> list[Reply]:
        """Replies pushed here since the last call, then stored replies not yet acknowledged."""
        from ..approval_state import Reply

        with self._cond:
            queue = self._pending.get(incident_id)
            pushed = list(queue) if queue else []
            if queue:
                queue.clear()
        replies = [Reply(incident_id, f"{LOCAL_KEY}{uuid.uuid4().hex}", user, text, self.name)
                   for user, text in pushed]
        if self.state is not None:
            stored = [r for r in self.state.unconsumed(incident_id) if r.key.startswith(STORED_KEY)]
            with self._cond:
                for reply in stored:
                    if reply.key not in self._shown:
                        self._shown.add(reply.key)
                        self._append(incident_id, reply.user, reply.text, "reply")
            replies.extend(stored)
        return replies

    def ack(self, incident_id: str, key: str) -> None:
        """A reply was applied: stored ones are marked consumed (in-memory ones are gone already)."""
        if self.state is not None and key.startswith(STORED_KEY):
            self.state.consume(incident_id, key)

    def replies(self, incident_id: str) -> list[tuple[str, str]]:
        """New replies ``(user, text)`` since the last call, in order; each is returned once."""
        from ..approval_state import take_replies

        return take_replies(self, incident_id)

    def notify(self, incident_id: str, text: str) -> None:
        with self._cond:
            self._append(incident_id, self.author, text, "notify")
            self._cond.notify_all()

    def wait(self, timeout: float) -> bool:
        """Block until something is posted or pushed (or ``timeout`` seconds pass)."""
        with self._cond:
            return self._cond.wait(timeout)

    def requests(self) -> list[InboxRequest]:
        with self._cond:
            return list(self._requests.values())

    def get_request(self, incident_id: str) -> InboxRequest | None:
        with self._cond:
            return self._requests.get(incident_id)

    def thread(self, incident_id: str) -> list[InboxMessage]:
        with self._cond:
            return list(self._threads.get(incident_id, ()))

    def check(self) -> Readiness:
        return Readiness(ok=True, reason="local inbox (TUI keys, scripted replies)")

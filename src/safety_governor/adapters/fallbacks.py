"""Fallbacks: Slack with the local inbox beside it, Jira with local tickets behind it.

``FallbackApprovalChannel`` mirrors every request into the local inbox and accepts replies from
both. The local inbox is always usable, not only while Slack is down: an outage must not stop
the on-call at the governor's console, and what the console shows must not depend on a remote
service's health. Nothing is loosened by this: every reply, from either side, goes through the
same ``ApprovalSession`` with the same list of who may decide (``bootstrap.build_approval_policy``:
the Slack ids plus the local approvers, or nobody at all when Slack has no approvers configured).

``FallbackTickets`` opens the Jira issue, and when Jira cannot be reached opens a local ticket
instead and queues the Jira issue for later (``JiraTickets.queue_late_create``); comments and the
resolution then go to the local ticket, and to the Jira issue as soon as it exists.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

from ..approval_state import ApprovalState, Reply, take_replies
from ..errors import GovernorError, TicketError
from ..models import GateOutput, Incident
from ..ports import ApprovalChannel, Readiness, Ticket, TicketPort


LOCAL_PREFIX = "console:"  # marks the local inbox's replies among Slack's


class FallbackApprovalChannel:
    """Args:
    primary: the Slack channel (needs ``pending_replies``/``ack`` for exactly-once).
    local: the local inbox (``request``/``replies``/``notify``; ``push`` for the TUI keys).
    """

    def __init__(self, primary: Any, local: ApprovalChannel) -> None:
        self.primary = primary
        self.local = local
        self.name = primary.name

    @property
    def error(self) -> str | None:
        return getattr(self.primary, "error", None)

    def request(self, incident: Incident, gate: GateOutput, *, message: str, ticket: Ticket | None = None) -> str:
        handle = ""
        try:
            handle = self.primary.request(incident, gate, message=message, ticket=ticket)
        finally:  # the console gets the request whatever happened on Slack
            local_handle = self.local.request(incident, gate, message=message, ticket=ticket)
        return handle or local_handle

    def pending_replies(self, incident_id: str) -> list[Reply]:
        """Slack replies not yet acknowledged, then the local inbox's new ones."""
        replies: list[Reply] = []
        try:
            replies.extend(self.primary.pending_replies(incident_id))
        except GovernorError:
            pass  # recorded by the primary; the local inbox still answers
        local_pending = getattr(self.local, "pending_replies", None)
        if callable(local_pending):
            replies.extend(Reply(r.incident_id, f"{LOCAL_PREFIX}{r.key}", r.user, r.text, r.source)
                           for r in local_pending(incident_id))
        else:
            replies.extend(Reply(incident_id, f"{LOCAL_PREFIX}{uuid.uuid4().hex}", user, text, self.local.name)
                           for user, text in self.local.replies(incident_id))
        return replies

    def ack(self, incident_id: str, key: str) -> None:
        if key.startswith(LOCAL_PREFIX):
            local_ack = getattr(self.local, "ack", None)
            if callable(local_ack):
                local_ack(incident_id, key[len(LOCAL_PREFIX):])
        else:
            self.primary.ack(incident_id, key)

    def replies(self, incident_id: str) -> list[tuple[str, str]]:
        return take_replies(self, incident_id)

    def notify(self, incident_id: str, text: str) -> None:
        try:
            self.primary.notify(incident_id, text)
        finally:
            self.local.notify(incident_id, text)

    def update(self, incident_id: str, status: str, *, final: bool = False) -> None:
        for side in (self.primary, self.local):
            update = getattr(side, "update", None)
            if callable(update):
                update(incident_id, status, final=final)

    def check(self) -> Readiness:
        ready = self.primary.check()
        if ready.ok:
            return Readiness(ok=True, reason=f"{ready.reason}; local inbox alongside")
        return Readiness(ok=False, reason=f"{ready.reason}; the local inbox still takes replies from local approvers")

    # --- pass-through for the TUI (keys, autopilot) and the worker's lifecycle ----------------

    def wait(self, timeout: float) -> bool:
        wait = getattr(self.local, "wait", None)
        if callable(wait):
            return bool(wait(timeout))
        return threading.Event().wait(timeout)

    def push(self, incident_id: str, user: str, text: str) -> None:
        self.local.push(incident_id, user, text)  # type: ignore[attr-defined]

    def requests(self) -> Any:
        return self.local.requests()  # type: ignore[attr-defined]

    def get_request(self, incident_id: str) -> Any:
        return self.local.get_request(incident_id)  # type: ignore[attr-defined]

    def thread(self, incident_id: str) -> Any:
        return self.local.thread(incident_id)  # type: ignore[attr-defined]

    def flush(self) -> Any:
        flush = getattr(self.primary, "flush", None)
        return flush() if callable(flush) else 0

    def start(self) -> None:
        start = getattr(self.primary, "start", None)
        if callable(start):
            start()

    def close(self) -> None:
        for side in (self.primary, self.local):
            close = getattr(side, "close", None)
            if callable(close):
                close()


class FallbackTickets:
    """Args:
    primary: ``JiraTickets``.
    local: the local ticket store.
    state: the bookkeeping over the governor's store (which key belongs to which incident).
    """

    def __init__(self, primary: Any, local: TicketPort, state: ApprovalState) -> None:
        self.primary = primary
        self.local = local
        self.state = state
        self.name = primary.name

    @property
    def error(self) -> str | None:
        return getattr(self.primary, "error", None)

    def create(self, incident: Incident) -> Ticket:
        local = self.state.ticket(incident.id, "local")
        if local is not None:  # Jira was down at detection: the local ticket stays the handle
            return Ticket(key=str(local["key"]), incident_id=incident.id, url=local.get("url"))
        try:
            return self.primary.create(incident)
        except TicketError:
            ticket = self.local.create(incident)
            self.state.link_ticket(incident.id, system="local", key=ticket.key, url=ticket.url)
            self.primary.queue_late_create(incident, ticket.key)
            return ticket

    def _targets(self, key: str) -> tuple[str | None, str | None]:
        """(local key, Jira key) for a key handed out by ``create``."""
        link = self.state.ticket_by_key(key)
        if link is None or link.get("system") != "local":
            return None, key
        jira = self.state.ticket(str(link["incident_id"]), self.primary.name)
        return key, (str(jira["key"]) if jira else None)

    def comment(self, key: str, text: str) -> None:
        local, jira = self._targets(key)
        if local:
            self.local.comment(local, text)
        if jira:
            self.primary.comment(jira, text)

    def resolve(self, key: str, resolution: str) -> None:
        local, jira = self._targets(key)
        if local:
            self.local.resolve(local, resolution)
        if jira:
            self.primary.resolve(jira, resolution)
        elif local:  # the Jira issue is still to be created: resolve it right after
            incident_id = str((self.state.ticket_by_key(local) or {}).get("incident_id"))
            self.state.queue(self.primary.name, "resolve_late", incident_id, {"resolution": resolution},
                             dedupe=f"resolve_late:{incident_id}")

    def check(self) -> Readiness:
        ready = self.primary.check()
        if ready.ok:
            return ready
        return Readiness(ok=False, reason=f"{ready.reason}; local tickets are opened meanwhile")

    def flush(self) -> Any:
        return self.primary.flush()

    def close(self) -> None:
        close = getattr(self.local, "close", None)
        if callable(close):
            close()

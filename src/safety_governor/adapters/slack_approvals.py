"""Slack approvals: a Block Kit request per decision, answered by buttons or thread replies.

``SlackApprovalChannel`` implements the ``ApprovalChannel`` port with ``slack_sdk``'s
``WebClient`` (``SLACK_API_URL`` may point it elsewhere). It never judges a reply: every click
and every thread reply becomes a ``(user id, text)`` pair for the core's ``ApprovalSession``.

* **Buttons** (Approve / Force override / Hold / Reject) are shown only when Socket Mode is
  configured (``SLACK_APP_TOKEN``): without a receiver a click would only show the user an error.
  A click counts as the clicking user's command (``payload["user"]["id"]``), after checking that
  it was made on the message we posted for that incident.
* **Force override** opens a modal (``views.open`` with the click's ``trigger_id``) asking for
  the reason; its submission becomes ``FORCE_OVERRIDE <reason>`` from the submitting user. A modal
  keeps the reason bound to the person who clicked and cannot be mistaken for a thread
  reply. If the modal cannot open (the trigger expired, a missing scope), a thread prompt asks
  for ``FORCE_OVERRIDE <reason>`` as a reply instead.
* **Thread replies** are read with ``conversations.replies``: at most one call every
  ``SLACK_POLL_SECONDS`` (default 60) for all waiting threads together, which keeps a
  commercially distributed app outside the Marketplace within Slack's Tier 1 limit for that
  method (1 request per minute); each thread is read in turn. With Socket Mode, replies are
  pushed as ``message`` events and a thread is also read every ``SLACK_CATCHUP_POLL_SECONDS`` as
  a safety net. Only messages after the request count, never the bot's own (``auth.test``
  ``user_id``/``bot_id``) or other bots'.
* **Every write is queued first** (the outbox in ``approval_state``) and then sent, in order per
  incident: a Slack outage leaves the request queued, the incident pending (nothing executes
  without a reply), the failure in ``error``, ``check()`` and an ``integration_error`` event,
  and the call is retried with exponential backoff on the next ``request``/``replies``/``flush``.
* **Rate limits**: a 429 asking for a short wait (≤ ``rate_limit_max_wait`` s) is retried in
  place; a longer one reschedules that call after ``Retry-After`` (seconds or an HTTP-date)
  instead of blocking the worker thread.

The parts live beside this module: ``slack_blocks`` (the Block Kit, every text clipped to Slack's
documented limits; untrusted text escaped for mrkdwn), ``slack_socket`` (Socket Mode: clicks, the
override modal, pushed replies) and ``slack_web`` (Web API calls: retries and errors mapped).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from slack_sdk import WebClient
from slack_sdk.http_retry import RetryHandler

from ..approval_state import ApprovalState, OutboxOp, Reply, take_replies
from ..errors import ApprovalChannelError
from ..models import GateOutput, Incident
from ..ports import Readiness, Ticket
from .slack_blocks import (
    MESSAGE_TEXT_LIMIT,
    approval_blocks,
    clip,
    elastic_link,
    escape,
    unescape,
    updated_blocks,
)
from .slack_socket import SocketModeReceiver, is_human, message_ts
from .slack_web import SlackPermanent, SlackUnavailable, call, default_retry_handlers

__all__ = ["SlackApprovalChannel", "default_retry_handlers", "missing_settings"]

MAX_PAGES = 20
# conversations.replies is Tier 1 (1 request per minute) for commercially distributed apps outside
# the Marketplace created after 2025-05-29; Tier 3 (50+ per minute) for internal apps. The default
# keeps every app under Tier 1 (one call a minute, all threads together).
DEFAULT_POLL_SECONDS = 60.0


class _NotYet(Exception):
    """The call depends on one that has not happened yet (e.g. the request is not posted)."""


class SlackApprovalChannel(SocketModeReceiver):
    """The ``ApprovalChannel`` over Slack, durable through ``ApprovalState``.

    Args:
        token: the bot token (``xoxb-…``).
        channel: where requests are posted (id or name).
        state: the bookkeeping over the governor's store (thread ts, seen replies, the outbox).
        approvers / overriders: Slack user ids allowed to decide (shown in the message and in
            ``check()``; the ``ApprovalSession`` enforces them). With none, approvals are refused.
        app_token: the app-level token (``xapp-…``) for Socket Mode; turns the buttons on.
        api_url: the Web API base URL (default Slack's).
        admin_user_id: who gets an urgent DM for critical or blocked incidents.
        kibana_url: base of the Elastic link in the message.
        poll_seconds: the least time between two ``conversations.replies`` calls, all threads
            together (each page counts; Slack's Tier 1 allows one a minute).
        catchup_poll_seconds: thread read interval with Socket Mode (a safety net).
        max_backoff_seconds: the longest wait before retrying after failures.
        retry_handlers: the WebClient's (default: ``default_retry_handlers()``).
        clock: monotonic seconds (tests inject one).
    """

    name = "slack"

    def __init__(
        self,
        *,
        token: str,
        channel: str,
        state: ApprovalState,
        approvers: Iterable[str] = (),
        overriders: Iterable[str] = (),
        app_token: str | None = None,
        api_url: str | None = None,
        admin_user_id: str | None = None,
        kibana_url: str | None = None,
        poll_seconds: float = DEFAULT_POLL_SECONDS,
        catchup_poll_seconds: float = 300.0,
        max_backoff_seconds: float = 300.0,
        timeout: int = 10,
        retry_handlers: list[RetryHandler] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = WebClient(token=token, base_url=api_url or "https://slack.com/api/", timeout=timeout,
                                retry_handlers=default_retry_handlers() if retry_handlers is None else retry_handlers)
        self.channel = channel
        self.state = state
        self.approvers = tuple(approvers)
        self.overriders = tuple(overriders)
        self.interactive = bool(app_token)
        self._app_token = app_token
        self.admin_user_id = admin_user_id
        self.kibana_url = kibana_url
        self.poll_seconds = poll_seconds
        self.catchup_poll_seconds = catchup_poll_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.clock = clock
        self.error: str | None = None  # the last failure, for the TUI; None once calls succeed again
        self._lock = threading.RLock()
        self._identity: tuple[str, str] | None = None
        self._flush_failures = 0
        self._next_flush = 0.0
        self._next_poll: dict[str, float] = {}
        self._replies_next_at = 0.0  # no conversations.replies call before this (all threads)
        self._asked: dict[str, float] = {}  # incident -> when it last asked for its replies
        self._last_read: dict[str, float] = {}  # incident -> when its thread was last read
        self._poll_failures: dict[str, int] = {}
        self._threads: dict[tuple[str, str], str] = {}  # (channel id, thread ts) -> incident id
        self._revision = 0
        self._socket: Any = None
        self._socket_retry_at: float | None = None
        self._lane_failures: dict[str, int] = {}
        self._lane_retry: dict[str, float] = {}

    @classmethod
    def from_settings(cls, settings: Any, state: ApprovalState, **overrides: Any) -> SlackApprovalChannel:
        missing = missing_settings(settings)
        if missing:
            raise ApprovalChannelError(f"Slack approvals need {', '.join(missing)}")
        kwargs: dict[str, Any] = dict(
            token=settings.slack_bot_token.get_secret_value(), channel=settings.slack_channel, state=state,
            approvers=settings.slack_approvers, overriders=settings.slack_overriders,
            app_token=settings.slack_app_token.get_secret_value() if settings.slack_app_token else None,
            api_url=settings.slack_api_url, admin_user_id=settings.slack_admin_user_id,
            kibana_url=settings.elastic_kibana_url, poll_seconds=settings.slack_poll_seconds,
            catchup_poll_seconds=settings.slack_catchup_poll_seconds,
            max_backoff_seconds=settings.slack_max_backoff_seconds,
        )
        kwargs.update(overrides)
        return cls(**kwargs)

    @property
    def accepting(self) -> bool:
        """False when no Slack user may decide: every approval is refused."""
        return bool(self.approvers or self.overriders)

    # --- the port ---------------------------------------------------------------------------

    def request(self, incident: Incident, gate: GateOutput, *, message: str, ticket: Ticket | None = None) -> str:
        """Post the request (once per decision); returns the message ts, or ``pending:<id>``
        when Slack is unreachable (the post is queued and retried)."""
        with self._lock:
            posted = self.state.posted(incident.id, self.name)
            if posted is None or posted.get("decision_id") != gate.decision_id:
                blocks = approval_blocks(incident, gate, message=message, ticket=ticket,
                                         elastic_url=elastic_link(self.kibana_url, incident.id),
                                         interactive=self.interactive, accepting=self.accepting)
                text = (f"Approval needed for {incident.id} ({incident.service}, {incident.severity}): "
                        f"{gate.decision}, action {gate.proposed_action or '(none)'}")
                self.state.queue(self.name, "post", incident.id,
                                 {"decision_id": gate.decision_id, "text": text, "blocks": blocks},
                                 dedupe=f"post:{incident.id}:{gate.decision_id}")
                if self.admin_user_id and (incident.severity == "critical" or gate.decision != "execute"):
                    self.state.queue(self.name, "dm_admin", incident.id, {
                        "decision_id": gate.decision_id,
                        "text": (f"Urgent: {incident.id} ({incident.service}, {incident.severity}) is "
                                 f"{gate.decision} and waits for a human decision."),
                    }, dedupe=f"dm:{incident.id}:{gate.decision_id}")
            self.flush()
            posted = self.state.posted(incident.id, self.name)
            if posted is not None and posted.get("decision_id") == gate.decision_id:
                return str(posted["ref"]["ts"])
            return f"pending:{incident.id}"

    def replies(self, incident_id: str) -> list[tuple[str, str]]:
        return take_replies(self, incident_id)

    def pending_replies(self, incident_id: str) -> list[Reply]:
        """Replies received and not yet acknowledged (after retrying queued calls and reading
        the thread when due). ``DurableApprovals`` acks each inside its approval transaction."""
        self.flush()
        if self._socket_retry_at is not None and self.clock() >= self._socket_retry_at:
            self.start()
        self._poll_thread(incident_id)
        return self.state.unconsumed(incident_id)

    def ack(self, incident_id: str, key: str) -> None:
        self.state.consume(incident_id, key)

    def notify(self, incident_id: str, text: str) -> None:
        """Answer in the request's thread (queued until the request is posted)."""
        self._queue_thread_message(incident_id, escape(text))

    def update(self, incident_id: str, status: str, *, final: bool = False) -> None:
        """``chat.update`` the request with a status line; ``final`` removes the buttons."""
        self.state.queue(self.name, "update", incident_id, {"status": status, "final": final})
        self.flush()

    def check(self) -> Readiness:
        """Configuration first, then one ``auth.test``; names what is missing or failing."""
        if not self.accepting:
            return Readiness(ok=False, reason=(
                "SLACK_APPROVERS and SLACK_OVERRIDERS are empty: no Slack user may approve, so the governor "
                "refuses every approval until they are set"))
        try:
            self._whoami(refresh=True)
        except SlackUnavailable as exc:
            return Readiness(ok=False, reason=f"{exc}; {len(self.state.pending_ops(self.name))} call(s) queued")
        if not self.interactive:
            mode = f"thread replies read by polling, one call every {self.poll_seconds:g}s at most (no SLACK_APP_TOKEN)"
        elif self._socket_retry_at is not None:
            mode = f"Socket Mode not connected (retrying); thread replies polled, one call every {self.poll_seconds:g}s at most"
        else:
            mode = "buttons over Socket Mode"
        queued = len(self.state.pending_ops(self.name))
        note = f"; reachable again, {queued} queued call(s) will be retried" if queued else ""
        return Readiness(ok=True, reason=f"channel {self.channel}, {mode}{note}")

    # --- outbox and polling -----------------------------------------------------------------

    def flush(self, *, force: bool = False) -> int:
        """Send queued calls in order (per incident, a failed call holds back the later ones);
        returns how many are still queued. Respects the backoff unless ``force``: the whole
        channel backs off when Slack is unreachable or throttling (429, 5xx); a call Slack
        refuses (``ok: false``) backs off only its own lane."""
        with self._lock:
            now = self.clock()
            if not force and now < self._next_flush:
                return len(self.state.pending_ops(self.name))
            held: set[str | None] = set()
            failure: SlackUnavailable | None = None
            for op in self.state.pending_ops(self.name):
                # Calls about one incident keep their order; the admin DM has its own lane, so a
                # bad SLACK_ADMIN_USER_ID never holds back the thread answers.
                lane = f"dm:{op.incident_id}" if op.op == "dm_admin" else str(op.incident_id)
                if lane in held or (not force and self._lane_retry.get(lane, 0.0) > now):
                    held.add(lane)
                    continue
                try:
                    result = self._run(op)
                except _NotYet:
                    held.add(lane)
                    continue
                except SlackUnavailable as exc:
                    held.add(lane)
                    failure = exc
                    self.state.record_error(self.name, op.op, str(exc), incident_id=op.incident_id,
                                            retry_in=self._backoff_after_failure(exc, lane, now))
                    if exc.unreachable:
                        break  # every other call would fail the same way
                    continue
                except SlackPermanent as exc:
                    self.state.record_error(self.name, op.op, f"{exc} (dropped)", incident_id=op.incident_id)
                    result = {"dropped": str(exc)}
                self._lane_failures.pop(lane, None)
                self._lane_retry.pop(lane, None)
                self.state.op_done(op, result)
            if failure is None:
                self._flush_failures = 0
                self._next_flush = 0.0
                if not self._poll_failures and not self._lane_retry:
                    self.error = None
            else:
                self.error = str(failure)
            return len(self.state.pending_ops(self.name))

    def _backoff_after_failure(self, exc: SlackUnavailable, lane: str, now: float) -> float:
        if exc.unreachable or exc.throttled:
            self._flush_failures += 1
            failures = self._flush_failures
        else:
            failures = self._lane_failures[lane] = self._lane_failures.get(lane, 0) + 1
        delay = min(self.max_backoff_seconds, 2.0 ** failures)
        if exc.retry_after is not None:
            delay = max(delay, exc.retry_after)
        if exc.unreachable or exc.throttled:
            self._next_flush = now + delay
        else:
            self._lane_retry[lane] = now + delay
        return delay

    def _run(self, op: OutboxOp) -> dict[str, Any]:
        p = op.payload
        if op.op == "post":
            try:
                resp = call("chat.postMessage", lambda: self.client.chat_postMessage(
                    channel=self.channel, text=p["text"], blocks=p["blocks"], unfurl_links=False, unfurl_media=False))
            except SlackPermanent as exc:  # Slack refused the blocks: the request must still be seen
                self.state.record_error(self.name, "post", f"{exc}; posted as plain text", incident_id=op.incident_id)
                p = {**p, "blocks": []}
                text = clip(f"{p['text']}\nReply in this thread with APPROVE, FORCE_OVERRIDE <reason>, HOLD or REJECT.")
                resp = call("chat.postMessage", lambda: self.client.chat_postMessage(
                    channel=self.channel, text=text, unfurl_links=False, unfurl_media=False))
            ref = {"channel": str(resp["channel"]), "ts": str(resp["ts"])}
            assert op.incident_id is not None
            self.state.record_posted(op.incident_id, p["decision_id"], channel=self.name, ref=ref, blocks=p["blocks"])
            self._threads[(ref["channel"], ref["ts"])] = op.incident_id
            return ref
        posted = self.state.posted(str(op.incident_id), self.name)
        if posted is None:
            raise _NotYet()
        ref = posted["ref"]
        if op.op == "thread":
            resp = call("chat.postMessage", lambda: self.client.chat_postMessage(
                channel=ref["channel"], thread_ts=ref["ts"], text=p["text"], unfurl_links=False))
            return {"ts": str(resp["ts"])}
        if op.op == "update":
            self._revision += 1
            blocks = updated_blocks(list(posted.get("blocks") or []), p["status"], final=bool(p.get("final")),
                                    revision=self._revision)
            call("chat.update", lambda: self.client.chat_update(
                channel=ref["channel"], ts=ref["ts"], text=f"{op.incident_id}: {p['status']}", blocks=blocks))
            return {"final": bool(p.get("final"))}
        if op.op == "dm_admin":
            link = ""
            try:
                link = str(self.client.chat_getPermalink(channel=ref["channel"], message_ts=ref["ts"])["permalink"])
            except (SlackClientError, OSError):
                pass  # the DM matters more than its link
            text = escape(p["text"]) + (f" <{link}|Open the request>" if link else "")
            call("chat.postMessage", lambda: self.client.chat_postMessage(
                channel=str(self.admin_user_id), text=text))
            return {"to": self.admin_user_id}
        raise SlackPermanent(f"unknown queued call {op.op!r}")

    def _queue_thread_message(self, incident_id: str, mrkdwn: str) -> None:
        self.state.queue(self.name, "thread", incident_id, {"text": clip(mrkdwn)})
        self.flush()

    def _poll_thread(self, incident_id: str) -> None:
        with self._lock:
            posted = self.state.posted(incident_id, self.name)
            if posted is None:
                return
            now = self.clock()
            self._asked[incident_id] = now
            if now < self._next_poll.get(incident_id, 0.0) or now < self._replies_next_at:
                return
            # One call slot for all threads: it goes to the due thread read longest ago.
            due = [i for i, at in self._asked.items()
                   if now - at <= 2 * self.poll_seconds and now >= self._next_poll.get(i, 0.0)]
            if min(due, key=lambda i: (self._last_read.get(i, float("-inf")), i)) != incident_id:
                return
            connected = self._socket is not None and bool(getattr(self._socket, "is_connected", lambda: False)())
            interval = self.catchup_poll_seconds if connected else self.poll_seconds
            ref = posted["ref"]
            self._last_read[incident_id] = now
            pages = [0]
            try:
                identity = self._whoami()
                messages = self._thread(ref["channel"], ref["ts"], pages)
            except SlackUnavailable as exc:
                failures = self._poll_failures.get(incident_id, 0) + 1
                self._poll_failures[incident_id] = failures
                delay = min(self.max_backoff_seconds, interval * 2 ** (failures - 1))
                if exc.retry_after is not None:
                    delay = max(delay, exc.retry_after)
                self._next_poll[incident_id] = now + delay
                self._replies_next_at = now + max(self.poll_seconds * max(1, pages[0]), exc.retry_after or 0.0)
                self.error = str(exc)
                self.state.record_error(self.name, "conversations.replies", str(exc), incident_id=incident_id,
                                        retry_in=delay)
                return
            self._poll_failures.pop(incident_id, None)
            self._next_poll[incident_id] = now + interval
            self._replies_next_at = now + self.poll_seconds * pages[0]
            if not self._poll_failures and self._flush_failures == 0 and not self._lane_retry:
                self.error = None
            for m in messages:
                if is_human(m, identity) and message_ts(m.get("ts")) > message_ts(ref["ts"]):
                    self.state.receive(incident_id, f"msg:{m['ts']}", user=str(m["user"]),
                                       text=unescape(m.get("text", "")), source="slack_thread")

    def _thread(self, channel: str, ts: str, pages: list[int]) -> list[dict[str, Any]]:
        """The thread's messages, page by page (``pages[0]`` counts the calls made)."""
        messages: list[dict[str, Any]] = []
        cursor: str | None = None
        for _ in range(MAX_PAGES):
            pages[0] += 1
            resp = call("conversations.replies", lambda: self.client.conversations_replies(
                channel=channel, ts=ts, limit=200, cursor=cursor))
            messages.extend(resp.get("messages") or [])
            cursor = (resp.get("response_metadata") or {}).get("next_cursor") or None
            if not cursor:
                break
        return messages

    def _whoami(self, *, refresh: bool = False) -> tuple[str, str]:
        if self._identity is None or refresh:
            resp = call("auth.test", self.client.auth_test)
            self._identity = (str(resp.get("user_id") or ""), str(resp.get("bot_id") or ""))
        return self._identity

    def _incident_for_thread(self, channel: str, ts: str) -> str | None:
        key = (channel, ts)
        if key not in self._threads:
            for e in self.state.all_posted(self.name):
                ref = e.get("ref") or {}
                self._threads[(str(ref.get("channel")), str(ref.get("ts")))] = str(e["incident_id"])
        return self._threads.get(key)

    # --- errors -----------------------------------------------------------------------------

    def _fail(self, operation: str, message: str, *, incident_id: str | None = None) -> None:
        self.error = message
        self.state.record_error(self.name, operation, message, incident_id=incident_id)


def missing_settings(settings: Any) -> list[str]:
    """The Slack variables a live channel needs and lacks."""
    return [name for name, value in (("SLACK_BOT_TOKEN", settings.slack_bot_token),
                                     ("SLACK_CHANNEL", settings.slack_channel)) if not value]

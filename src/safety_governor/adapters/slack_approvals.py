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
* **Thread replies** are read with ``conversations.replies`` (every ``SLACK_POLL_SECONDS``
  without Socket Mode; with it, replies are pushed as ``message`` events and the thread is read
  once at start and every ``SLACK_CATCHUP_POLL_SECONDS`` as a safety net). Only messages after
  the request count, never the bot's own (``auth.test`` ``user_id``/``bot_id``) or other bots'.
* **Every write is queued first** (the outbox in ``approval_state``) and then sent, in order per
  incident: a Slack outage leaves the request queued, the incident pending (nothing executes
  without a reply), the failure in ``error``, ``check()`` and an ``integration_error`` event,
  and the call is retried with exponential backoff on the next ``request``/``replies``/``flush``.
* **Rate limits**: a 429 asking for a short wait (≤ ``rate_limit_max_wait`` s) is retried in
  place by ``RateLimitErrorRetryHandler``; a longer one reschedules that call after
  ``Retry-After`` instead of blocking the worker thread.

Untrusted text (incident summaries, agent rationale, reasons) is escaped for mrkdwn, so it can
neither mention ``@channel`` nor fake a link.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.error import URLError
from urllib.parse import quote

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry import ConnectionErrorRetryHandler, RateLimitErrorRetryHandler, RetryHandler
from slack_sdk.http_retry.builtin_interval_calculators import FixedValueRetryIntervalCalculator
from slack_sdk.models.blocks import (
    ActionsBlock,
    ButtonElement,
    ConfirmObject,
    ContextBlock,
    DividerBlock,
    HeaderBlock,
    MarkdownTextObject,
    SectionBlock,
)
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse

from ..approval_state import ApprovalState, OutboxOp, Reply, take_replies
from ..errors import ApprovalChannelError, GovernorError
from ..models import GateOutput, Incident
from ..ports import Readiness, Ticket

ACTIONS: dict[str, str] = {
    "sg_approve": "APPROVE",
    "sg_force_override": "FORCE_OVERRIDE",
    "sg_hold": "HOLD",
    "sg_reject": "REJECT",
}
OVERRIDE_CALLBACK = "sg_force_override_reason"
HUMAN_SUBTYPES = frozenset({"", "thread_broadcast", "file_share"})
USER_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")
SECTION_LIMIT = 2900
MAX_PAGES = 20


class _NotYet(Exception):
    """The call depends on one that has not happened yet (e.g. the request is not posted)."""


class BoundedRateLimitRetryHandler(RateLimitErrorRetryHandler):
    """Retries a 429 in place only when Slack asks for a short wait; a longer ``Retry-After``
    propagates, so the channel reschedules the call instead of sleeping in the worker thread."""

    def __init__(self, max_retry_count: int = 2, max_wait_seconds: float = 5.0) -> None:
        super().__init__(max_retry_count=max_retry_count)
        self.max_wait_seconds = max_wait_seconds

    def _can_retry(self, *, state: Any, request: Any, response: Any = None, error: Any = None) -> bool:
        if not super()._can_retry(state=state, request=request, response=response, error=error):
            return False
        return retry_after(response.headers) <= self.max_wait_seconds


def default_retry_handlers(*, connect_retry_interval: float = 0.5, rate_limit_max_wait: float = 5.0) -> list[RetryHandler]:
    """One quick retry when the connection is refused (nothing was sent, so a post cannot be
    duplicated), and in-place retries of short rate limits."""
    return [
        ConnectionErrorRetryHandler(max_retry_count=1,
                                    interval_calculator=FixedValueRetryIntervalCalculator(connect_retry_interval),
                                    error_types=[URLError]),
        BoundedRateLimitRetryHandler(max_retry_count=2, max_wait_seconds=rate_limit_max_wait),
    ]


def retry_after(headers: Mapping[str, Any] | None, default: float = 1.0) -> float:
    """Seconds from a ``Retry-After`` header (values may be strings or lists of strings)."""
    for name, value in (headers or {}).items():
        if name.lower() == "retry-after":
            raw = value[0] if isinstance(value, list | tuple) and value else value
            try:
                return max(0.0, float(str(raw)))
            except ValueError:
                return default
    return default


def escape(text: Any) -> str:
    """Slack's mrkdwn escaping: ``&``, ``<`` and ``>``; nothing untrusted can ping or link."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def unescape(text: Any) -> str:
    """Message text as the human typed it (Slack escapes ``&``, ``<`` and ``>`` in ``text``)."""
    return str(text or "").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _clip(text: str, limit: int = SECTION_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _ts(value: Any) -> Decimal:
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        return Decimal(0)


def elastic_link(kibana_url: str | None, incident_id: str) -> str | None:
    """A Kibana Discover link filtered on the incident id, when ``ELASTIC_KIBANA_URL`` is set."""
    if not kibana_url:
        return None
    query = quote(f"incident_id:\"{incident_id}\"", safe="")
    return f"{kibana_url.rstrip('/')}/app/discover#/?_a=(query:(language:kuery,query:'{query}'))"


def reply_needed(gate: GateOutput, *, interactive: bool, accepting: bool) -> str:
    if not accepting:
        return (":no_entry: *Approvals are disabled*: SLACK_APPROVERS and SLACK_OVERRIDERS are empty, so no "
                "Slack user may decide. Nothing will execute.")
    how = "Use the buttons, or reply" if interactive else "Reply"
    commands = "`APPROVE`, `FORCE_OVERRIDE <reason>`, `HOLD` or `REJECT`"
    rules = "The first word counts (not \"ok\" or \"approved\"), and only configured approvers count."
    if gate.decision == "execute":
        return f"The gate passed this action. {how} `HOLD` in this thread to stop it. {rules}"
    if gate.approval_required == "forbidden":
        return ("*No reply can run this action*: the action catalogue marks it `never`. If it must happen, do "
                f"it by hand, outside the governor. {how} `REJECT` in this thread to close the request.")
    if gate.approval_required == "force_override":
        return (f"*APPROVE will be refused* (critical severity or confidence below the refusal threshold). A "
                f"configured overrider must FORCE_OVERRIDE with a reason, logged permanently. {how} in this "
                f"thread with {commands}. {rules}")
    return f"A configured approver must decide. {how} in this thread with {commands}. {rules}"


def approval_blocks(
    incident: Incident,
    gate: GateOutput,
    *,
    message: str,
    ticket: Ticket | None,
    elastic_url: str | None,
    interactive: bool,
    accepting: bool,
) -> list[dict[str, Any]]:
    """The Block Kit request: facts, reasons, evidence, steps, links, what reply is needed, and
    (with Socket Mode) the four buttons."""
    shift = f"{gate.confidence_initial:.2f} → {gate.confidence_final:.2f} ({gate.confidence_delta:+.2f})"
    fields = [
        MarkdownTextObject(text=f"*Service*\n{escape(incident.service)}"),
        MarkdownTextObject(text=f"*Severity*\n{escape(incident.severity)}"),
        MarkdownTextObject(text=f"*Decision*\n`{gate.decision}`"),
        MarkdownTextObject(text=f"*Confidence*\n{shift}"),
        MarkdownTextObject(text=f"*Rules fired*\n{escape(', '.join(gate.rule_ids) or 'none')}"),
        MarkdownTextObject(text=f"*Proposed action*\n`{escape(gate.proposed_action or '(none)')}`"),
    ]
    reasons = [f"• `{r.rule_id}`: {escape(r.message)}" for r in gate.reasons]
    reasons += [f"• caution: {escape(c)}" for c in gate.cautions]
    evidence = (f"*Evidence*: coverage {gate.evidence_coverage:.0%}, {gate.contradiction_count} contradicting "
                f"document(s), policy conflicts: {escape(', '.join(gate.policy_conflicts) or 'none')}")
    links = [f"Decision `{gate.decision_id}`"]
    if ticket is not None:
        links.append(f"Ticket <{ticket.url}|{escape(ticket.key)}>" if ticket.url else f"Ticket {escape(ticket.key)}")
    if elastic_url:
        links.append(f"<{elastic_url}|Elastic: incident events>")
    blocks: list[Any] = [
        HeaderBlock(block_id="sg_header", text=_clip(f"Approval needed: {incident.id}", 150)),
        SectionBlock(block_id="sg_summary", text=_clip(f"*{escape(incident.summary)}*")),
        SectionBlock(block_id="sg_facts", fields=fields),
        SectionBlock(block_id="sg_reasons", text=_clip("*Why*\n" + ("\n".join(reasons) or "all checks passed"))),
        SectionBlock(block_id="sg_evidence", text=_clip(evidence)),
    ]
    if message.strip():
        blocks.append(SectionBlock(block_id="sg_steps", text=_clip(f"*Recommended steps and dry-run preview*\n"
                                                                     f"{escape(message.strip())}")))
    blocks += [
        ContextBlock(block_id="sg_links", elements=[MarkdownTextObject(text=" · ".join(links))]),
        DividerBlock(block_id="sg_divider"),
        SectionBlock(block_id="sg_reply", text=reply_needed(gate, interactive=interactive, accepting=accepting)),
    ]
    if interactive and accepting:
        blocks.append(ActionsBlock(block_id=f"sg_actions:{incident.id}"[:255], elements=[
            ButtonElement(text="Approve", action_id="sg_approve", value=incident.id, style="primary"),
            ButtonElement(text="Force override", action_id="sg_force_override", value=incident.id, style="danger"),
            ButtonElement(text="Hold", action_id="sg_hold", value=incident.id),
            ButtonElement(text="Reject", action_id="sg_reject", value=incident.id,
                          confirm=ConfirmObject(title="Reject?", text="Closes the incident without executing.",
                                                confirm="Reject", deny="Cancel")),
        ]))
    return [b.to_dict() for b in blocks]


def updated_blocks(blocks: list[dict[str, Any]], status: str, *, final: bool, revision: int) -> list[dict[str, Any]]:
    """The posted blocks with a status line; buttons removed once decided (new ``block_id`` for
    the buttons on every update, as Slack advises)."""
    out: list[dict[str, Any]] = []
    for block in blocks:
        block_id = str(block.get("block_id", ""))
        if block_id.startswith("sg_status"):
            continue
        if block_id.startswith("sg_actions"):
            if final:
                continue
            block = {**block, "block_id": f"{block_id.split('#')[0]}#{revision}"[:255]}
        out.append(block)
    out.append({"type": "context", "block_id": f"sg_status#{revision}",
                "elements": [{"type": "mrkdwn", "text": _clip(f"*Status:* {escape(status)}")}]})
    return out


def override_modal(incident_id: str, metadata: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "type": "modal",
        "callback_id": OVERRIDE_CALLBACK,
        "private_metadata": json.dumps(dict(metadata)),
        "title": {"type": "plain_text", "text": "Force override"},
        "submit": {"type": "plain_text", "text": "Override"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": _clip(
                f"FORCE_OVERRIDE bypasses the gate for *{escape(incident_id)}*. Only configured overriders count, "
                "and the override and its reason are logged permanently.")}},
            {"type": "input", "block_id": "reason", "label": {"type": "plain_text", "text": "Reason"},
             "element": {"type": "plain_text_input", "action_id": "reason", "multiline": True, "min_length": 3}},
        ],
    }


class SlackApprovalChannel:
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
        poll_seconds: thread polling interval without Socket Mode.
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
        poll_seconds: float = 30.0,
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
        except _Unavailable as exc:
            return Readiness(ok=False, reason=f"{exc}; {len(self.state.pending_ops(self.name))} call(s) queued")
        if not self.interactive:
            mode = f"thread replies read every {self.poll_seconds:g}s (no SLACK_APP_TOKEN)"
        elif self._socket_retry_at is not None:
            mode = f"Socket Mode not connected (retrying); thread replies read every {self.poll_seconds:g}s"
        else:
            mode = "buttons over Socket Mode"
        queued = len(self.state.pending_ops(self.name))
        note = f"; reachable again, {queued} queued call(s) will be retried" if queued else ""
        return Readiness(ok=True, reason=f"channel {self.channel}, {mode}{note}")

    # --- Socket Mode ------------------------------------------------------------------------

    def start(self) -> None:
        """Connect Socket Mode (with ``SLACK_APP_TOKEN``). A failure is reported, not raised:
        thread polling takes over at ``poll_seconds`` and the connection is tried again later."""
        if not self.interactive:
            return
        from slack_sdk.socket_mode import SocketModeClient

        with self._lock:
            if self._socket is None:
                self._socket = SocketModeClient(app_token=str(self._app_token), web_client=self.client)
                self._socket.socket_mode_request_listeners.append(self.handle_socket_request)
            if self._socket.is_connected():
                return
            try:
                self._socket.connect()
                self._socket_retry_at = None
            except Exception as exc:  # the vendor client raises socket, HTTP and API errors alike
                detail = self._describe(exc)[0] if isinstance(exc, SlackClientError | OSError) else type(exc).__name__
                self._socket_retry_at = self.clock() + self.max_backoff_seconds / 5
                self._fail("socket_mode.connect", f"Socket Mode cannot connect: {detail}")

    def close(self) -> None:
        if self._socket is not None:
            try:
                self._socket.close()
            finally:
                self._socket = None

    def handle_socket_request(self, client: Any, req: SocketModeRequest) -> None:
        """The Socket Mode listener: acknowledge first (Slack allows 3 s), then record the click,
        the override reason or the thread message as a reply. Never raises."""
        try:
            payload = req.payload or {}
            if req.type == "interactive" and payload.get("type") == "view_submission":
                response = self._on_override_submission(payload)
                client.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id, payload=response))
                return
            client.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id))
            if req.type == "interactive" and payload.get("type") == "block_actions":
                self._on_block_actions(payload)
            elif req.type == "events_api":
                self._on_message_event(payload.get("event") or {})
        except GovernorError as exc:
            self._fail("socket_mode.listener", str(exc))
        except Exception as exc:  # a malformed payload must not kill the listener thread
            self._fail("socket_mode.listener", f"unusable Socket Mode payload ({type(exc).__name__})")

    def _on_block_actions(self, p: Mapping[str, Any]) -> None:
        user = str((p.get("user") or {}).get("id", ""))
        container = p.get("container") or {}
        channel_id = (p.get("channel") or {}).get("id") or container.get("channel_id")
        message_ts = container.get("message_ts") or (p.get("message") or {}).get("ts")
        for action in p.get("actions") or []:
            command = ACTIONS.get(str(action.get("action_id", "")))
            incident_id = str(action.get("value", ""))
            if command is None or not user:
                continue
            posted = self.state.posted(incident_id, self.name)
            if posted is None or posted["ref"].get("ts") != message_ts or posted["ref"].get("channel") != channel_id:
                self.state.record_error(self.name, "click", "a click on a message that is not this incident's "
                                        "request was ignored", incident_id=incident_id or None)
                continue
            if command == "FORCE_OVERRIDE":
                self._open_override_prompt(str(p.get("trigger_id", "")), incident_id, user, posted)
                continue
            key = f"action:{action.get('action_ts') or p.get('trigger_id')}:{user}"
            self.state.receive(incident_id, key, user=user, text=command, source="slack_button")

    def _open_override_prompt(self, trigger_id: str, incident_id: str, user: str, posted: Mapping[str, Any]) -> None:
        meta = {"incident_id": incident_id, "channel": posted["ref"]["channel"], "ts": posted["ref"]["ts"]}
        try:
            self.client.views_open(trigger_id=trigger_id, view=override_modal(incident_id, meta))
            return
        except (SlackClientError, OSError) as exc:
            self._fail("views.open", self._describe(exc)[0], incident_id=incident_id)
        mention = f"<@{user}>" if USER_ID.match(user) else escape(user)
        self._queue_thread_message(incident_id, f"{mention} the override form could not open: reply in this thread "
                                                "with `FORCE_OVERRIDE <reason>`.")

    def _on_override_submission(self, p: Mapping[str, Any]) -> dict[str, Any] | None:
        view = p.get("view") or {}
        if view.get("callback_id") != OVERRIDE_CALLBACK:
            return None
        try:
            meta = json.loads(view.get("private_metadata") or "{}")
        except json.JSONDecodeError:
            return None
        values = (view.get("state") or {}).get("values") or {}
        reason = str(((values.get("reason") or {}).get("reason") or {}).get("value") or "").strip()
        if not reason:
            return {"response_action": "errors", "errors": {"reason": "A reason is required; it is logged permanently."}}
        incident_id = str(meta.get("incident_id", ""))
        posted = self.state.posted(incident_id, self.name)
        user = str((p.get("user") or {}).get("id", ""))
        if posted is None or posted["ref"].get("ts") != meta.get("ts") or not user:
            return None
        self.state.receive(incident_id, f"view:{view.get('id')}", user=user, text=f"FORCE_OVERRIDE {reason}",
                           source="slack_modal")
        return None

    def _on_message_event(self, event: Mapping[str, Any]) -> None:
        if event.get("type") != "message" or not event.get("thread_ts"):
            return
        incident_id = self._incident_for_thread(str(event.get("channel", "")), str(event["thread_ts"]))
        if incident_id is None:
            return
        try:
            identity = self._whoami()
        except _Unavailable as exc:
            self._fail("auth.test", str(exc))
            return
        if self._is_human(event, identity) and _ts(event.get("ts")) > _ts(event["thread_ts"]):
            self.state.receive(incident_id, f"msg:{event['ts']}", user=str(event["user"]),
                               text=unescape(event.get("text", "")), source="slack_event")

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
            failure: _Unavailable | None = None
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
                except _Unavailable as exc:
                    held.add(lane)
                    failure = exc
                    self.state.record_error(self.name, op.op, str(exc), incident_id=op.incident_id,
                                            retry_in=self._backoff_after_failure(exc, lane, now))
                    if exc.unreachable:
                        break  # every other call would fail the same way
                    continue
                except _Permanent as exc:
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

    def _backoff_after_failure(self, exc: _Unavailable, lane: str, now: float) -> float:
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
                resp = self._call("chat.postMessage", lambda: self.client.chat_postMessage(
                    channel=self.channel, text=p["text"], blocks=p["blocks"], unfurl_links=False, unfurl_media=False))
            except _Permanent as exc:  # Slack refused the blocks: the request must still be seen
                self.state.record_error(self.name, "post", f"{exc}; posted as plain text", incident_id=op.incident_id)
                p = {**p, "blocks": []}
                text = _clip(f"{p['text']}\nReply in this thread with APPROVE, FORCE_OVERRIDE <reason>, HOLD or REJECT.")
                resp = self._call("chat.postMessage", lambda: self.client.chat_postMessage(
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
            resp = self._call("chat.postMessage", lambda: self.client.chat_postMessage(
                channel=ref["channel"], thread_ts=ref["ts"], text=p["text"], unfurl_links=False))
            return {"ts": str(resp["ts"])}
        if op.op == "update":
            self._revision += 1
            blocks = updated_blocks(list(posted.get("blocks") or []), p["status"], final=bool(p.get("final")),
                                    revision=self._revision)
            self._call("chat.update", lambda: self.client.chat_update(
                channel=ref["channel"], ts=ref["ts"], text=f"{op.incident_id}: {p['status']}", blocks=blocks))
            return {"final": bool(p.get("final"))}
        if op.op == "dm_admin":
            link = ""
            try:
                link = str(self.client.chat_getPermalink(channel=ref["channel"], message_ts=ref["ts"])["permalink"])
            except (SlackClientError, OSError):
                pass  # the DM matters more than its link
            text = escape(p["text"]) + (f" <{link}|Open the request>" if link else "")
            self._call("chat.postMessage", lambda: self.client.chat_postMessage(
                channel=str(self.admin_user_id), text=text))
            return {"to": self.admin_user_id}
        raise _Permanent(f"unknown queued call {op.op!r}")

    def _queue_thread_message(self, incident_id: str, mrkdwn: str) -> None:
        self.state.queue(self.name, "thread", incident_id, {"text": _clip(mrkdwn)})
        self.flush()

    def _poll_thread(self, incident_id: str) -> None:
        with self._lock:
            posted = self.state.posted(incident_id, self.name)
            if posted is None:
                return
            now = self.clock()
            if now < self._next_poll.get(incident_id, 0.0):
                return
            connected = self._socket is not None and bool(getattr(self._socket, "is_connected", lambda: False)())
            interval = self.catchup_poll_seconds if connected else self.poll_seconds
            ref = posted["ref"]
            try:
                identity = self._whoami()
                messages = self._thread(ref["channel"], ref["ts"])
            except _Unavailable as exc:
                failures = self._poll_failures.get(incident_id, 0) + 1
                self._poll_failures[incident_id] = failures
                delay = min(self.max_backoff_seconds, interval * 2 ** (failures - 1))
                if exc.retry_after is not None:
                    delay = max(delay, exc.retry_after)
                self._next_poll[incident_id] = now + delay
                self.error = str(exc)
                self.state.record_error(self.name, "conversations.replies", str(exc), incident_id=incident_id,
                                        retry_in=delay)
                return
            self._poll_failures.pop(incident_id, None)
            self._next_poll[incident_id] = now + interval
            if not self._poll_failures and self._flush_failures == 0 and not self._lane_retry:
                self.error = None
            for m in messages:
                if self._is_human(m, identity) and _ts(m.get("ts")) > _ts(ref["ts"]):
                    self.state.receive(incident_id, f"msg:{m['ts']}", user=str(m["user"]),
                                       text=unescape(m.get("text", "")), source="slack_thread")

    def _thread(self, channel: str, ts: str) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        cursor: str | None = None
        for _ in range(MAX_PAGES):
            resp = self._call("conversations.replies", lambda: self.client.conversations_replies(
                channel=channel, ts=ts, limit=200, cursor=cursor))
            messages.extend(resp.get("messages") or [])
            cursor = (resp.get("response_metadata") or {}).get("next_cursor") or None
            if not cursor:
                break
        return messages

    def _whoami(self, *, refresh: bool = False) -> tuple[str, str]:
        if self._identity is None or refresh:
            resp = self._call("auth.test", self.client.auth_test)
            self._identity = (str(resp.get("user_id") or ""), str(resp.get("bot_id") or ""))
        return self._identity

    @staticmethod
    def _is_human(m: Mapping[str, Any], identity: tuple[str, str]) -> bool:
        user_id = identity[0]
        user = m.get("user")
        if not user or m.get("bot_id") or m.get("bot_profile") or user == user_id:
            return False
        return str(m.get("subtype") or "") in HUMAN_SUBTYPES

    def _incident_for_thread(self, channel: str, ts: str) -> str | None:
        key = (channel, ts)
        if key not in self._threads:
            for e in self.state.all_posted(self.name):
                ref = e.get("ref") or {}
                self._threads[(str(ref.get("channel")), str(ref.get("ts")))] = str(e["incident_id"])
        return self._threads.get(key)

    # --- errors -----------------------------------------------------------------------------

    def _call(self, method: str, fn: Callable[[], Any]) -> Any:
        """Run one Web API call; vendor errors become ``_Unavailable`` / ``_Permanent``."""
        try:
            return fn()
        except (SlackClientError, OSError) as exc:
            message, wait = self._describe(exc)
            if isinstance(exc, SlackApiError) and exc.response.status_code == 200 and \
                    exc.response.get("error") in PERMANENT_ERRORS:
                raise _Permanent(f"Slack {method}: {message}") from exc
            status = exc.response.status_code if isinstance(exc, SlackApiError) else None
            raise _Unavailable(f"Slack {method}: {message}", retry_after=wait, unreachable=status is None,
                               throttled=status is not None and (status == 429 or status >= 500)) from exc

    @staticmethod
    def _describe(exc: BaseException) -> tuple[str, float | None]:
        if isinstance(exc, SlackApiError):
            status = exc.response.status_code
            error = exc.response.get("error") if isinstance(exc.response.data, dict) else None
            wait = retry_after(exc.response.headers) if status == 429 else None
            return f"{error or 'error'} (HTTP {status})", wait
        if isinstance(exc, URLError):
            return f"unreachable ({exc.reason})", None
        return f"unreachable ({type(exc).__name__})", None

    def _fail(self, operation: str, message: str, *, incident_id: str | None = None) -> None:
        self.error = message
        self.state.record_error(self.name, operation, message, incident_id=incident_id)


# ``ok: false`` answers that no retry can fix for that one call (the message is gone, or the
# update is not allowed); configuration errors (invalid_auth, channel_not_found, not_in_channel)
# stay retryable, because someone may fix them while the incident waits.
PERMANENT_ERRORS = frozenset({"message_not_found", "cant_update_message", "edit_window_closed", "msg_too_long",
                              "invalid_blocks", "no_text"})


class _Unavailable(GovernorError):
    def __init__(self, message: str, *, retry_after: float | None = None, unreachable: bool = False,
                 throttled: bool = False) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.unreachable = unreachable
        self.throttled = throttled


class _Permanent(GovernorError):
    pass


def missing_settings(settings: Any) -> list[str]:
    """The Slack variables a live channel needs and lacks."""
    return [name for name, value in (("SLACK_BOT_TOKEN", settings.slack_bot_token),
                                     ("SLACK_CHANNEL", settings.slack_channel)) if not value]

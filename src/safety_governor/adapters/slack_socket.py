"""Socket Mode for the Slack approval channel: button clicks, the override modal, pushed thread replies.

``SocketModeReceiver`` is the part of ``SlackApprovalChannel`` that listens (with
``SLACK_APP_TOKEN``): slack-sdk's built-in ``SocketModeClient`` opens the WebSocket
(``apps.connections.open`` with the app token), and ``handle_socket_request`` acknowledges every
envelope first (Slack allows 3 s), then turns it into a ``(user id, text)`` reply in the durable
state. It never judges a reply; the core's ``ApprovalSession`` does.

* A click counts as the clicking user's command (``payload["user"]["id"]``). Its incident is the one
  whose request message was clicked (``container.channel_id`` + ``message_ts``); the button's
  ``value`` is only a cross-check, so a click on any other message is ignored.
* Force override opens a modal asking for the reason; its submission becomes ``FORCE_OVERRIDE
  <reason>`` from the submitting user. If the modal cannot open, a thread prompt asks for it.
* A thread reply arrives as an ``events_api`` ``message`` event (``message.channels`` /
  ``message.groups`` subscriptions); only humans' messages after the request count.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackClientError
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse

from ..approval_state import ApprovalState
from ..errors import GovernorError
from .slack_blocks import OVERRIDE_CALLBACK, escape, override_modal, parse_button_value, unescape
from .slack_web import SlackUnavailable, describe

ACTIONS: dict[str, str] = {
    "sg_approve": "APPROVE",
    "sg_force_override": "FORCE_OVERRIDE",
    "sg_hold": "HOLD",
    "sg_reject": "REJECT",
}
HUMAN_SUBTYPES = frozenset({"", "thread_broadcast", "file_share"})
USER_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")


def message_ts(value: Any) -> Decimal:
    """A Slack ``ts`` as a number (``0`` when unreadable), for "after the request" comparisons."""
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        return Decimal(0)


def is_human(m: Mapping[str, Any], identity: tuple[str, str]) -> bool:
    """A message a person wrote: not ours (``auth.test`` user), not another bot's, not a system subtype."""
    user = m.get("user")
    if not user or m.get("bot_id") or m.get("bot_profile") or user == identity[0]:
        return False
    return str(m.get("subtype") or "") in HUMAN_SUBTYPES


class SocketModeReceiver:
    """Socket Mode listening for ``SlackApprovalChannel`` (which provides the attributes below)."""

    name: str
    client: WebClient
    state: ApprovalState
    interactive: bool
    max_backoff_seconds: float
    clock: Callable[[], float]
    _app_token: str | None
    _lock: threading.RLock
    _socket: Any
    _socket_retry_at: float | None

    def _fail(self, operation: str, message: str, *, incident_id: str | None = None) -> None:
        raise NotImplementedError

    def _queue_thread_message(self, incident_id: str, mrkdwn: str) -> None:
        raise NotImplementedError

    def _whoami(self, *, refresh: bool = False) -> tuple[str, str]:
        raise NotImplementedError

    def _incident_for_thread(self, channel: str, ts: str) -> str | None:
        raise NotImplementedError

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
                detail = describe(exc)[0] if isinstance(exc, SlackClientError | OSError) else type(exc).__name__
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
        channel_id = str((p.get("channel") or {}).get("id") or container.get("channel_id") or "")
        clicked_ts = str(container.get("message_ts") or (p.get("message") or {}).get("ts") or "")
        for action in p.get("actions") or []:
            command = ACTIONS.get(str(action.get("action_id", "")))
            value, clicked_decision = parse_button_value(str(action.get("value", "")))
            if command is None or not user:
                continue
            incident_id = self._incident_for_thread(channel_id, clicked_ts) if channel_id and clicked_ts else None
            posted = self.state.posted(incident_id, self.name) if incident_id else None
            if incident_id is None or posted is None or not incident_id.startswith(value) \
                    or posted["ref"].get("ts") != clicked_ts or posted["ref"].get("channel") != channel_id \
                    or (clicked_decision is not None and clicked_decision != posted.get("decision_id")):
                self.state.record_error(self.name, "click", "a click on a message that is not this incident's "
                                        "request was ignored", incident_id=(incident_id or value or None))
                continue
            # The decision the clicked message asked about (a value from before decision ids were
            # carried: the message's own). Recorded with the reply, so the approval rules refuse it,
            # audited and answered in the thread, when another decision's wait is open meanwhile.
            decision_id = clicked_decision or str(posted.get("decision_id") or "") or None
            if command == "FORCE_OVERRIDE":
                self._open_override_prompt(str(p.get("trigger_id", "")), incident_id, user, posted, decision_id)
                continue
            key = f"action:{action.get('action_ts') or p.get('trigger_id')}:{user}"
            self.state.receive(incident_id, key, user=user, text=command, source="slack_button",
                               decision_id=decision_id)

    def _open_override_prompt(self, trigger_id: str, incident_id: str, user: str, posted: Mapping[str, Any],
                              decision_id: str | None) -> None:
        meta = {"incident_id": incident_id, "channel": posted["ref"]["channel"], "ts": posted["ref"]["ts"],
                "decision_id": decision_id}
        try:
            self.client.views_open(trigger_id=trigger_id, view=override_modal(incident_id, meta))
            return
        except (SlackClientError, OSError) as exc:
            self._fail("views.open", describe(exc)[0], incident_id=incident_id)
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
        incident_id = self._incident_for_thread(str(meta.get("channel", "")), str(meta.get("ts", ""))) \
            or str(meta.get("incident_id", ""))
        posted = self.state.posted(incident_id, self.name) if incident_id else None
        user = str((p.get("user") or {}).get("id", ""))
        if posted is None or not user:
            return None
        # The decision the form was opened on: a submission after a new decision was asked for is
        # refused by the approval rules (audited, answered in the thread), never applied to it.
        decision_id = meta.get("decision_id") or (posted.get("decision_id") if posted["ref"].get("ts") == meta.get("ts")
                                                  else None)
        if not decision_id:
            self.state.record_error(self.name, "override form", "an override form of an earlier request was "
                                    "ignored", incident_id=incident_id)
            return None
        self.state.receive(incident_id, f"view:{view.get('id')}", user=user, text=f"FORCE_OVERRIDE {reason}",
                           source="slack_modal", decision_id=str(decision_id))
        return None

    def _on_message_event(self, event: Mapping[str, Any]) -> None:
        if event.get("type") != "message" or not event.get("thread_ts"):
            return
        incident_id = self._incident_for_thread(str(event.get("channel", "")), str(event["thread_ts"]))
        if incident_id is None:
            return
        try:
            identity = self._whoami()
        except SlackUnavailable as exc:
            self._fail("auth.test", str(exc))
            return
        if is_human(event, identity) and message_ts(event.get("ts")) > message_ts(event["thread_ts"]):
            self.state.receive(incident_id, f"msg:{event['ts']}", user=str(event["user"]),
                               text=unescape(event.get("text", "")), source="slack_event")


"""A local fake of the Slack Web API on 127.0.0.1, speaking its wire format.

The pattern of slack-sdk's own tests (``ThreadingHTTPServer`` recording requests): every method is
a ``POST /<method>`` with a Bearer token, a JSON body (``chat.*``, ``views.open``) or a form body
(``auth.test``, ``conversations.replies``), answered with ``{"ok": true, ...}`` and HTTP 200, or
with ``ok: false`` / HTTP 429 + ``Retry-After`` / HTTP 500 when a test scripts a failure.
``chat.postMessage`` and ``chat.update`` answer ``invalid_blocks`` when a block breaks a limit of
Slack's Block Kit reference, as Slack does. ``apps.connections.open`` (app token, ``xapp-``)
returns ``socket_url`` for Socket Mode (``slack_socket_wire.FakeSocketModeServer``).
"""

from __future__ import annotations

import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

BOT_USER = "UBOT0001"
BOT_ID = "BBOT0001"
CHANNEL_ID = "C0APPROVALS"


@dataclass
class Call:
    method: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class Failure:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


class FakeSlack:
    """Start with ``FakeSlack().start()``; ``url`` is the base URL for ``WebClient``."""

    def __init__(self, port: int = 0) -> None:
        self.calls: list[Call] = []
        self.messages: dict[str, dict[str, Any]] = {}  # ts -> message (top-level and replies)
        self.threads: dict[str, list[str]] = {}  # parent ts -> reply ts, in order
        self.failures: dict[str, list[Failure]] = {}
        self.down_status: int | None = None  # every call answers this status (e.g. 500)
        self.page_size = 100
        self.unknown_channels: set[str] = set()  # chat.postMessage there answers channel_not_found
        self.socket_url: str | None = None  # apps.connections.open answers it (Socket Mode)
        self._seq = 0
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode()
                ctype = self.headers.get("Content-Type", "")
                if "json" in ctype:
                    body = json.loads(raw or "{}")
                else:
                    body = {k: v[0] for k, v in parse_qs(raw).items()}
                method = self.path.strip("/")
                status, answer, headers = fake._answer(method, dict(self.headers.items()), body)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/"

    def start(self) -> FakeSlack:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # --- scripting ----------------------------------------------------------------------------

    def fail(self, method: str, status: int = 200, error: str = "fatal_error", *, times: int = 1,
             headers: dict[str, str] | None = None) -> None:
        self.failures.setdefault(method, []).extend(
            [Failure(status, {"ok": False, "error": error}, headers or {})] * times)

    def next_ts(self) -> str:
        with self._lock:
            self._seq += 1
            return f"1700000000.{self._seq:06d}"

    def add_reply(self, parent_ts: str, user: str, text: str, **extra: Any) -> str:
        """A message posted in the thread by someone else (a human, or another bot)."""
        ts = self.next_ts()
        msg = {"type": "message", "user": user, "text": text, "ts": ts, "thread_ts": parent_ts, **extra}
        self.messages[ts] = msg
        self.threads.setdefault(parent_ts, []).append(ts)
        return ts

    def calls_to(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def top_level(self) -> list[dict[str, Any]]:
        return [m for m in self.messages.values() if "thread_ts" not in m]

    # --- the API ------------------------------------------------------------------------------

    def _answer(self, method: str, headers: dict[str, str], body: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        self.calls.append(Call(method, headers, body))
        if self.down_status is not None:
            return self.down_status, {"ok": False, "error": "internal_error"}, {}
        queued = self.failures.get(method)
        if queued:
            f = queued.pop(0)
            return f.status, f.body, f.headers
        token_prefix = "Bearer xapp-" if method == "apps.connections.open" else "Bearer xoxb-"
        if not headers.get("Authorization", "").startswith(token_prefix):
            return 200, {"ok": False, "error": "not_authed"}, {}
        handler = getattr(self, "_" + method.replace(".", "_"), None)
        if handler is None:
            return 200, {"ok": False, "error": "unknown_method"}, {}
        return 200, {"ok": True, **handler(body)}, {}

    def _auth_test(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"url": "https://example.slack.com/", "team": "Example", "user": "governor", "team_id": "T0EXAMPLE",
                "user_id": BOT_USER, "bot_id": BOT_ID}

    def _chat_postMessage(self, body: dict[str, Any]) -> dict[str, Any]:  # noqa: N802 - Slack's name
        channel = body["channel"]
        if channel in self.unknown_channels:
            return {"ok": False, "error": "channel_not_found"}
        if block_kit_violations(self._blocks(body)):
            return {"ok": False, "error": "invalid_blocks"}
        ts = self.next_ts()
        channel_id = CHANNEL_ID if not str(channel).startswith(("U", "D")) else "D0DIRECT"
        msg = {"type": "message", "user": BOT_USER, "bot_id": BOT_ID, "text": body.get("text", ""), "ts": ts,
               "blocks": body.get("blocks", []), "channel": channel_id, "to": channel}
        if body.get("thread_ts"):
            msg["thread_ts"] = body["thread_ts"]
            self.threads.setdefault(body["thread_ts"], []).append(ts)
        self.messages[ts] = msg
        return {"channel": channel_id, "ts": ts, "message": msg}

    @staticmethod
    def _blocks(body: dict[str, Any]) -> list[dict[str, Any]]:
        blocks = body.get("blocks") or []
        return json.loads(blocks) if isinstance(blocks, str) else blocks

    def _chat_update(self, body: dict[str, Any]) -> dict[str, Any]:
        msg = self.messages.get(body["ts"])
        if msg is None:
            return {"ok": False, "error": "message_not_found"}
        if block_kit_violations(self._blocks(body)):
            return {"ok": False, "error": "invalid_blocks"}
        msg.update(text=body.get("text", ""), blocks=body.get("blocks", []))
        return {"channel": body["channel"], "ts": body["ts"], "text": msg["text"]}

    def _chat_getPermalink(self, body: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        return {"channel": body["channel"],
                "permalink": f"https://example.slack.com/archives/{body['channel']}/p{body['message_ts'].replace('.', '')}"}

    def _conversations_replies(self, body: dict[str, Any]) -> dict[str, Any]:
        parent = self.messages.get(body["ts"])
        if parent is None:
            return {"ok": False, "error": "thread_not_found"}
        all_ts = [body["ts"], *self.threads.get(body["ts"], [])]
        start = int(body.get("cursor") or 0)
        page = all_ts[start:start + self.page_size]
        more = start + self.page_size < len(all_ts)
        messages = [self.messages[t] for t in page]
        return {"messages": messages, "has_more": more,
                "response_metadata": {"next_cursor": str(start + self.page_size) if more else ""}}

    def _apps_connections_open(self, body: dict[str, Any]) -> dict[str, Any]:
        if not self.socket_url:
            return {"ok": False, "error": "invalid_auth"}
        return {"url": self.socket_url}

    def _views_open(self, body: dict[str, Any]) -> dict[str, Any]:
        view = body["view"] if isinstance(body["view"], dict) else json.loads(body["view"])
        return {"view": {"id": f"V{self.next_ts().replace('.', '')}", **view}}


# Block Kit limits as Slack's reference documents them (characters): a section's text 3,000 and
# each of its (at most 10) fields 2,000; a header's text 150; a context element's text 3,000; a
# button's text 75 and value 2,000; block_id and action_id 255; at most 50 blocks per message.
BLOCK_LIMITS = {"section": 3000, "field": 2000, "header": 150, "context": 3000, "button_text": 75,
                "button_value": 2000, "id": 255, "blocks": 50, "fields": 10}


def block_kit_violations(blocks: list[dict[str, Any]]) -> list[str]:
    """Where ``blocks`` break a documented limit (Slack answers ``invalid_blocks`` for any)."""
    out: list[str] = []

    def over(what: str, text: Any, limit: int) -> None:
        if isinstance(text, str) and len(text) > limit:
            out.append(f"{what}: {len(text)} > {limit}")

    if len(blocks) > BLOCK_LIMITS["blocks"]:
        out.append(f"{len(blocks)} blocks")
    for i, b in enumerate(blocks):
        over(f"block {i} block_id", b.get("block_id"), BLOCK_LIMITS["id"])
        kind = b.get("type")
        if kind == "section":
            over(f"block {i} text", (b.get("text") or {}).get("text"), BLOCK_LIMITS["section"])
            fields = b.get("fields") or []
            if len(fields) > BLOCK_LIMITS["fields"]:
                out.append(f"block {i}: {len(fields)} fields")
            for j, f in enumerate(fields):
                over(f"block {i} field {j}", f.get("text"), BLOCK_LIMITS["field"])
        elif kind == "header":
            over(f"block {i} header", (b.get("text") or {}).get("text"), BLOCK_LIMITS["header"])
        elif kind == "context":
            for j, e in enumerate(b.get("elements") or []):
                over(f"block {i} element {j}", e.get("text"), BLOCK_LIMITS["context"])
        elif kind == "actions":
            for j, e in enumerate(b.get("elements") or []):
                over(f"block {i} button {j} text", (e.get("text") or {}).get("text"), BLOCK_LIMITS["button_text"])
                over(f"block {i} button {j} value", e.get("value"), BLOCK_LIMITS["button_value"])
                over(f"block {i} button {j} action_id", e.get("action_id"), BLOCK_LIMITS["id"])
    return out


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

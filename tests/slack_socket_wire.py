"""A local fake of Slack's Socket Mode WebSocket endpoint on 127.0.0.1, speaking its envelope format.

Built from Slack's Socket Mode documentation (docs.slack.dev, "Using Socket Mode"): after the
WebSocket opens, Slack sends ``{"type": "hello", "num_connections", "debug_info",
"connection_info": {"app_id"}}``; every event then arrives as an envelope ``{"envelope_id",
"type": "interactive" | "events_api" | "slash_commands", "payload", "accepts_response_payload"}``
(``events_api`` adds ``retry_attempt`` and ``retry_reason``), and the app acknowledges each one
by sending ``{"envelope_id": ...}`` (plus an optional ``payload``) back within 3 seconds. The URL
comes from ``apps.connections.open`` (answered by ``slack_wire.FakeSlack``).

The WebSocket layer is RFC 6455 done by hand with the standard library (handshake with
``Sec-WebSocket-Accept``, unmasked server frames, masked client frames, ping -> pong, close),
so slack-sdk's own built-in ``SocketModeClient`` connects to it unmodified; it uses plain TCP for
any port but 443 (``socket_mode/builtin/internals.py``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import struct
import threading
import time
from typing import Any

_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3
APP_ID = "A0APP"


def _frame(opcode: int, payload: bytes) -> bytes:
    head = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([n])
    elif n < 65536:
        head += bytes([126]) + struct.pack("!H", n)
    else:
        head += bytes([127]) + struct.pack("!Q", n)
    return head + payload


class FakeSocketModeServer:
    """One WebSocket connection at a time; ``send(envelope)`` pushes, ``acks`` records answers."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self.url = f"ws://127.0.0.1:{self.port}/link/?ticket=fake-ticket&app_id={APP_ID}"
        self.acks: list[dict[str, Any]] = []
        self.requests: list[str] = []  # the HTTP upgrade requests, raw
        self._conn: socket.socket | None = None
        self._send_lock = threading.Lock()
        self._connected = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def start(self) -> FakeSocketModeServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for s in (self._conn, self._server):
            if s is not None:
                try:
                    s.close()
                except OSError:
                    pass

    def wait_connected(self, timeout: float = 10.0) -> bool:
        return self._connected.wait(timeout)

    def send(self, envelope: dict[str, Any]) -> None:
        assert self._conn is not None, "no Socket Mode client is connected"
        with self._send_lock:
            self._conn.sendall(_frame(0x1, json.dumps(envelope).encode()))

    def wait_for_ack(self, envelope_id: str, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for ack in list(self.acks):
                if ack.get("envelope_id") == envelope_id:
                    return ack
            time.sleep(0.01)
        raise AssertionError(f"no acknowledgement for envelope {envelope_id} within {timeout}s")

    # --- the connection -----------------------------------------------------------------------

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            self._conn = conn
            try:
                self._handshake(conn)
                self.send({"type": "hello", "num_connections": 1,
                           "debug_info": {"host": "applink-fake", "build_number": 1,
                                          "approximate_connection_time": 18060},
                           "connection_info": {"app_id": APP_ID}})
                self._connected.set()
                self._read_frames(conn)
            except OSError:
                pass
            finally:
                self._connected.clear()

    def _handshake(self, conn: socket.socket) -> None:
        raw = b""
        while b"\r\n\r\n" not in raw:
            chunk = conn.recv(4096)
            if not chunk:
                raise OSError("closed during the handshake")
            raw += chunk
        request = raw.decode("latin-1")
        self.requests.append(request)
        key = next(line.split(":", 1)[1].strip() for line in request.split("\r\n")
                   if line.lower().startswith("sec-websocket-key:"))
        accept = base64.b64encode(hashlib.sha1((key + _GUID).encode()).digest()).decode()
        conn.sendall((f"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Accept: {accept}\r\n\r\n").encode())

    def _recv_exactly(self, conn: socket.socket, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = conn.recv(n - len(data))
            if not chunk:
                raise OSError("closed")
            data += chunk
        return data

    def _read_frames(self, conn: socket.socket) -> None:
        while not self._stop.is_set():
            b0, b1 = self._recv_exactly(conn, 2)
            opcode, masked, n = b0 & 0x0F, b1 & 0x80, b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._recv_exactly(conn, 2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._recv_exactly(conn, 8))[0]
            mask = self._recv_exactly(conn, 4) if masked else b"\0\0\0\0"
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(self._recv_exactly(conn, n)))
            if opcode == 0x1:
                self.acks.append(json.loads(payload.decode()))
            elif opcode == 0x9:  # ping -> pong with the same payload
                with self._send_lock:
                    conn.sendall(_frame(0xA, payload))
            elif opcode == 0x8:  # close -> close
                with self._send_lock:
                    conn.sendall(_frame(0x8, payload[:2]))
                return


def interactive_envelope(envelope_id: str, payload: dict[str, Any]) -> dict[str, Any]:
    """An ``interactive`` envelope (block_actions, view_submission) as Slack's docs show it."""
    return {"envelope_id": envelope_id, "type": "interactive", "accepts_response_payload": False,
            "payload": payload}


def events_api_envelope(envelope_id: str, event: dict[str, Any]) -> dict[str, Any]:
    """An ``events_api`` envelope wrapping an ``event_callback``, as Slack's docs show it."""
    return {"envelope_id": envelope_id, "type": "events_api", "accepts_response_payload": False,
            "retry_attempt": 0, "retry_reason": "",
            "payload": {"token": "deprecated-verification-token", "team_id": "T0EXAMPLE", "api_app_id": APP_ID,
                        "event": event, "type": "event_callback", "event_id": f"Ev{envelope_id}",
                        "event_time": 1700000100}}

"""Local incident tickets: Jira-like keys (``SRE-101``, ``SRE-102`` …) in an embedded SQLite file.

The offline stand-in for Jira behind the ``TicketPort``: a ticket is opened when an incident is
detected, commented on at the gate decision and at each approval, and closed on resolution. The
tables (``local_tickets``, ``local_ticket_comments``) live in their own namespace, so they can
share the store's database file; numbering continues across restarts.
"""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import InputError, StoreError, StoreUnavailable
from ..models import Incident
from ..ports import Readiness, Ticket

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS local_tickets (
        number INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, incident_id TEXT NOT NULL UNIQUE,
        service TEXT, severity TEXT, summary TEXT, status TEXT NOT NULL, resolution TEXT,
        created_at TEXT NOT NULL, resolved_at TEXT)""",
    """CREATE TABLE IF NOT EXISTS local_ticket_comments (
        id INTEGER PRIMARY KEY, key TEXT NOT NULL, at TEXT NOT NULL, text TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS local_ticket_comments_key ON local_ticket_comments(key, id)",
)
DONE = "done"


def _now() -> str:
    return datetime.now(UTC).isoformat()


class LocalTickets:
    """The embedded ``TicketPort``.

    Args:
        path: SQLite file (the store's own file is fine), or ``":memory:"``.
        prefix: the project key in ticket keys (``SRE``).
        first_number: the number of the first ticket ever opened (``101``).

    One connection serialised by a lock: tickets are written a few times per incident, so
    simplicity beats concurrency here. ``create`` allocates numbers inside ``BEGIN IMMEDIATE``,
    so two processes sharing the file never hand out one key twice.
    """

    name = "local"

    def __init__(self, path: str | Path = ":memory:", *, prefix: str = "SRE", first_number: int = 101) -> None:
        self.path = str(path)
        self.prefix = prefix
        self.first_number = first_number
        self._lock = threading.Lock()
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10)
            self._conn.execute("PRAGMA busy_timeout=10000")
            for stmt in _SCHEMA:
                self._conn.execute(stmt)
        except (OSError, sqlite3.Error) as exc:
            raise StoreUnavailable(f"local tickets: cannot open {self.path}: {exc}") from exc

    def _run(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"local tickets: {exc}") from exc

    def _ticket(self, row: tuple[Any, ...] | None) -> Ticket | None:
        if row is None:
            return None
        key, incident_id, status = row
        return Ticket(key=key, incident_id=incident_id, status=status)

    def create(self, incident: Incident) -> Ticket:
        """Open a ticket for the incident; a second call for the same incident returns the first."""
        with self._lock:
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    row = conn.execute("SELECT key, incident_id, status FROM local_tickets WHERE incident_id = ?",
                                       (incident.id,)).fetchone()
                    if row is None:
                        (top,) = conn.execute("SELECT MAX(number) FROM local_tickets").fetchone()
                        number = max(int(top or 0) + 1, self.first_number)
                        key = f"{self.prefix}-{number}"
                        conn.execute(
                            "INSERT INTO local_tickets(number, key, incident_id, service, severity, summary, status, "
                            "created_at) VALUES (?, ?, ?, ?, ?, ?, 'open', ?)",
                            (number, key, incident.id, incident.service, incident.severity, incident.summary, _now()),
                        )
                        row = (key, incident.id, "open")
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise StoreError(f"local tickets: cannot create a ticket for {incident.id}: {exc}") from exc
        ticket = self._ticket(row)
        assert ticket is not None
        return ticket

    def _require(self, key: str) -> None:
        if not self._run("SELECT 1 FROM local_tickets WHERE key = ?", (key,)):
            raise InputError(f"local tickets: no ticket {key}")

    def comment(self, key: str, text: str) -> None:
        self._require(key)
        self._run("INSERT INTO local_ticket_comments(key, at, text) VALUES (?, ?, ?)", (key, _now(), text))

    def resolve(self, key: str, resolution: str) -> None:
        """Close the ticket (status ``done``) with a resolution; closing twice keeps the first."""
        self._require(key)
        self._run(
            "UPDATE local_tickets SET status = ?, resolution = ?, resolved_at = ? WHERE key = ? AND status != ?",
            (DONE, resolution, _now(), key, DONE),
        )

    def get(self, key: str) -> Ticket | None:
        rows = self._run("SELECT key, incident_id, status FROM local_tickets WHERE key = ?", (key,))
        return self._ticket(rows[0] if rows else None)

    def for_incident(self, incident_id: str) -> Ticket | None:
        rows = self._run("SELECT key, incident_id, status FROM local_tickets WHERE incident_id = ?", (incident_id,))
        return self._ticket(rows[0] if rows else None)

    def comments(self, key: str) -> list[str]:
        return [r[0] for r in self._run("SELECT text FROM local_ticket_comments WHERE key = ? ORDER BY id", (key,))]

    def resolution(self, key: str) -> str | None:
        rows = self._run("SELECT resolution FROM local_tickets WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    def count(self, status: str | None = None) -> int:
        if status is None:
            return int(self._run("SELECT COUNT(*) FROM local_tickets")[0][0])
        return int(self._run("SELECT COUNT(*) FROM local_tickets WHERE status = ?", (status,))[0][0])

    def check(self) -> Readiness:
        try:
            self._run("SELECT 1")
        except StoreError as exc:
            return Readiness(ok=False, reason=str(exc))
        where = "in memory" if self.path == ":memory:" else Path(self.path).name
        return Readiness(ok=True, reason=f"local tickets {self.prefix}-… ({where})")

    def close(self) -> None:
        with self._lock:
            try:
                self._conn.close()
            except sqlite3.Error:
                pass

"""Tailing the store's ``logs`` index: new access-log documents, in the order they landed.

The ``Store`` port aggregates telemetry (``log_stats``) but has no cursor over raw lines, which
the logs worker (to show them) and the audit worker (to window them per request path) need. For
the embedded store the tail reads the same SQLite file through its own connection, by rowid; for
Elasticsearch it asks for the lines at or after the newest ``timestamp`` seen so far (a
structured range query, sorted), skipping the ids it already returned at that instant.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any, Protocol

from ..errors import ConfigError, StoreError


class LogSource(Protocol):
    def poll(self) -> list[dict[str, Any]]:
        """Documents that landed since the previous call (oldest first, at most one batch)."""
        ...

    def close(self) -> None: ...


class SQLiteLogTail:
    """Args:
    path: the embedded store's database file.
    backfill_seconds: also return the lines of this many seconds before now on the first poll
        (the detector's baseline), instead of starting at the newest line.
    batch: the most documents one poll returns.
    """

    def __init__(self, path: str | Path, *, backfill_seconds: float = 0.0, batch: int = 5000) -> None:
        if str(path) == ":memory:":
            raise ConfigError("the dashboard tails telemetry from a store file; an in-memory store cannot be tailed")
        self.batch = batch
        try:
            self._conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=10)
            self._conn.execute("PRAGMA busy_timeout=10000")
            since_ms = int((time.time() - backfill_seconds) * 1000)
            row = self._conn.execute("SELECT MIN(rowid) FROM logs WHERE ts > ?", (since_ms,)).fetchone()
            if backfill_seconds > 0 and row and row[0] is not None:
                self._last = int(row[0]) - 1
            else:
                (top,) = self._conn.execute("SELECT COALESCE(MAX(rowid), 0) FROM logs").fetchone()
                self._last = int(top)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot tail the logs in {path}: {exc}") from exc

    def poll(self) -> list[dict[str, Any]]:
        try:
            rows = self._conn.execute(
                "SELECT rowid, body FROM logs WHERE rowid > ? ORDER BY rowid LIMIT ?", (self._last, self.batch)
            ).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read new log lines: {exc}") from exc
        if rows:
            self._last = int(rows[-1][0])
        return [json.loads(body) for _, body in rows]

    def close(self) -> None:
        try:
            self._conn.close()
        except sqlite3.Error:
            pass


class ElasticLogTail:
    """Args:
    client: the ``elasticsearch`` client of the store.
    index: the concrete logs index (``kibana_sample_data_logs`` by default).
    backfill_seconds: start this many seconds before now.
    batch: the most documents one poll returns.
    """

    def __init__(self, client: Any, index: str, *, backfill_seconds: float = 0.0, batch: int = 1000) -> None:
        self.client = client
        self.index = index
        self.batch = batch
        self._since = int((time.time() - backfill_seconds) * 1000)
        self._edge: set[str] = set()  # ids already returned at ``_since``

    def request(self) -> dict[str, Any]:
        """The search body of one poll (kept apart so it can be inspected)."""
        return {"size": self.batch, "track_total_hits": False,
                "query": {"range": {"timestamp": {"gte": self._since, "format": "epoch_millis"}}},
                "sort": [{"timestamp": {"order": "asc"}}]}

    def poll(self) -> list[dict[str, Any]]:
        from elasticsearch import ApiError, TransportError

        try:
            resp = self.client.search(index=self.index, **self.request())
        except (ApiError, TransportError) as exc:
            raise StoreError(f"cannot read new log lines from {self.index}: {type(exc).__name__}") from exc
        body = getattr(resp, "body", resp)
        docs = []
        for hit in body.get("hits", {}).get("hits", []):
            at = int((hit.get("sort") or [self._since])[0])
            doc_id = str(hit.get("_id"))
            if at == self._since and doc_id in self._edge:
                continue
            if at > self._since:
                self._since, self._edge = at, set()
            self._edge.add(doc_id)
            docs.append(dict(hit.get("_source") or {}))
        return docs

    def close(self) -> None:
        pass


def open_log_tail(store: Any, *, backfill_seconds: float = 0.0) -> LogSource:
    """The tail for ``store``: the embedded SQLite store, or Elasticsearch."""
    kind = type(store).__name__
    if kind == "SQLiteStore":
        return SQLiteLogTail(store.path, backfill_seconds=backfill_seconds)
    if kind == "ElasticStore":
        return ElasticLogTail(store.client, store.index_name("logs"), backfill_seconds=backfill_seconds)
    raise ConfigError(f"the dashboard cannot tail telemetry from {kind}")

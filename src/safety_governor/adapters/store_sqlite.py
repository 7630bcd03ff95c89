"""The embedded store: SQLite with FTS5 (BM25), WAL mode, one connection per thread.

Each searchable logical index is a table plus an FTS5 external-content table kept in sync by
triggers. Keyword fields (service, action, stance, status, source, incident_id) are lower-cased
columns so filters are exact and case-insensitive. Untrusted query text is reduced to quoted
word tokens before it reaches ``MATCH``, so an agent's claim can never be query syntax.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ..errors import InputError, StoreCorrupt, StoreError, StoreUnavailable
from ..knowledge import log_id
from ..models import Incident, LogSummary
from ..ports import FilterValue, SearchHit, event_time

SEARCH_INDICES = ("runbooks", "evidence", "policies", "incidents")
EVENT_INDICES = ("workflow_events", "action_executions")
INDICES = (*SEARCH_INDICES, "logs", *EVENT_INDICES)
KEYWORD_FIELDS = ("service", "action", "stance", "status", "source", "incident_id")

_STOPWORDS = frozenset(
    "a an and are as at be been but by for from has have if in into is it its no not of on or "
    "so such that the their then there these they this to was were when which while will with "
    "without after before than".split()
)
_TOKEN = re.compile(r"[A-Za-z0-9]+")
MAX_QUERY_TOKENS = 24


def service_token(service: str) -> str:
    """An opaque FTS token per service, so a service filter intersects posting lists."""
    return "svc" + hashlib.sha1(service.strip().lower().encode()).hexdigest()[:12]


def query_tokens(text: str) -> list[str]:
    """Word tokens of untrusted text, stop words dropped, order kept, capped."""
    seen: dict[str, None] = {}
    for tok in _TOKEN.findall(text.lower()):
        if tok not in _STOPWORDS and len(tok) > 1:
            seen.setdefault(tok, None)
        if len(seen) >= MAX_QUERY_TOKENS:
            break
    return list(seen)


def fts_match_expression(text: str, services: Iterable[str] = ()) -> str | None:
    """The ``MATCH`` expression: quoted tokens OR-ed, and the service tokens AND-ed in."""
    tokens = query_tokens(text)
    if not tokens:
        return None
    words = " OR ".join(f'"{t}"' for t in tokens)
    svc = [service_token(s) for s in services]
    if svc:
        return f"svc : ({' OR '.join(svc)}) AND text : ({words})"
    return f"text : ({words})"


def _search_text(index: str, doc: Mapping[str, Any]) -> str:
    def join(*values: Any) -> str:
        parts: list[str] = []
        for v in values:
            if isinstance(v, (list, tuple)):
                parts.extend(str(x) for x in v)
            elif v:
                parts.append(str(v))
        return " ".join(parts)

    if index == "runbooks":
        return join(doc.get("title"), doc.get("body"), doc.get("symptoms"), doc.get("steps"),
                    doc.get("recommended_action"))
    if index == "evidence":
        return join(doc.get("text"), doc.get("action"))
    if index == "policies":
        return join(doc.get("rule"), doc.get("blocked_actions"))
    return join(doc.get("summary"), doc.get("symptoms"), doc.get("pattern"))


def _keyword(value: Any) -> str | None:
    return str(value).strip().lower() if value not in (None, "") else None


def _doc_columns(index: str, doc: Mapping[str, Any]) -> dict[str, Any]:
    action = doc.get("recommended_action") if index == "runbooks" else doc.get("action")
    status = doc.get("status") or ("approved" if index == "runbooks" else None)
    service = _keyword(doc.get("service")) or ""
    return {
        "id": str(doc["id"]),
        "service": service,
        "action": _keyword(action),
        "stance": _keyword(doc.get("stance")),
        "status": _keyword(status),
        "source": _keyword(doc.get("source")),
        "incident_id": _keyword(doc.get("incident_id")),
        "text": _search_text(index, doc),
        "svc": service_token(service) if service else "",
        "body": json.dumps(doc, default=str, sort_keys=True),
    }


def _epoch_ms(value: Any) -> int:
    if isinstance(value, datetime):
        ts = value
    else:
        ts = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return int(ts.timestamp() * 1000)


def _utcnow() -> datetime:
    return datetime.now(UTC)


_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)",
    *[
        stmt
        for idx in SEARCH_INDICES
        for stmt in (
            f"""CREATE TABLE IF NOT EXISTS {idx} (
                rowid INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, service TEXT, action TEXT,
                stance TEXT, status TEXT, source TEXT, incident_id TEXT, text TEXT, svc TEXT,
                body TEXT NOT NULL)""",
            f"CREATE INDEX IF NOT EXISTS {idx}_service_action ON {idx}(service, action, stance)",
            f"""CREATE VIRTUAL TABLE IF NOT EXISTS {idx}_fts USING fts5(
                text, svc, content='{idx}', content_rowid='rowid', tokenize='porter unicode61')""",
            f"""CREATE TRIGGER IF NOT EXISTS {idx}_ai AFTER INSERT ON {idx} BEGIN
                INSERT INTO {idx}_fts(rowid, text, svc) VALUES (new.rowid, new.text, new.svc); END""",
            f"""CREATE TRIGGER IF NOT EXISTS {idx}_ad AFTER DELETE ON {idx} BEGIN
                INSERT INTO {idx}_fts({idx}_fts, rowid, text, svc)
                VALUES ('delete', old.rowid, old.text, old.svc); END""",
            f"""CREATE TRIGGER IF NOT EXISTS {idx}_au AFTER UPDATE ON {idx} BEGIN
                INSERT INTO {idx}_fts({idx}_fts, rowid, text, svc)
                VALUES ('delete', old.rowid, old.text, old.svc);
                INSERT INTO {idx}_fts(rowid, text, svc) VALUES (new.rowid, new.text, new.svc); END""",
        )
    ],
    """CREATE TABLE IF NOT EXISTS logs (
        rowid INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, ts INTEGER NOT NULL, service TEXT,
        request TEXT, response INTEGER, bytes INTEGER, body TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS logs_service_ts ON logs(service, ts)",
    "CREATE INDEX IF NOT EXISTS logs_ts ON logs(ts)",
    *[
        stmt
        for idx in EVENT_INDICES
        for stmt in (
            f"""CREATE TABLE IF NOT EXISTS {idx} (
                rowid INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, incident_id TEXT, kind TEXT,
                at TEXT NOT NULL, body TEXT NOT NULL)""",
            f"CREATE INDEX IF NOT EXISTS {idx}_incident ON {idx}(incident_id, rowid)",
            f"CREATE INDEX IF NOT EXISTS {idx}_kind ON {idx}(kind, rowid)",
        )
    ],
    """CREATE TABLE IF NOT EXISTS incident_claims (
        incident_id TEXT PRIMARY KEY, owner TEXT NOT NULL, claimed_at TEXT NOT NULL)""",
]


# SQLite's primary result codes for "not a database" and "database disk image is malformed".
_DAMAGED = (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT)


def damaged_store_error(path: str, exc: sqlite3.Error) -> StoreCorrupt | None:
    """A ``StoreCorrupt`` naming the file, what is wrong and what to do, if ``exc`` says the file
    is damaged (truncated, overwritten, not a database); else None."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None or code & 0xFF not in _DAMAGED:
        return None
    return StoreCorrupt(
        f"{path}: the store file is damaged ({exc}); move it aside (mv {path} {path}.damaged) and run "
        "`python -m safety_governor seed` to rebuild it"
    )


class _Connection(sqlite3.Connection):
    """A connection whose statements report a damaged file as ``StoreCorrupt`` (one line naming
    the file), wherever in the store the damage is first read."""

    store_path = ""

    def execute(self, *args: Any) -> sqlite3.Cursor:  # type: ignore[override]
        try:
            return super().execute(*args)
        except sqlite3.DatabaseError as exc:
            raise damaged_store_error(self.store_path, exc) or exc

    def executemany(self, *args: Any) -> sqlite3.Cursor:  # type: ignore[override]
        try:
            return super().executemany(*args)
        except sqlite3.DatabaseError as exc:
            raise damaged_store_error(self.store_path, exc) or exc


class SQLiteStore:
    """The embedded implementation of the ``Store`` port.

    Args:
        path: database file, or ``":memory:"`` for a private in-memory store (one connection
            shared under a lock). Files get one connection per thread, in WAL mode.
    """

    def __init__(self, path: str | Path = ":memory:") -> None:
        self.path = str(path)
        self._memory = self.path == ":memory:"
        self._local = threading.local()
        self._lock = threading.RLock() if self._memory else None
        self._shared: sqlite3.Connection | None = None
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        # Search results per index, dropped whenever that index is written (logs don't touch it).
        self._search_cache: dict[tuple[Any, ...], list[SearchHit]] = {}
        self._cache_lock = threading.Lock()
        if not self._memory:
            try:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreUnavailable(f"cannot create the folder for {self.path}: {exc.strerror}") from exc
        conn = self._conn()
        if not self._memory:
            # WAL must be switched on outside any transaction.
            conn.execute("PRAGMA journal_mode=WAL")
        self._migrate(conn)

    # --- connections and transactions ---------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=not self._memory, timeout=10,
                factory=_Connection,
            )
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open {self.path}: {exc}") from exc
        conn.store_path = self.path
        conn.execute("PRAGMA busy_timeout=10000")
        conn.execute("PRAGMA synchronous=NORMAL")
        # A larger page cache and memory-mapped reads keep hot FTS pages out of read() calls.
        conn.execute("PRAGMA cache_size=-32768")
        conn.execute("PRAGMA mmap_size=268435456")
        with self._all_lock:
            self._all.append(conn)
        return conn

    def _conn(self) -> sqlite3.Connection:
        if self._memory:
            if self._shared is None:
                self._shared = self._connect()
            return self._shared
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            self._local.depth = 0
        return conn

    def _guard(self) -> Any:
        return self._lock if self._lock is not None else nullcontext()

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """A transaction; nested calls become savepoints. Rolls back on any exception."""
        with self._guard():
            conn = self._conn()
            depth = getattr(self._local, "depth", 0)
            name = f"sp_{uuid.uuid4().hex[:8]}"
            conn.execute("BEGIN IMMEDIATE" if depth == 0 else f"SAVEPOINT {name}")
            self._local.depth = depth + 1
            try:
                yield
            except BaseException:
                # Roll back first; a failure here must not mask the original error.
                try:
                    conn.execute("ROLLBACK" if depth == 0 else f"ROLLBACK TO {name}")
                    if depth:
                        conn.execute(f"RELEASE {name}")
                except (sqlite3.Error, StoreError):
                    pass
                raise
            else:
                conn.execute("COMMIT" if depth == 0 else f"RELEASE {name}")
            finally:
                self._local.depth = depth

    def _execute(self, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
        """Run one statement and fetch its rows while holding the connection (shared in memory mode)."""
        with self._guard():
            try:
                return self._conn().execute(sql, params).fetchall()
            except sqlite3.OperationalError as exc:
                raise StoreError(f"store query failed: {exc}") from exc
            except sqlite3.DatabaseError as exc:  # fetching can read a damaged page first
                raise damaged_store_error(self.path, exc) or exc

    def _migrate(self, conn: sqlite3.Connection) -> None:
        with self.atomic():
            for stmt in _SCHEMA:
                conn.execute(stmt)
            conn.execute(
                "INSERT OR IGNORE INTO _migrations(name, applied_at) VALUES (?, ?)",
                ("0001_initial", _utcnow().isoformat()),
            )

    def close(self) -> None:
        with self._all_lock:
            conns, self._all = self._all, []
        for conn in conns:
            try:
                conn.close()
            except sqlite3.Error:
                pass
        self._shared = None
        self._local = threading.local()

    # --- reads ---------------------------------------------------------------------------

    @staticmethod
    def _check_index(index: str, allowed: tuple[str, ...] = INDICES) -> None:
        if index not in allowed:
            raise InputError(f"unknown index '{index}' (expected one of: {', '.join(allowed)})")

    @staticmethod
    def _filter_sql(filters: Mapping[str, FilterValue] | None, alias: str = "") -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        for field, value in (filters or {}).items():
            if field not in KEYWORD_FIELDS:
                raise InputError(f"cannot filter on '{field}' (filterable: {', '.join(KEYWORD_FIELDS)})")
            values = [value] if isinstance(value, str) else list(value)
            values = [str(v).strip().lower() for v in values]
            if not values:
                clauses.append("0")
                continue
            clauses.append(f"{alias}{field} IN ({', '.join('?' for _ in values)})")
            params.extend(values)
        return (" AND ".join(clauses) or "1"), params

    def search(
        self,
        index: str,
        query: str,
        *,
        filters: Mapping[str, FilterValue] | None = None,
        top_k: int = 3,
    ) -> list[SearchHit]:
        self._check_index(index, SEARCH_INDICES)
        filters = dict(filters or {})
        services = filters.get("service")
        svc_list = [services] if isinstance(services, str) else list(services or [])
        match = fts_match_expression(query, svc_list)
        if match is None or top_k < 1:
            return []
        key = (index, match, tuple(sorted((k, str(v)) for k, v in filters.items())), int(top_k))
        with self._cache_lock:
            cached = self._search_cache.get(key)
        if cached is not None:
            return [hit.model_copy(deep=True) for hit in cached]
        where, params = self._filter_sql(filters, alias="d.")
        # Rank inside FTS first and join only the best candidates: fetching every matching row's
        # body before sorting is what made broad queries slow. Filters other than the service
        # (already in MATCH) may drop candidates, so a short, saturated page falls back to the
        # exact full query.
        window = max(4 * int(top_k), 32)
        ranked = (
            f"SELECT rowid, bm25({index}_fts, 1.0, 0.0) AS rank FROM {index}_fts "
            f"WHERE {index}_fts MATCH ? ORDER BY rank LIMIT ?"
        )
        sql = (
            f"SELECT d.id, d.body, r.rank, r.n FROM (SELECT rowid, rank, COUNT(*) OVER () AS n FROM ({ranked})) r "
            f"JOIN {index} d ON d.rowid = r.rowid WHERE {where} ORDER BY r.rank, d.id LIMIT ?"
        )
        rows = self._execute(sql, [match, window, *params, int(top_k)])
        saturated = bool(rows) and rows[0][3] >= window
        if len(rows) < top_k and (saturated or not rows and self._execute(
                f"SELECT 1 FROM {index}_fts WHERE {index}_fts MATCH ? LIMIT 1 OFFSET ?", [match, window - 1])):
            rows = self._execute(
                f"SELECT d.id, d.body, bm25({index}_fts, 1.0, 0.0) AS rank FROM {index}_fts "
                f"JOIN {index} d ON d.rowid = {index}_fts.rowid "
                f"WHERE {index}_fts MATCH ? AND {where} ORDER BY rank, d.id LIMIT ?",
                [match, *params, int(top_k)],
            )
        hits = [SearchHit(id=r[0], score=round(-r[2], 6), source=json.loads(r[1])) for r in rows]
        with self._cache_lock:
            if len(self._search_cache) >= 512:
                self._search_cache.clear()
            self._search_cache[key] = hits
        return [hit.model_copy(deep=True) for hit in hits]

    def clear_cache(self) -> None:
        """Forget cached search results (benchmarks measure cold searches with it)."""
        with self._cache_lock:
            self._search_cache.clear()

    def _invalidate(self, index: str) -> None:
        with self._cache_lock:
            for key in [k for k in self._search_cache if k[0] == index]:
                del self._search_cache[key]

    def get(self, index: str, doc_id: str) -> dict[str, Any] | None:
        return self.get_many(index, [doc_id]).get(doc_id)

    def get_many(self, index: str, doc_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        self._check_index(index)
        ids = list(dict.fromkeys(str(i) for i in doc_ids))
        if not ids:
            return {}
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            rows = self._execute(
                f"SELECT id, body FROM {index} WHERE id IN ({', '.join('?' for _ in chunk)})", chunk
            )
            found.update({r[0]: json.loads(r[1]) for r in rows})
        return found

    def find(
        self, index: str, filters: Mapping[str, FilterValue], *, limit: int = 100
    ) -> list[dict[str, Any]]:
        self._check_index(index, SEARCH_INDICES)
        where, params = self._filter_sql(filters)
        rows = self._execute(
            f"SELECT body FROM {index} WHERE {where} ORDER BY id LIMIT ?", [*params, int(limit)]
        )
        return [json.loads(r[0]) for r in rows]

    def events(
        self,
        index: str,
        incident_id: str | None = None,
        limit: int = 1000,
        *,
        kind: FilterValue | None = None,
    ) -> list[dict[str, Any]]:
        """Events in insertion order, optionally for one incident and of some kinds."""
        self._check_index(index, EVENT_INDICES)
        clauses: list[str] = []
        params: list[Any] = []
        if incident_id is not None:
            clauses.append("incident_id = ?")
            params.append(incident_id)
        if kind is not None:
            kinds = [kind] if isinstance(kind, str) else list(kind)
            clauses.append(f"kind IN ({', '.join('?' for _ in kinds)})" if kinds else "0")
            params.extend(kinds)
        where = " AND ".join(clauses) or "1"
        rows = self._execute(f"SELECT body FROM {index} WHERE {where} ORDER BY rowid LIMIT ?", [*params, limit])
        return [json.loads(r[0]) for r in rows]

    def recent_events(
        self,
        index: str,
        *,
        kind: FilterValue | None = None,
        since: datetime | None = None,
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        """Events newest first, optionally of some kinds and at or after ``since``."""
        self._check_index(index, EVENT_INDICES)
        clauses: list[str] = []
        params: list[Any] = []
        if kind is not None:
            kinds = [kind] if isinstance(kind, str) else list(kind)
            clauses.append(f"kind IN ({', '.join('?' for _ in kinds)})" if kinds else "0")
            params.extend(kinds)
        if since is not None:
            # ``at`` is ISO text ('+00:00' or 'Z'): a second's slack in SQL, the exact cut below.
            clauses.append("at >= ?")
            params.append((since.astimezone(UTC) - timedelta(seconds=1)).isoformat())
        where = " AND ".join(clauses) or "1"
        rows = self._execute(f"SELECT body FROM {index} WHERE {where} ORDER BY rowid DESC LIMIT ?", [*params, limit])
        docs = [json.loads(r[0]) for r in rows]
        return docs if since is None else [d for d in docs if event_time(d) >= since]

    def count(self, index: str, filters: Mapping[str, FilterValue] | None = None) -> int:
        self._check_index(index)
        if index in SEARCH_INDICES:
            where, params = self._filter_sql(filters)
        elif filters:
            raise InputError(f"index '{index}' cannot be filtered")
        else:
            where, params = "1", []
        return int(self._execute(f"SELECT COUNT(*) FROM {index} WHERE {where}", params)[0][0])

    def policy_conflicts(self, service: str, action: str, severity: str) -> list[dict[str, Any]]:
        svc, act, sev = service.strip().lower(), action.strip().lower(), severity.strip().lower()
        rows = self._execute(
            "SELECT body FROM policies WHERE service IN (?, '*') ORDER BY id", [svc]
        )
        conflicts = []
        for (body,) in rows:
            policy = json.loads(body)
            severities = {str(s).strip().lower() for s in policy.get("severities", [])}
            blocked = {str(a).strip().lower() for a in policy.get("blocked_actions", [])}
            if sev in severities and act in blocked:
                conflicts.append(policy)
        return conflicts

    def known_actions(self) -> set[str]:
        rows = self._execute(
            "SELECT DISTINCT action FROM runbooks WHERE status = 'approved' AND action IS NOT NULL"
        )
        return {r[0] for r in rows}

    def log_stats(
        self,
        *,
        service: str | None = None,
        window_minutes: int = 15,
        now: datetime | None = None,
        top_n: int = 5,
    ) -> LogSummary:
        end = now or _utcnow()
        start = end - timedelta(minutes=window_minutes)
        where = "ts > ? AND ts <= ?"
        params: list[Any] = [_epoch_ms(start), _epoch_ms(end)]
        if service:
            where += " AND service = ?"
            params.append(service.strip().lower())
        total, e4, e5, avg_bytes = self._execute(
            f"SELECT COUNT(*), SUM(response >= 400 AND response < 500), SUM(response >= 500 AND response < 600), "
            f"AVG(bytes) FROM logs WHERE {where}",
            params,
        )[0]
        paths = self._execute(
            f"SELECT request, COUNT(*) AS c, SUM(response >= 500) FROM logs WHERE {where} AND response >= 400 "
            "GROUP BY request ORDER BY c DESC, request LIMIT ?",
            [*params, top_n],
        )
        total = int(total or 0)
        e4, e5 = int(e4 or 0), int(e5 or 0)
        return LogSummary.of_counts(
            service=service,
            window_minutes=window_minutes,
            total=total,
            errors_4xx=e4,
            errors_5xx=e5,
            avg_bytes=avg_bytes,
            top_failing_paths=[{"request": p, "errors": int(c), "errors_5xx": int(c5 or 0)} for p, c, c5 in paths],
        )

    # --- writes --------------------------------------------------------------------------

    def index_documents(self, index: str, docs: Iterable[Mapping[str, Any]]) -> int:
        self._check_index(index, (*SEARCH_INDICES, "logs"))
        count = 0
        try:
            count = self._index(index, docs)
        finally:
            if index != "logs":
                self._invalidate(index)
        return count

    def _index(self, index: str, docs: Iterable[Mapping[str, Any]]) -> int:
        count = 0
        with self.atomic():
            conn = self._conn()
            for doc in docs:
                if index == "logs":
                    conn.execute(
                        "INSERT OR REPLACE INTO logs(id, ts, service, request, response, bytes, body) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (
                            log_id(doc),
                            _epoch_ms(doc["timestamp"]),
                            _keyword(doc.get("service")),
                            doc.get("request"),
                            int(doc.get("response") or 0),
                            int(doc.get("bytes") or 0),
                            json.dumps(doc, default=str, sort_keys=True),
                        ),
                    )
                else:
                    cols = _doc_columns(index, doc)
                    # Upsert keeps the rowid stable, so the FTS triggers see an UPDATE.
                    conn.execute(
                        f"INSERT INTO {index}(id, service, action, stance, status, source, incident_id, text, svc, body) "
                        "VALUES (:id, :service, :action, :stance, :status, :source, :incident_id, :text, :svc, :body) "
                        "ON CONFLICT(id) DO UPDATE SET service=excluded.service, action=excluded.action, "
                        "stance=excluded.stance, status=excluded.status, source=excluded.source, "
                        "incident_id=excluded.incident_id, text=excluded.text, svc=excluded.svc, body=excluded.body",
                        cols,
                    )
                count += 1
        return count

    def append_event(self, index: str, doc: Mapping[str, Any]) -> str:
        self._check_index(index, EVENT_INDICES)
        event_id = str(doc.get("id") or f"{index[:3]}-{uuid.uuid4().hex[:16]}")
        body = {**doc, "id": event_id}
        body.setdefault("at", _utcnow().isoformat())
        self._execute(
            f"INSERT INTO {index}(id, incident_id, kind, at, body) VALUES (?, ?, ?, ?, ?)",
            (event_id, body.get("incident_id"), body.get("kind"), str(body["at"]),
             json.dumps(body, default=str, sort_keys=True)),
        )
        return event_id

    def claim_incident(self, incident: Incident, owner: str) -> bool:
        with self.atomic():
            try:
                self._conn().execute(
                    "INSERT INTO incident_claims(incident_id, owner, claimed_at) VALUES (?, ?, ?)",
                    (incident.id, owner, _utcnow().isoformat()),
                )
            except sqlite3.IntegrityError:
                return False
            self.index_documents("incidents", [incident.model_dump(mode="json", exclude_none=True)])
        return True

    def claim_of(self, incident_id: str) -> dict[str, Any] | None:
        """Who claimed the incident and when (``owner``, ``claimed_at``), or ``None``."""
        row = self._conn().execute("SELECT owner, claimed_at FROM incident_claims WHERE incident_id = ?",
                                   (incident_id,)).fetchone()
        return {"incident_id": incident_id, "owner": row[0], "claimed_at": row[1]} if row else None

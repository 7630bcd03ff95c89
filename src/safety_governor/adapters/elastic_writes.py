"""Writes to Elasticsearch, all or nothing by compensation (the writing half of ``ElasticStore``).

* **Bulk writes are undone on failure.** Elasticsearch has no multi-document transactions: a
  write reads the previous version of every upserted id first and, if any item fails, restores or
  deletes the items that did land, then raises ``BulkWriteError`` with every per-document error.
  Readers may briefly see the partial write. Items refused with a per-item 429
  (``es_rejected_execution_exception`` in a 200 bulk reply: the write queue was full, nothing was
  written) are first sent again with a doubling backoff, as the client's ``streaming_bulk``
  helper does with ``max_retries``.
* **``atomic()`` is an undo log.** Writes inside it happen at once (so a check-then-append
  under a lock sees them, as with the embedded store); an exception undoes the block's writes,
  newest first, and releases its claims (a nested block undoes only its own).
* **Claims are create-only.** ``claim_incident`` writes ``incident_claims/_create/<id>``; a 409
  means another governor holds the incident. A random token tells our own retried write apart.
* **Refresh only where a search follows** (``_refresh``): ``wait_for`` for events, documents and
  undo writes, nothing for claims (read back by id, which is real-time), never a forced refresh.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from elasticsearch import ApiError, ConflictError, Elasticsearch, TransportError

from ..errors import InputError, StoreError
from ..knowledge import log_id
from ..models import Incident
from .elastic_wire import BulkWriteError, response_body, short
from .store_sqlite import EVENT_INDICES, SEARCH_INDICES

BULK_CHUNK = 500
SEQ_FIELD = "sg_seq"
_seq_lock = threading.Lock()
_last_seq = 0


def next_seq() -> int:
    """A nanosecond timestamp, strictly increasing within this process (event order)."""
    global _last_seq
    with _seq_lock:
        _last_seq = max(time.time_ns(), _last_seq + 1)
        return _last_seq


def without_seq(source: dict[str, Any]) -> dict[str, Any]:
    source.pop(SEQ_FIELD, None)
    return source


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Op:
    action: str  # "index" (upsert) or "create" (append-only)
    index: str  # logical index
    doc_id: str
    source: dict[str, Any]


# One undo entry: (logical index, id, the document before the write or None if it was new).
_Undo = tuple[str, str, "dict[str, Any] | None"]


@dataclass
class _Frame:
    undo: list[_Undo] = field(default_factory=list)
    claims: list[tuple[str, int, int]] = field(default_factory=list)  # (incident id, seq_no, primary_term)


class ElasticWrites:
    """The writes of ``ElasticStore``, which provides the attributes below and the methods
    ``_errors(what)`` (error translation), ``_mget(index, ids)`` and ``_check_index``."""

    client: Elasticsearch
    indices: dict[str, str]
    refresh: str | bool | None
    bulk_retries: int
    bulk_backoff: float
    bulk_backoff_cap: float
    sleep: Callable[[float], None]
    _local: threading.local

    def _refresh(self, searched_next: bool = True) -> str | bool:
        """``wait_for`` for a write the next search must see (events, documents, undo), nothing
        for one only read back by id (claims: GET is real-time); never a forced refresh, which
        would make a new small segment per write."""
        if self.refresh is not None:
            return self.refresh
        return "wait_for" if searched_next else False

    def _frames(self) -> list[_Frame]:
        frames = getattr(self._local, "frames", None)
        if frames is None:
            frames = self._local.frames = []
        return frames

    # --- transactions ---------------------------------------------------------------------

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """A transaction by compensation: writes happen at once (visible to reads inside and
        outside the block); an exception undoes the block's writes, newest first (restoring
        previous versions, deleting new documents) and releases its claims. A nested block that
        raises undoes only its own writes."""
        frames = self._frames()
        frame = _Frame()
        frames.append(frame)
        try:
            yield
        except BaseException:
            frames.pop()
            self._undo(frame.undo)
            self._release_claims(frame.claims)
            raise
        frames.pop()
        if frames:
            frames[-1].undo.extend(frame.undo)
            frames[-1].claims.extend(frame.claims)

    def _release_claims(self, claims: list[tuple[str, int, int]]) -> None:
        for incident_id, seq_no, primary_term in claims:
            try:
                self.client.delete(
                    index=self.indices["incident_claims"], id=incident_id, if_seq_no=seq_no,
                    if_primary_term=primary_term, refresh=self._refresh(searched_next=False),
                )
            except (ApiError, TransportError):
                pass  # releasing is best effort; the original error is what matters

    # --- writes ---------------------------------------------------------------------------

    def index_documents(self, index: str, docs: Iterable[Mapping[str, Any]]) -> int:
        self._check_index(index, (*SEARCH_INDICES, "logs"))
        ops: list[_Op] = []
        for position, doc in enumerate(docs):
            if not isinstance(doc, Mapping):
                raise InputError(f"{index}[{position}]: expected an object")
            if index == "logs":
                doc_id = log_id(doc)
            elif doc.get("id") in (None, ""):
                raise InputError(f"{index}[{position}]: field 'id' is required")
            else:
                doc_id = str(doc["id"])
            ops.append(_Op("index", index, doc_id, json.loads(json.dumps(dict(doc), default=str))))
        self._submit(ops)
        return len(ops)

    def append_event(self, index: str, doc: Mapping[str, Any]) -> str:
        self._check_index(index, EVENT_INDICES)
        event_id = str(doc.get("id") or f"{index[:3]}-{uuid.uuid4().hex[:16]}")
        body = {**doc, "id": event_id}
        body.setdefault("at", utcnow().isoformat())
        stored = {**json.loads(json.dumps(body, default=str)), SEQ_FIELD: next_seq()}
        self._submit([_Op("create", index, event_id, stored)])
        return event_id

    def _submit(self, ops: list[_Op], *, searched_next: bool = True) -> None:
        undo = self._write(ops, searched_next=searched_next)
        frames = self._frames()
        if frames:
            frames[-1].undo.extend(undo)

    def _write(self, ops: list[_Op], *, searched_next: bool = True) -> list[_Undo]:
        """Send ``ops`` as bulk requests; all land or, by compensation, none does. Returns how to
        undo them (for ``atomic``)."""
        if not ops:
            return []
        # The last write of an id wins, as it would in one transaction.
        latest: dict[tuple[str, str], _Op] = {}
        for op in ops:
            latest.pop((op.index, op.doc_id), None)
            latest[(op.index, op.doc_id)] = op
        ordered = list(latest.values())
        prior: dict[tuple[str, str], dict[str, Any]] = {}
        for index in dict.fromkeys(op.index for op in ordered if op.action == "index"):
            ids = [op.doc_id for op in ordered if op.index == index and op.action == "index"]
            prior.update({(index, i): src for i, src in self._mget(index, ids).items()})
        landed: list[_Undo] = []
        failures: list[dict[str, Any]] = []
        try:
            for start in range(0, len(ordered), BULK_CHUNK):
                chunk = ordered[start : start + BULK_CHUNK]
                for op, status, error in self._bulk_with_retries(chunk, self._refresh(searched_next)):
                    if 200 <= status < 300 or (status == 409 and self._same_event(op)):
                        landed.append((op.index, op.doc_id, prior.get((op.index, op.doc_id))))
                        continue
                    failures.append({
                        "index": op.index, "id": op.doc_id, "status": status,
                        "type": str(error.get("type", "error")) if isinstance(error, Mapping) else "error",
                        "reason": short(error.get("reason", error) if isinstance(error, Mapping) else error, 200),
                    })
        except StoreError:
            self._undo(landed)
            raise
        if failures:
            undone = self._undo(landed)
            raise BulkWriteError(failures, len(ordered), rolled_back=undone)
        return landed

    def _bulk_with_retries(self, chunk: list[_Op], refresh: str | bool) -> list[tuple[_Op, int, Any]]:
        """One bulk request for ``chunk``; items refused with 429 (``es_rejected_execution_exception``:
        a full write queue, nothing was written) are sent again after a backoff, up to
        ``bulk_retries`` times, as the client's ``streaming_bulk`` helper does with ``max_retries``.
        Returns ``(op, status, error)`` per op; the caller undoes what landed if any item failed."""
        results: list[tuple[_Op, int, Any]] = []
        pending = list(chunk)
        for attempt in range(self.bulk_retries + 1):
            if attempt:
                self.sleep(min(self.bulk_backoff_cap, self.bulk_backoff * 2 ** (attempt - 1)))
            operations: list[dict[str, Any]] = []
            for op in pending:
                operations.append({op.action: {"_index": self.indices[op.index], "_id": op.doc_id}})
                operations.append(op.source)
            with self._errors(f"write {', '.join(dict.fromkeys(op.index for op in pending))}"):
                resp = response_body(self.client.bulk(operations=operations, refresh=refresh))
            items = resp.get("items", [])
            if len(items) < len(pending):
                raise StoreError(f"Elasticsearch acknowledged {len(items)} of {len(pending)} writes")
            again: list[_Op] = []
            for op, item in zip(pending, items, strict=False):
                result = next(iter(item.values()), {}) if isinstance(item, Mapping) else {}
                status = int(result.get("status", 500))
                if status == 429 and attempt < self.bulk_retries:
                    again.append(op)
                else:
                    results.append((op, status, result.get("error") or {}))
            if not again:
                break
            pending = again
        return results

    def _same_event(self, op: _Op) -> bool:
        """A 409 on an append-only create is fine when the stored event is ours (a retried write)."""
        if op.action != "create":
            return False
        stored = self._mget(op.index, [op.doc_id]).get(op.doc_id)
        return stored == op.source

    def _undo(self, entries: list[_Undo]) -> bool:
        """Restore the previous version of each written document, or delete it if it was new;
        newest first, so a document written twice ends as it was before the first write."""
        if not entries:
            return True
        operations: list[dict[str, Any]] = []
        for index, doc_id, previous in reversed(entries):
            meta = {"_index": self.indices[index], "_id": doc_id}
            if previous is None:
                operations.append({"delete": meta})
            else:
                operations.append({"index": meta})
                operations.append(previous)
        try:
            resp = response_body(self.client.bulk(operations=operations, refresh=self._refresh()))
        except (ApiError, TransportError):
            return False
        return not resp.get("errors", False) or all(
            next(iter(i.values()), {}).get("status") in (200, 201, 404) for i in resp.get("items", [])
        )

    def claim_incident(self, incident: Incident, owner: str) -> bool:
        token = uuid.uuid4().hex
        claim = {"incident_id": incident.id, "owner": owner, "claimed_at": utcnow().isoformat(), "token": token}
        index = self.indices["incident_claims"]
        with self._errors(f"claim incident {incident.id}"):
            try:
                resp = response_body(self.client.create(index=index, id=incident.id, document=claim,
                                                   refresh=self._refresh(searched_next=False)))
            except ConflictError:
                # Someone holds it, unless the holder is this very call (a retried request).
                held = response_body(self.client.options(ignore_status=404).get(index=index, id=incident.id))
                if (held.get("_source") or {}).get("token") != token:
                    return False
                resp = held
        handle = (incident.id, int(resp.get("_seq_no", 0)), int(resp.get("_primary_term", 1)))
        # The claim and the incident record stand or fall together (as in one SQLite transaction).
        with self.atomic():
            self._frames()[-1].claims.append(handle)
            # Nothing searches the incident record right after its claim: no refresh wait.
            doc = json.loads(json.dumps(incident.model_dump(mode="json", exclude_none=True), default=str))
            self._submit([_Op("index", "incidents", incident.id, doc)], searched_next=False)
        return True

    def claim_of(self, incident_id: str) -> dict[str, Any] | None:
        """Who claimed the incident and when (``owner``, ``claimed_at``), or ``None``."""
        with self._errors(f"read the claim of {incident_id}"):
            held = response_body(self.client.options(ignore_status=404).get(index=self.indices["incident_claims"],
                                                                            id=incident_id))
        source = held.get("_source")
        return {k: source.get(k) for k in ("incident_id", "owner", "claimed_at")} if source else None


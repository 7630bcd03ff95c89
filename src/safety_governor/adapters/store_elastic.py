"""The Elasticsearch store: the ``Store`` port over the official ``elasticsearch`` client (9.x).

It mirrors the embedded store (``store_sqlite``) and is held to the same contract suite.
How the port's promises are kept on a search engine:

* **Untrusted text is a value, never syntax.** A query is reduced to word tokens exactly as the
  embedded store does (``query_tokens``) and sent as the value of a ``multi_match``; nothing is
  ever pasted into ``query_string`` or ES|QL text.
* **Filters** are ``term`` queries with ``case_insensitive: true`` on keyword fields (our mappings
  also lower-case them with a normaliser), "any of" as a ``bool.should``. A runbook without a
  ``status`` counts as approved, as in the embedded store.
* **5xx on a text ``response``.** In ``kibana_sample_data_logs`` ``response`` is ``text`` with a
  ``.keyword`` sub-field, so a range on it would compare strings. ``log_stats`` defines a
  search-time runtime field ``sg_response_code`` (type ``long``) that a fixed Painless script
  parses from ``response.keyword`` (digits only; anything else emits nothing), and counts with
  numeric ``range`` filters on it (``gte`` 400 / 500). One request, plain DSL, any 7.11+ cluster.
* **Writes are all or nothing, by compensation.** Elasticsearch has no multi-document
  transactions: a bulk write reads the previous version of every upserted id first and, if any
  item fails, restores or deletes the items that did land, then raises ``BulkWriteError`` with
  every per-document error. Readers may briefly see the partial write.
* **``atomic()`` is an undo log.** Writes inside it happen at once (so a check-then-append
  under a lock sees them, as with the embedded store); an exception undoes the block's writes,
  newest first, and releases its claims (a nested block undoes only its own). Other readers may
  see the writes before they are undone.
* **Claims are create-only.** ``claim_incident`` writes ``incident_claims/_create/<id>``; a 409
  means another governor holds the incident. A random token tells our own retried write apart.

Vendor exceptions stop here: callers see ``StoreError`` / ``StoreUnavailable`` / ``InputError``.
The 9.x client speaks only to Elasticsearch 9.x (it sends ``compatible-with=9``); an 8.x cluster
answers with a media-type error, reported as such.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from elasticsearch import (
    ApiError,
    AuthenticationException,
    AuthorizationException,
    ConflictError,
    ConnectionTimeout,
    Elasticsearch,
    TransportError,
    UnsupportedProductError,
)

from ..config import ELASTIC_INDEXES, PROJECT_ROOT
from ..errors import InputError, StoreError, StoreUnavailable
from ..knowledge import log_id
from ..models import Incident, LogSummary
from ..ports import FilterValue, Readiness, SearchHit
from ..redaction import redact_url
from .store_sqlite import (
    EVENT_INDICES,
    INDICES,
    KEYWORD_FIELDS,
    SEARCH_INDICES,
    query_tokens,
)

if TYPE_CHECKING:
    from ..config import Settings

MAPPINGS_DIR = PROJECT_ROOT / "mappings"
BULK_CHUNK = 500
MAX_RESULT_WINDOW = 10_000  # index.max_result_window's default: from + size may not pass it
SCAN_PAGE = 5_000
POLICY_SCAN_LIMIT = 100_000  # hits per request when a read pages
PIT_KEEP_ALIVE = "1m"  # how long a point in time lives between two pages

# Fields searched per logical index: the same text the embedded store puts in its FTS column.
TEXT_FIELDS: dict[str, list[str]] = {
    "runbooks": ["title", "body", "symptoms", "steps", "recommended_action.text"],
    "evidence": ["text", "action.text"],
    "policies": ["rule", "blocked_actions.text"],
    "incidents": ["summary", "symptoms", "pattern.text"],
}

RESPONSE_CODE_FIELD = "sg_response_code"
# Parses the HTTP status from the keyword sub-field; emits nothing for a missing or non-numeric
# value. The field name arrives as a parameter; the source never changes.
RESPONSE_CODE_SCRIPT = (
    "String f = params.field; "
    "if (doc.containsKey(f) && doc[f].size() > 0) { "
    "String s = doc[f].value.trim(); "
    "boolean ok = s.length() > 0 && s.length() < 10; "
    "for (int i = 0; ok && i < s.length(); ++i) { ok = Character.isDigit(s.charAt(i)); } "
    "if (ok) { emit(Long.parseLong(s)); } }"
)


class BulkWriteError(StoreError):
    """Some documents of a write were rejected; the write was undone. ``failures`` lists each
    rejected document as ``{"index", "id", "status", "type", "reason"}``."""

    def __init__(self, failures: list[dict[str, Any]], total: int, *, rolled_back: bool = True) -> None:
        self.failures = failures
        self.total = total
        self.rolled_back = rolled_back
        shown = "; ".join(f"{f['index']}/{f['id']}: {f['type']}: {f['reason']}" for f in failures[:3])
        more = f" (and {len(failures) - 3} more)" if len(failures) > 3 else ""
        kept = "nothing was kept" if rolled_back else "the undo failed, some documents may remain"
        super().__init__(f"{len(failures)} of {total} documents were rejected ({kept}): {shown}{more}")


def _body(resp: Any) -> dict[str, Any]:
    """The JSON body of a client response (``ObjectApiResponse``) as a plain dict."""
    body = getattr(resp, "body", resp)
    return body if isinstance(body, dict) else {}


SEQ_FIELD = "sg_seq"
_seq_lock = threading.Lock()
_last_seq = 0


def _next_seq() -> int:
    """A nanosecond timestamp, strictly increasing within this process (event order)."""
    global _last_seq
    with _seq_lock:
        _last_seq = max(time.time_ns(), _last_seq + 1)
        return _last_seq


def _without_seq(source: dict[str, Any]) -> dict[str, Any]:
    source.pop(SEQ_FIELD, None)
    return source


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _epoch_ms(ts: datetime) -> int:
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return int(ts.timestamp() * 1000)


def _short(text: Any, limit: int = 300) -> str:
    value = " ".join(str(text).split())
    return value if len(value) <= limit else value[: limit - 1] + "…"


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


class ElasticStore:
    """The ``Store`` port on Elasticsearch.

    Args:
        client: an ``elasticsearch.Elasticsearch`` client (``from_settings`` builds one).
        indices: physical index name per logical index; missing ones use ``ELASTIC_INDEXES``.
        semantic_field: a ``semantic_text`` field; when set, ``search`` fuses BM25 and semantic
            retrieval with RRF (and falls back to BM25 if the cluster refuses it).
        refresh: the ``refresh`` parameter of every write. ``None`` (the default): ``"wait_for"``
            where the next search must see the write, as in the embedded store (events,
            documents, undo), none for claims (read back by id, which is real-time), and never a
            forced ``"true"`` (``bench/bench_elastic_refresh.py`` measures the difference).
        location: where the cluster is, for messages (never with credentials).
        bulk_retries: how often bulk items refused with 429 are sent again before the write is
            undone; the wait doubles from ``bulk_backoff`` up to ``bulk_backoff_cap`` seconds.
        sleep: the backoff sleep (tests pass a recorder).
    """

    name = "elasticsearch"

    def __init__(
        self,
        client: Elasticsearch,
        *,
        indices: Mapping[str, str] | None = None,
        semantic_field: str | None = None,
        refresh: str | bool | None = None,
        location: str = "Elasticsearch",
        mappings_dir: Path = MAPPINGS_DIR,
        bulk_retries: int = 3,
        bulk_backoff: float = 0.5,
        bulk_backoff_cap: float = 8.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        unknown = sorted(set(indices or {}) - set(ELASTIC_INDEXES))
        if unknown:
            raise InputError(f"unknown logical index(es) {', '.join(unknown)} (known: {', '.join(ELASTIC_INDEXES)})")
        self.client = client
        self.indices = {**ELASTIC_INDEXES, **dict(indices or {})}
        self.semantic_field = semantic_field or None
        self.refresh = refresh
        self.location = location
        self.mappings_dir = Path(mappings_dir)
        self.bulk_retries = max(0, int(bulk_retries))
        self.bulk_backoff = bulk_backoff
        self.bulk_backoff_cap = bulk_backoff_cap
        self.sleep = sleep
        self.hybrid_disabled: str | None = None
        self._local = threading.local()

    @classmethod
    def from_settings(cls, settings: Settings) -> ElasticStore:
        """A store on the cluster named by ``ELASTIC_URL`` or ``ELASTIC_CLOUD_ID``."""
        kwargs: dict[str, Any] = {
            "request_timeout": settings.elastic_request_timeout,
            "max_retries": settings.elastic_max_retries,
            "retry_on_status": (429, 502, 503, 504),
            "retry_on_timeout": False,
            "retry_backoff_base": 0.5,
            "retry_backoff_cap": 8.0,
        }
        if settings.elastic_api_key is not None:
            kwargs["api_key"] = settings.elastic_api_key.get_secret_value()
        if settings.elastic_ca_certs is not None:
            kwargs["ca_certs"] = str(settings.elastic_ca_certs)
        try:
            if settings.elastic_cloud_id:
                client = Elasticsearch(cloud_id=settings.elastic_cloud_id, **kwargs)
                location = f"Elastic Cloud deployment '{settings.elastic_cloud_id.split(':', 1)[0]}'"
            elif settings.elastic_url:
                client = Elasticsearch(settings.elastic_url, **kwargs)
                location = redact_url(settings.elastic_url)
            else:
                raise StoreUnavailable("set ELASTIC_URL or ELASTIC_CLOUD_ID to use the Elasticsearch store")
        except (ValueError, TypeError) as exc:
            # The client's message may echo the URL (and credentials in it): name the type only.
            raise StoreUnavailable(
                f"invalid ELASTIC_URL / ELASTIC_CLOUD_ID ({type(exc).__name__}); expected e.g. "
                "https://host:9200 or <deployment>:<base64>"
            ) from exc
        return cls(
            client,
            indices=dict(settings.elastic_indices),
            semantic_field=settings.elastic_semantic_field,
            location=location,
        )

    # --- plumbing --------------------------------------------------------------------------

    def index_name(self, logical: str) -> str:
        return self.indices[logical]

    @staticmethod
    def _check_index(index: str, allowed: tuple[str, ...] = INDICES) -> None:
        if index not in allowed:
            raise InputError(f"unknown index '{index}' (expected one of: {', '.join(allowed)})")

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Translate the client's exceptions into ours, with one clear sentence each."""
        try:
            yield
        except UnsupportedProductError as exc:
            raise StoreUnavailable(f"{what}: the server at {self.location} is not Elasticsearch") from exc
        except AuthenticationException as exc:
            raise StoreUnavailable(
                f"{what}: Elasticsearch at {self.location} rejected the credentials (401); check ELASTIC_API_KEY"
            ) from exc
        except AuthorizationException as exc:
            raise StoreError(f"{what}: the API key lacks a privilege (403): {_short(self._reason(exc))}") from exc
        except ApiError as exc:
            kind = self._error_type(exc)
            if kind == "media_type_header_exception":
                raise StoreUnavailable(
                    f"{what}: {self.location} refused the 9.x client's compatibility headers; the elasticsearch "
                    "9.x client needs Elasticsearch 9.x (for an 8.x cluster install elasticsearch>=8,<9)"
                ) from exc
            if kind == "index_not_found_exception":
                raise StoreError(
                    f"{what}: index {self._error_index(exc)} does not exist on {self.location}; "
                    "run `python load_to_elastic.py` to create and seed the indices"
                ) from exc
            raise StoreError(
                f"{what}: Elasticsearch answered {exc.meta.status} {kind}: {_short(self._reason(exc))}"
            ) from exc
        except ConnectionTimeout as exc:
            raise StoreUnavailable(f"{what}: Elasticsearch at {self.location} did not answer in time") from exc
        except TransportError as exc:
            raise StoreUnavailable(
                f"{what}: cannot reach Elasticsearch at {self.location} ({type(exc).__name__})"
            ) from exc

    @staticmethod
    def _error_body(exc: ApiError) -> dict[str, Any]:
        body = exc.body
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            return body["error"]
        return {}

    def _error_type(self, exc: ApiError) -> str:
        return str(self._error_body(exc).get("type") or exc.message or "error")

    def _reason(self, exc: ApiError) -> str:
        err = self._error_body(exc)
        if err:
            return str(err.get("reason") or err.get("type") or "")
        return str(exc.body or exc.message)

    def _error_index(self, exc: ApiError) -> str:
        err = self._error_body(exc)
        return str(err.get("index") or err.get("resource.id") or "?")

    def _filter_clauses(self, index: str, filters: Mapping[str, FilterValue] | None) -> list[dict[str, Any]]:
        clauses: list[dict[str, Any]] = []
        for name, value in (filters or {}).items():
            if name not in KEYWORD_FIELDS:
                raise InputError(f"cannot filter on '{name}' (filterable: {', '.join(KEYWORD_FIELDS)})")
            values = [value] if isinstance(value, str) else list(value)
            values = [str(v).strip().lower() for v in values]
            if not values:
                clauses.append({"match_none": {}})
                continue
            es_field = "recommended_action" if (index == "runbooks" and name == "action") else name
            terms: list[dict[str, Any]] = [
                {"term": {es_field: {"value": v, "case_insensitive": True}}} for v in dict.fromkeys(values)
            ]
            if index == "runbooks" and name == "status" and "approved" in values:
                # A runbook without a status is approved (as in the embedded store).
                terms.append({"bool": {"must_not": [{"exists": {"field": "status"}}]}})
            clauses.append(terms[0] if len(terms) == 1 else {"bool": {"should": terms, "minimum_should_match": 1}})
        return clauses

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

    # --- reads ----------------------------------------------------------------------------

    def search(
        self,
        index: str,
        query: str,
        *,
        filters: Mapping[str, FilterValue] | None = None,
        top_k: int = 3,
    ) -> list[SearchHit]:
        self._check_index(index, SEARCH_INDICES)
        tokens = query_tokens(query or "")
        if not tokens or top_k < 1:
            return []
        top_k = min(int(top_k), MAX_RESULT_WINDOW)
        clauses = self._filter_clauses(index, filters)
        words = {"multi_match": {"query": " ".join(tokens), "fields": TEXT_FIELDS[index],
                                 "type": "most_fields", "operator": "or"}}
        if self.semantic_field and not self.hybrid_disabled:
            hits = self._hybrid_search(index, words, query, clauses, top_k)
            if hits is not None:
                return hits
        with self._errors(f"search {index}"):
            resp = _body(self.client.search(
                index=self.indices[index],
                query={"bool": {"must": [words], "filter": clauses}},
                size=top_k,
                sort=[{"_score": {"order": "desc"}}, {"id": {"order": "asc", "unmapped_type": "keyword"}}],
                track_total_hits=False,
            ))
        return self._hits(resp)

    def _hybrid_search(
        self, index: str, words: dict[str, Any], query: str, clauses: list[dict[str, Any]], top_k: int
    ) -> list[SearchHit] | None:
        """BM25 and semantic retrieval fused with RRF; ``None`` (BM25 from then on) if refused."""
        semantic = {"semantic": {"field": self.semantic_field, "query": " ".join(query.split())[:4000]}}
        retriever = {"rrf": {
            "retrievers": [
                {"standard": {"query": {"bool": {"must": [words], "filter": clauses}}}},
                {"standard": {"query": {"bool": {"must": [semantic], "filter": clauses}}}},
            ],
            "rank_window_size": max(50, top_k),
            "rank_constant": 60,
        }}
        with self._errors(f"search {index}"):
            try:
                resp = _body(self.client.search(index=self.indices[index], retriever=retriever, size=top_k))
            except ApiError as exc:
                if isinstance(exc, (AuthenticationException, UnsupportedProductError)):
                    raise  # not a hybrid problem: reported as any other store failure
                self.hybrid_disabled = f"{exc.meta.status} {self._error_type(exc)}: {_short(self._reason(exc), 200)}"
                warnings.warn(
                    f"hybrid retrieval on {self.semantic_field!r} refused ({self.hybrid_disabled}); using BM25 only",
                    RuntimeWarning, stacklevel=3,
                )
                return None
        return self._hits(resp)

    @staticmethod
    def _hits(resp: Mapping[str, Any]) -> list[SearchHit]:
        hits = []
        for hit in resp.get("hits", {}).get("hits", []):
            source = dict(hit.get("_source") or {})
            score = hit.get("_score")
            hits.append(SearchHit(id=str(hit["_id"]), score=round(float(score or 0.0), 6), source=source))
        return hits

    def get(self, index: str, doc_id: str) -> dict[str, Any] | None:
        return self.get_many(index, [doc_id]).get(doc_id)

    def get_many(self, index: str, doc_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        self._check_index(index)
        found = self._mget(index, list(dict.fromkeys(str(i) for i in doc_ids)))
        return {k: _without_seq(v) for k, v in found.items()} if index in EVENT_INDICES else found

    def _mget(self, index: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(ids), BULK_CHUNK):
            chunk = list(ids[start : start + BULK_CHUNK])
            with self._errors(f"read {index}"):
                resp = _body(self.client.mget(index=self.indices[index], ids=chunk))
            for doc in resp.get("docs", []):
                if doc.get("found"):
                    found[str(doc["_id"])] = dict(doc.get("_source") or {})
        return found

    def find(
        self, index: str, filters: Mapping[str, FilterValue], *, limit: int = 100
    ) -> list[dict[str, Any]]:
        self._check_index(index, SEARCH_INDICES)
        clauses = self._filter_clauses(index, filters)
        if limit < 1:
            return []
        return self._scan(index, {"bool": {"filter": clauses}}, [{"id": {"order": "asc", "unmapped_type": "keyword"}}],
                          int(limit), f"find in {index}")

    def events(
        self,
        index: str,
        incident_id: str | None = None,
        limit: int = 1000,
        *,
        kind: FilterValue | None = None,
    ) -> list[dict[str, Any]]:
        """Events in insertion order (``sg_seq``, a nanosecond clock made monotonic per process),
        optionally for one incident and of some kinds (exact match)."""
        self._check_index(index, EVENT_INDICES)
        clauses: list[dict[str, Any]] = []
        if incident_id is not None:
            clauses.append({"term": {"incident_id": incident_id}})
        if kind is not None:
            kinds = [kind] if isinstance(kind, str) else list(kind)
            clauses.append({"terms": {"kind": kinds}} if kinds else {"match_none": {}})
        sort = [{SEQ_FIELD: {"order": "asc", "unmapped_type": "long"}},
                {"id": {"order": "asc", "unmapped_type": "keyword"}}]
        found = self._scan(index, {"bool": {"filter": clauses}}, sort, int(limit), f"read {index}")
        return [_without_seq(source) for source in found]

    def _scan(
        self, logical: str, query: dict[str, Any], sort: list[dict[str, Any]], limit: int, what: str
    ) -> list[dict[str, Any]]:
        """Up to ``limit`` sources in ``sort`` order, however many that is.

        One request answers most reads. ``from + size`` may not pass ``index.max_result_window``
        (10,000), so when the first page comes back full the rest is read through a point in
        time with ``search_after`` (the sort ends with a unique field, so pages neither skip nor
        repeat), the way Elasticsearch's "Paginate search results" recommends; the point in time
        is closed at the end."""
        if limit < 1:
            return []
        page = min(limit, SCAN_PAGE)
        with self._errors(what):
            resp = _body(self.client.search(index=self.indices[logical], query=query, size=page, sort=sort,
                                            track_total_hits=False))
        hits = resp.get("hits", {}).get("hits", [])
        out = [dict(h.get("_source") or {}) for h in hits]
        if len(hits) < page or len(out) >= limit:
            return out[:limit]
        with self._errors(what):
            pit = str(_body(self.client.open_point_in_time(index=self.indices[logical],
                                                           keep_alive=PIT_KEEP_ALIVE))["id"])
        try:
            while len(out) < limit and hits:
                size = min(SCAN_PAGE, limit - len(out))
                with self._errors(what):
                    resp = _body(self.client.search(
                        pit={"id": pit, "keep_alive": PIT_KEEP_ALIVE}, query=query, size=size, sort=sort,
                        search_after=hits[-1]["sort"], track_total_hits=False))
                pit = str(resp.get("pit_id") or pit)
                hits = resp.get("hits", {}).get("hits", [])
                out.extend(dict(h.get("_source") or {}) for h in hits)
                if len(hits) < size:
                    break
        finally:
            try:
                self.client.close_point_in_time(id=pit)
            except (ApiError, TransportError):
                pass  # it expires by itself after PIT_KEEP_ALIVE
        return out[:limit]

    def count(self, index: str, filters: Mapping[str, FilterValue] | None = None) -> int:
        self._check_index(index)
        if index in SEARCH_INDICES:
            clauses = self._filter_clauses(index, filters)
        elif filters:
            raise InputError(f"index '{index}' cannot be filtered")
        else:
            clauses = []
        with self._errors(f"count {index}"):
            resp = _body(self.client.count(index=self.indices[index], query={"bool": {"filter": clauses}}))
        return int(resp.get("count", 0))

    def policy_conflicts(self, service: str, action: str, severity: str) -> list[dict[str, Any]]:
        svc, act, sev = service.strip().lower(), action.strip().lower(), severity.strip().lower()
        clauses = self._filter_clauses("policies", {"service": [svc, "*"]})
        clauses += [
            {"term": {"blocked_actions": {"value": act, "case_insensitive": True}}},
            {"term": {"severities": {"value": sev, "case_insensitive": True}}},
        ]
        found = self._scan("policies", {"bool": {"filter": clauses}}, [{"id": {"order": "asc", "unmapped_type": "keyword"}}],
                           POLICY_SCAN_LIMIT, "check policy conflicts")
        conflicts = []
        # The query narrows; Python decides, with exactly the embedded store's rule.
        for policy in found:
            if str(policy.get("service", "")).strip().lower() not in (svc, "*"):
                continue
            severities = {str(s).strip().lower() for s in policy.get("severities", [])}
            blocked = {str(a).strip().lower() for a in policy.get("blocked_actions", [])}
            if sev in severities and act in blocked:
                conflicts.append(policy)
        return conflicts

    def known_actions(self) -> set[str]:
        clauses = self._filter_clauses("runbooks", {"status": "approved"})
        with self._errors("list known actions"):
            resp = _body(self.client.search(
                index=self.indices["runbooks"], query={"bool": {"filter": clauses}}, size=0,
                aggregations={"actions": {"terms": {"field": "recommended_action", "size": MAX_RESULT_WINDOW}}},
                track_total_hits=False,
            ))
        buckets = resp.get("aggregations", {}).get("actions", {}).get("buckets", [])
        return {str(b["key"]).strip().lower() for b in buckets if str(b.get("key", "")).strip()}

    def log_stats_request(
        self, *, service: str | None, start: datetime, end: datetime, top_n: int
    ) -> dict[str, Any]:
        """The search body of ``log_stats`` (kept apart so it can be inspected)."""
        filters: list[dict[str, Any]] = [
            {"range": {"timestamp": {"gt": _epoch_ms(start), "lte": _epoch_ms(end), "format": "epoch_millis"}}}
        ]
        if service:
            filters.append({"term": {"service": {"value": service.strip().lower(), "case_insensitive": True}}})
        errors = {"range": {RESPONSE_CODE_FIELD: {"gte": 400}}}
        errors_4xx = {"range": {RESPONSE_CODE_FIELD: {"gte": 400, "lt": 500}}}
        errors_5xx = {"range": {RESPONSE_CODE_FIELD: {"gte": 500, "lt": 600}}}
        return {
            "size": 0,
            "track_total_hits": True,
            "runtime_mappings": {
                RESPONSE_CODE_FIELD: {
                    "type": "long",
                    "script": {"source": RESPONSE_CODE_SCRIPT, "params": {"field": "response.keyword"}},
                }
            },
            "query": {"bool": {"filter": filters}},
            "aggregations": {
                "errors_4xx": {"filter": errors_4xx},
                "errors_5xx": {"filter": errors_5xx},
                "avg_bytes": {"avg": {"field": "bytes", "missing": 0}},
                "failing": {
                    "filter": errors,
                    "aggregations": {
                        "paths": {
                            "terms": {"field": "request.keyword", "size": max(1, int(top_n)),
                                      "order": [{"_count": "desc"}, {"_key": "asc"}]},
                            "aggregations": {"errors_5xx": {"filter": errors_5xx}},
                        }
                    },
                },
            },
        }

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
        body = self.log_stats_request(service=service, start=start, end=end, top_n=top_n)
        with self._errors("aggregate logs"):
            resp = _body(self.client.search(index=self.indices["logs"], **body))
        total_raw = resp.get("hits", {}).get("total", 0)
        total = int(total_raw.get("value", 0) if isinstance(total_raw, Mapping) else total_raw or 0)
        aggs = resp.get("aggregations", {})
        e4 = int(aggs.get("errors_4xx", {}).get("doc_count", 0))
        e5 = int(aggs.get("errors_5xx", {}).get("doc_count", 0))
        avg = aggs.get("avg_bytes", {}).get("value")
        buckets = aggs.get("failing", {}).get("paths", {}).get("buckets", []) if top_n > 0 else []
        return LogSummary(
            service=service,
            window_minutes=window_minutes,
            total=total,
            errors_4xx=e4,
            errors_5xx=e5,
            error_rate=round((e4 + e5) / total, 4) if total else 0.0,
            avg_bytes=round(float(avg or 0.0), 1) if total else 0.0,
            top_failing_paths=[
                {"request": str(b["key"]), "errors": int(b["doc_count"]),
                 "errors_5xx": int(b.get("errors_5xx", {}).get("doc_count", 0))}
                for b in buckets
            ],
        )

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
        body.setdefault("at", _utcnow().isoformat())
        stored = {**json.loads(json.dumps(body, default=str)), SEQ_FIELD: _next_seq()}
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
                        "reason": _short(error.get("reason", error) if isinstance(error, Mapping) else error, 200),
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
                resp = _body(self.client.bulk(operations=operations, refresh=refresh))
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
            resp = _body(self.client.bulk(operations=operations, refresh=self._refresh()))
        except (ApiError, TransportError):
            return False
        return not resp.get("errors", False) or all(
            next(iter(i.values()), {}).get("status") in (200, 201, 404) for i in resp.get("items", [])
        )

    def claim_incident(self, incident: Incident, owner: str) -> bool:
        token = uuid.uuid4().hex
        claim = {"incident_id": incident.id, "owner": owner, "claimed_at": _utcnow().isoformat(), "token": token}
        index = self.indices["incident_claims"]
        with self._errors(f"claim incident {incident.id}"):
            try:
                resp = _body(self.client.create(index=index, id=incident.id, document=claim,
                                                   refresh=self._refresh(searched_next=False)))
            except ConflictError:
                # Someone holds it, unless the holder is this very call (a retried request).
                held = _body(self.client.options(ignore_status=404).get(index=index, id=incident.id))
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

    # --- lifecycle and setup ---------------------------------------------------------------

    def check(self) -> Readiness:
        """Whether the cluster answers and speaks a compatible major version."""
        try:
            with self._errors("connect"):
                info = _body(self.client.info())
        except StoreError as exc:
            return Readiness(ok=False, reason=str(exc))
        version_info = info.get("version") if isinstance(info.get("version"), Mapping) else {}
        if version_info.get("build_flavor") == "serverless":
            # Serverless projects report a version number that Elastic says to ignore.
            return Readiness(ok=True, reason=f"Elasticsearch Serverless at {self.location}")
        version = str(version_info.get("number", "?"))
        if not version.startswith("9."):
            return Readiness(ok=False, reason=f"{self.location} runs Elasticsearch {version}; this client needs 9.x")
        return Readiness(ok=True, reason=f"Elasticsearch {version} at {self.location}")

    def mapping_for(self, logical: str) -> dict[str, Any]:
        """The body of ``mappings/<default index name>.json`` for a logical index."""
        path = self.mappings_dir / f"{ELASTIC_INDEXES[logical]}.json"
        try:
            body = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise InputError(f"{path}: mapping file not found") from exc
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from exc
        if not isinstance(body, dict) or not isinstance(body.get("mappings"), dict):
            raise InputError(f"{path}: expected an object with 'mappings' (and optional 'settings')")
        return body

    def is_data_stream(self, logical: str) -> bool:
        with self._errors(f"inspect {self.indices[logical]}"):
            resp = _body(self.client.options(ignore_status=404).indices.get_data_stream(name=self.indices[logical]))
        return bool(resp.get("data_streams"))

    def ensure_indices(self) -> list[tuple[str, str, str]]:
        """Create every missing index with its mapping. Returns ``(logical, index, state)`` with
        state ``created``, ``exists`` or ``data stream``."""
        report = []
        for logical, name in self.indices.items():
            body = self.mapping_for(logical)
            with self._errors(f"create index {name}"):
                if self.client.indices.exists(index=name):
                    state = "data stream" if logical == "logs" and self.is_data_stream(logical) else "exists"
                else:
                    try:
                        self.client.indices.create(
                            index=name, mappings=body["mappings"], settings=body.get("settings") or None
                        )
                        state = "created"
                    except ApiError as exc:
                        if self._error_type(exc) != "resource_already_exists_exception":
                            raise
                        state = "exists"  # another loader created it meanwhile
            report.append((logical, name, state))
        return report

    def close(self) -> None:
        try:
            self.client.close()
        except (ApiError, TransportError):  # pragma: no cover - closing never matters
            pass

"""The Elasticsearch store: the ``Store`` port over the official ``elasticsearch`` client (9.x).

It mirrors the embedded store (``store_sqlite``) and is held to the same contract suite. This
module is the public face and the reads; ``elastic_writes`` holds the writes (compensation, undo
log, claims, bulk retries, refresh policy), ``elastic_logs`` the log statistics and the service
mapping, ``elastic_setup`` index creation, ``elastic_wire`` the error translation. How the
port's promises are kept on a search engine:

* **Untrusted text is a value, never syntax.** A query is reduced to word tokens exactly as the
  embedded store does (``query_tokens``) and sent as the value of a ``multi_match``; nothing is
  ever pasted into ``query_string`` or ES|QL text.
* **Filters** are ``term`` queries with ``case_insensitive: true`` on keyword fields (our mappings
  also lower-case them with a normaliser), "any of" as a ``bool.should``. A runbook without a
  ``status`` counts as approved, as in the embedded store.
* **Reads past the result window.** One search cannot reach past ``index.max_result_window``
  (10,000 hits, ``from + size``); ``_scan`` answers a short read in one request and pages a long
  one with ``search_after`` through a point in time (events, ``find``, policy conflicts).
* **Log lines of a service** come from a configured mapping (``LogService``): our ``service``
  field, else the host mapped to a service, which works on Kibana's sample logs as shipped.
* **Writes are all or nothing, by compensation; ``atomic()`` is an undo log; claims are
  create-only** (see ``elastic_writes``).
* **Serverless** projects are recognised by ``build_flavor: serverless`` (their version number
  is to be ignored, says Elastic's API reference).

Vendor exceptions stop here: callers see ``StoreError`` / ``StoreUnavailable`` / ``InputError``.
The 9.x client speaks only to Elasticsearch 9.x (it sends ``compatible-with=9``); an 8.x cluster
answers with a media-type error, reported as such.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from elasticsearch import (
    ApiError,
    AuthenticationException,
    Elasticsearch,
    TransportError,
    UnsupportedProductError,
)

from ..config import ELASTIC_INDEXES, PROJECT_ROOT
from ..errors import InputError, StoreError, StoreUnavailable
from ..models import LogSummary
from ..ports import FilterValue, Readiness, SearchHit, event_time
from ..redaction import redact_url
from .elastic_setup import ElasticSetup
from .elastic_logs import RESPONSE_CODE_FIELD, RESPONSE_CODE_SCRIPT, LogService, log_stats_request, log_summary
from .elastic_wire import BulkWriteError, error_reason, error_type, response_body, short, translate_errors
from .elastic_writes import BULK_CHUNK, SEQ_FIELD, ElasticWrites, utcnow, without_seq
from .store_sqlite import (
    EVENT_INDICES,
    INDICES,
    KEYWORD_FIELDS,
    SEARCH_INDICES,
    query_tokens,
)

if TYPE_CHECKING:
    from ..config import Settings

__all__ = ["RESPONSE_CODE_FIELD", "RESPONSE_CODE_SCRIPT", "SEQ_FIELD", "BulkWriteError", "ElasticStore",
           "LogService"]

MAPPINGS_DIR = PROJECT_ROOT / "mappings"
MAX_RESULT_WINDOW = 10_000  # index.max_result_window's default: from + size may not pass it
SCAN_PAGE = 5_000  # hits per request when a read pages
POLICY_SCAN_LIMIT = 100_000
PIT_KEEP_ALIVE = "1m"  # how long a point in time lives between two pages

# Fields searched per logical index: the same text the embedded store puts in its FTS column.
TEXT_FIELDS: dict[str, list[str]] = {
    "runbooks": ["title", "body", "symptoms", "steps", "recommended_action.text"],
    "evidence": ["text", "action.text"],
    "policies": ["rule", "blocked_actions.text"],
    "incidents": ["summary", "symptoms", "pattern.text"],
}


class ElasticStore(ElasticWrites, ElasticSetup):
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
        log_service: where the service of a log line comes from (default: our ``service`` field,
            else the host, mapped for Kibana's sample data; ``ELASTIC_LOG_SERVICE``).
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
        log_service: LogService | None = None,
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
        self.log_service = log_service or LogService.parse()
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
            log_service=LogService.parse(settings.elastic_log_service, settings.elastic_log_service_hosts),
        )

    # --- plumbing --------------------------------------------------------------------------

    def index_name(self, logical: str) -> str:
        return self.indices[logical]

    def _errors(self, what: str) -> Any:
        """A context manager translating the client's exceptions into ours (``elastic_wire``)."""
        return translate_errors(what, self.location)

    @staticmethod
    def _check_index(index: str, allowed: tuple[str, ...] = INDICES) -> None:
        if index not in allowed:
            raise InputError(f"unknown index '{index}' (expected one of: {', '.join(allowed)})")

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
            resp = response_body(self.client.search(
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
                resp = response_body(self.client.search(index=self.indices[index], retriever=retriever, size=top_k))
            except ApiError as exc:
                if isinstance(exc, (AuthenticationException, UnsupportedProductError)):
                    raise  # not a hybrid problem: reported as any other store failure
                self.hybrid_disabled = f"{exc.meta.status} {error_type(exc)}: {short(error_reason(exc), 200)}"
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
        return {k: without_seq(v) for k, v in found.items()} if index in EVENT_INDICES else found

    def _mget(self, index: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(ids), BULK_CHUNK):
            chunk = list(ids[start : start + BULK_CHUNK])
            with self._errors(f"read {index}"):
                resp = response_body(self.client.mget(index=self.indices[index], ids=chunk))
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
        return [without_seq(source) for source in found]

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
            resp = response_body(self.client.search(index=self.indices[logical], query=query, size=page, sort=sort,
                                            track_total_hits=False))
        hits = resp.get("hits", {}).get("hits", [])
        out = [dict(h.get("_source") or {}) for h in hits]
        if len(hits) < page or len(out) >= limit:
            return out[:limit]
        with self._errors(what):
            pit = str(response_body(self.client.open_point_in_time(index=self.indices[logical],
                                                           keep_alive=PIT_KEEP_ALIVE))["id"])
        try:
            while len(out) < limit and hits:
                size = min(SCAN_PAGE, limit - len(out))
                with self._errors(what):
                    resp = response_body(self.client.search(
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

    def recent_events(
        self,
        index: str,
        *,
        kind: FilterValue | None = None,
        since: datetime | None = None,
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        """Events newest first (``sg_seq`` descending), optionally of some kinds and with ``at``
        at or after ``since`` (a ``range`` on the mapped ``at`` date)."""
        self._check_index(index, EVENT_INDICES)
        clauses: list[dict[str, Any]] = []
        if kind is not None:
            kinds = [kind] if isinstance(kind, str) else list(kind)
            clauses.append({"terms": {"kind": kinds}} if kinds else {"match_none": {}})
        if since is not None:
            clauses.append({"range": {"at": {"gte": since.astimezone(UTC).isoformat()}}})
        sort = [{SEQ_FIELD: {"order": "desc", "unmapped_type": "long"}},
                {"id": {"order": "desc", "unmapped_type": "keyword"}}]
        found = self._scan(index, {"bool": {"filter": clauses}}, sort, int(limit), f"read {index}")
        docs = [without_seq(source) for source in found]
        return docs if since is None else [d for d in docs if event_time(d) >= since]

    def count(self, index: str, filters: Mapping[str, FilterValue] | None = None) -> int:
        self._check_index(index)
        if index in SEARCH_INDICES:
            clauses = self._filter_clauses(index, filters)
        elif filters:
            raise InputError(f"index '{index}' cannot be filtered")
        else:
            clauses = []
        with self._errors(f"count {index}"):
            resp = response_body(self.client.count(index=self.indices[index], query={"bool": {"filter": clauses}}))
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
            resp = response_body(self.client.search(
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
        return log_stats_request(self.log_service, service=service, start=start, end=end, top_n=top_n)

    def log_stats(
        self,
        *,
        service: str | None = None,
        window_minutes: int = 15,
        now: datetime | None = None,
        top_n: int = 5,
    ) -> LogSummary:
        end = now or utcnow()
        start = end - timedelta(minutes=window_minutes)
        body = self.log_stats_request(service=service, start=start, end=end, top_n=top_n)
        with self._errors("aggregate logs"):
            resp = response_body(self.client.search(index=self.indices["logs"], **body))
        return log_summary(resp, service=service, window_minutes=window_minutes, top_n=top_n)

    # --- lifecycle and setup ---------------------------------------------------------------

    def check(self) -> Readiness:
        """Whether the cluster answers and speaks a compatible major version."""
        try:
            with self._errors("connect"):
                info = response_body(self.client.info())
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

    def close(self) -> None:
        try:
            self.client.close()
        except (ApiError, TransportError):  # pragma: no cover - closing never matters
            pass

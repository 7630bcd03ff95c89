"""Real HTTP servers on 127.0.0.1 that speak a vendor's wire format, for tests.

``RecordingServer`` answers every request with a handler ``(Recorded) -> Reply`` and records what
it received. ``FakeElasticsearch`` is a small real implementation of the parts of the
Elasticsearch REST API the store uses, built from the Elasticsearch reference and its
``elasticsearch-specification`` (request and response shapes, error envelopes): documents are kept
in memory (index, create, delete, get, mget, bulk, count, index creation, point in time), searches
are evaluated over them (``es_fake_query``: the Query DSL subset, ``search_after``, and
``index.max_result_window``) unless a test scripts the answer, and every reply carries
``X-Elastic-Product: Elasticsearch`` and the ``vnd.elasticsearch+json`` media type, as the
official client requires. A data stream takes only ``create`` writes, as the data stream docs say.
Search is near real-time, as in Elasticsearch ("Near real-time search", the ``refresh`` parameter
of the document APIs): a write becomes searchable at the next refresh, which comes every
``refresh_interval`` seconds, at once with ``refresh=true`` (counted in ``forced_refreshes``: on a
cluster each is a new small segment), or before the reply with ``refresh=wait_for`` (the request
waits for the next periodic refresh). GET and mget are real-time and see every write.
``kibana_wire.FakeKibana`` speaks Agent Builder's converse and conversation routes.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from es_fake_query import QueryError, RuntimeScript
from es_fake_query import search as evaluate_search

ES_HEADERS = {
    "X-Elastic-Product": "Elasticsearch",
    "Content-Type": "application/vnd.elasticsearch+json;compatible-with=9",
}


@dataclass
class Recorded:
    """One request as the server received it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    def ndjson(self) -> list[Any]:
        return [json.loads(line) for line in self.body.decode().splitlines() if line.strip()]

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Recorded], Reply]


class RecordingServer:
    """A threaded HTTP server on 127.0.0.1 (a free port); use as a context manager."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        outer = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out as small writes

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
                rec = Recorded(self.command, unquote(parts.path), query,
                               {k.lower(): v for k, v in self.headers.items()}, body)
                with outer._lock:
                    outer.requests.append(rec)
                try:
                    reply = outer.handler(rec)
                except Exception as exc:  # a bug in a test handler: answer 500, keep serving
                    reply = Reply(500, {"error": f"fake server handler failed: {exc!r}"})
                payload = reply.body
                if isinstance(payload, (dict, list)):
                    payload = json.dumps(payload).encode()
                elif isinstance(payload, str):
                    payload = payload.encode()
                elif payload is None:
                    payload = b""
                self.send_response(reply.status)
                headers = {"Content-Type": "application/json", **reply.headers}
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload) if self.command != "HEAD" else 0))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _serve

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> RecordingServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()

    def matching(self, method: str, pattern: str) -> list[Recorded]:
        rx = re.compile(pattern)
        return [r for r in self.requests if r.method == method and rx.search(r.path)]


def es_error(status: int, kind: str, reason: str, **extra: Any) -> Reply:
    """An error in Elasticsearch's envelope."""
    cause = {"type": kind, "reason": reason, **extra}
    return Reply(status, {"error": {"root_cause": [cause], **cause}, "status": status}, dict(ES_HEADERS))


class FakeElasticsearch(RecordingServer):
    """A small in-memory Elasticsearch (9.x wire format) for the store's requests.

    Args:
        search: answers ``_search`` as ``(index, body) -> response dict`` (default: evaluated over
            the stored documents; ``from + size`` past 10,000 is refused either way).
        reject: ``(index, id, source) -> (type, reason) | (type, reason, status) | None`` fails single
            bulk items (status 400 unless given; a ``429`` with ``es_rejected_execution_exception`` is
            how Elasticsearch reports a full write queue for one item of a 200 bulk reply).
        version: the ``version`` object of ``GET /`` (Serverless sends ``build_flavor: serverless``).
        product_header: send ``X-Elastic-Product`` (the client refuses servers without it).
        data_streams: names that are data streams (``GET /_data_stream/<name>``; bulk ``index``
            into them is refused, only ``create`` is allowed).
        mappings: index name -> mapping body, for indices the fake serves without a create
            (e.g. Kibana's sample logs); field aliases in it are resolved in queries.
        runtime_scripts: Painless source -> a Python stand-in ``(source, params) -> values``.
        refresh_interval: seconds between periodic refreshes (Elasticsearch's default is 1s; tests
            use a short one).
    """

    def __init__(
        self,
        *,
        search: Callable[[str, dict[str, Any]], dict[str, Any]] | None = None,
        reject: Callable[[str, str, dict[str, Any]], tuple[Any, ...] | None] | None = None,
        product_header: bool = True,
        version: dict[str, Any] | None = None,
        data_streams: tuple[str, ...] = (),
        mappings: dict[str, dict[str, Any]] | None = None,
        runtime_scripts: dict[str, RuntimeScript] | None = None,
        refresh_interval: float = 0.01,
    ) -> None:
        super().__init__(self._route)
        self.refresh_interval = refresh_interval
        self.forced_refreshes = 0
        self.waited_refreshes = 0
        self._clock_zero = self._last_refresh = time.monotonic()  # periodic refreshes fall on a fixed grid
        self._unrefreshed: dict[str, dict[str, Any]] = {}  # index -> id -> searchable version (None: absent)
        self.docs: dict[str, dict[str, dict[str, Any]]] = {}
        self.seq: dict[tuple[str, str], int] = {}
        self.created_indices: dict[str, dict[str, Any]] = {}
        self.search_handler = search or self._evaluate
        self.mappings = dict(mappings or {})
        self.runtime_scripts = dict(runtime_scripts or {})
        self.pits: dict[str, tuple[str, dict[str, dict[str, Any]]]] = {}  # id -> (index, frozen docs)
        self.reject = reject
        self.product_header = product_header
        self.version = version or {"number": "9.2.0", "build_flavor": "default"}
        self.data_streams = set(data_streams)
        self._next_seq = 0
        self._store_lock = threading.Lock()
        self.override: Handler | None = None  # answers instead of the fake when it returns a Reply

    def _ok(self, body: Any, status: int = 200) -> Reply:
        headers = dict(ES_HEADERS)
        if not self.product_header:
            headers.pop("X-Elastic-Product")
        return Reply(status, body, headers)

    def _changing(self, index: str, doc_id: str) -> None:
        """Keep the searchable version of a document until the next refresh."""
        pending = self._unrefreshed.setdefault(index, {})
        if doc_id not in pending:
            pending[doc_id] = self.docs.get(index, {}).get(doc_id)

    def _tick(self, at: float) -> int:
        return int((at - self._clock_zero) // self.refresh_interval)

    def _periodic_refresh(self) -> None:
        if self._tick(time.monotonic()) > self._tick(self._last_refresh):
            self._refresh_all()

    def _searchable(self, index: str) -> dict[str, dict[str, Any]]:
        self._periodic_refresh()
        docs = dict(self.docs.get(index, {}))
        for doc_id, before in self._unrefreshed.get(index, {}).items():
            if before is None:
                docs.pop(doc_id, None)
            else:
                docs[doc_id] = before
        return docs

    def _refresh_all(self) -> None:
        self._unrefreshed.clear()
        self._last_refresh = time.monotonic()

    def _after_write(self, refresh: str | None, indices: set[str]) -> float:
        """Apply a write's ``refresh`` parameter; returns how long a ``wait_for`` must wait."""
        if refresh in ("", "true"):
            self.forced_refreshes += 1
            for index in indices:
                self._unrefreshed.pop(index, None)
        elif refresh == "wait_for":
            self.waited_refreshes += 1
            now = time.monotonic()
            return max(0.0, self._clock_zero + (self._tick(now) + 1) * self.refresh_interval - now)
        return 0.0

    def _put(self, index: str, doc_id: str, source: dict[str, Any]) -> int:
        self._changing(index, doc_id)
        self._next_seq += 1
        self.docs.setdefault(index, {})[doc_id] = source
        self.seq[(index, doc_id)] = self._next_seq
        return self._next_seq

    def _route(self, req: Recorded) -> Reply:
        if self.override is not None:
            reply = self.override(req)
            if reply is not None:
                return reply
        with self._store_lock:
            reply = self._route_locked(req)
            wait = 0.0
            if req.method in ("POST", "PUT", "DELETE") and 200 <= reply.status < 300 and not req.path.endswith(
                    ("/_search", "/_count", "/_mget", "/_pit")):
                wait = self._after_write(req.query.get("refresh"), self._written_indices(req))
        if wait or req.query.get("refresh") == "wait_for":
            time.sleep(wait)  # outside the lock: other requests go on meanwhile
            with self._store_lock:
                self._periodic_refresh()
        return reply

    @staticmethod
    def _written_indices(req: Recorded) -> set[str]:
        if req.path.rstrip("/") == "/_bulk":
            return {next(iter(line.values()))["_index"] for line in req.ndjson()
                    if isinstance(line, dict) and len(line) == 1 and isinstance(next(iter(line.values())), dict)
                    and "_index" in next(iter(line.values()))}
        return {req.path.strip("/").split("/")[0]}

    def _route_locked(self, req: Recorded) -> Reply:
        parts = [p for p in req.path.split("/") if p]
        m = req.method
        if not parts:
            return self._ok({"name": "fake", "cluster_name": "fake", "version": self.version,
                             "tagline": "You Know, for Search"})
        if parts == ["_bulk"]:
            return self._bulk(req)
        if parts == ["_pit"] and m == "DELETE":
            freed = self.pits.pop(str((req.json() or {}).get("id")), None) is not None
            return self._ok({"succeeded": True, "num_freed": int(freed)})
        if parts == ["_search"]:
            return self._search(None, req.json() or {})
        if parts[0] == "_data_stream" and len(parts) == 2:
            if parts[1] in self.data_streams:
                return self._ok({"data_streams": [{"name": parts[1]}]})
            return es_error(404, "index_not_found_exception", f"no such index [{parts[1]}]", index=parts[1])
        index = parts[0]
        if len(parts) == 1:
            if m == "HEAD":
                exists = index in self.created_indices or index in self.docs or index in self.data_streams
                return self._ok(None, 200 if exists else 404)
            if m == "PUT":
                if index in self.created_indices:
                    return es_error(400, "resource_already_exists_exception", f"index [{index}] already exists",
                                    index=index)
                self.created_indices[index] = req.json() or {}
                return self._ok({"acknowledged": True, "shards_acknowledged": True, "index": index})
        op = parts[1]
        if op == "_search":
            return self._search(index, req.json() or {})
        if op == "_pit" and m == "POST":
            if "keep_alive" not in req.query:
                return es_error(400, "action_request_validation_exception", "Validation Failed: 1: [keep_alive] is not specified;")
            pit_id = f"pit-{len(self.pits) + 1}-{index}"
            self.pits[pit_id] = (index, {k: dict(v) for k, v in self._searchable(index).items()})
            return self._ok({"id": pit_id, "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0}})
        if op == "_count":
            query = (req.json() or {}).get("query")
            try:
                found = evaluate_search(self._searchable(index), {"query": query, "size": 0}, index=index,
                                        mapping=self._mapping(index))
            except QueryError as exc:
                return es_error(400, exc.kind, exc.reason)
            return self._ok({"count": found["hits"]["total"]["value"], "_shards": {"total": 1}})
        if op == "_mget":
            ids = (req.json() or {}).get("ids", [])
            docs = []
            for doc_id in ids:
                src = self.docs.get(index, {}).get(doc_id)
                docs.append({"_index": index, "_id": doc_id, "found": src is not None,
                             **({"_source": src, "_seq_no": self.seq[(index, doc_id)], "_primary_term": 1}
                                if src is not None else {})})
            return self._ok({"docs": docs})
        if op == "_create" and len(parts) == 3:
            doc_id = parts[2]
            if doc_id in self.docs.get(index, {}):
                return es_error(409, "version_conflict_engine_exception",
                                f"[{doc_id}]: version conflict, document already exists (current version [1])",
                                index=index)
            seq = self._put(index, doc_id, req.json())
            return self._ok({"_index": index, "_id": doc_id, "_version": 1, "result": "created",
                             "_seq_no": seq, "_primary_term": 1}, 201)
        if op == "_doc" and len(parts) == 3:
            doc_id = parts[2]
            src = self.docs.get(index, {}).get(doc_id)
            if m == "GET":
                if src is None:
                    return self._ok({"_index": index, "_id": doc_id, "found": False}, 404)
                return self._ok({"_index": index, "_id": doc_id, "found": True, "_source": src,
                                 "_seq_no": self.seq[(index, doc_id)], "_primary_term": 1})
            if m == "DELETE":
                if src is None:
                    return self._ok({"_index": index, "_id": doc_id, "result": "not_found"}, 404)
                wanted = req.query.get("if_seq_no")
                if wanted is not None and int(wanted) != self.seq[(index, doc_id)]:
                    return es_error(409, "version_conflict_engine_exception", "seq_no mismatch", index=index)
                self._changing(index, doc_id)
                del self.docs[index][doc_id]
                return self._ok({"_index": index, "_id": doc_id, "result": "deleted"})
            if m in ("PUT", "POST"):
                seq = self._put(index, doc_id, req.json())
                return self._ok({"_index": index, "_id": doc_id, "result": "updated", "_seq_no": seq,
                                 "_primary_term": 1})
        return es_error(400, "illegal_argument_exception", f"fake: unsupported {m} {req.path}")

    def _mapping(self, index: str) -> dict[str, Any] | None:
        return self.mappings.get(index) or self.created_indices.get(index)

    def _evaluate(self, index: str, body: dict[str, Any]) -> dict[str, Any]:
        return evaluate_search(self._searchable(index), body, index=index, mapping=self._mapping(index),
                               runtime_scripts=self.runtime_scripts)

    def _search(self, index: str | None, body: dict[str, Any]) -> Reply:
        pit = body.get("pit")
        if pit is not None and index is not None:
            return es_error(400, "action_request_validation_exception",
                            "Validation Failed: 1: [indices] cannot be used with point in time. Do not specify any "
                            "index with point in time.;")
        size, start = int(body.get("size", 10)), int(body.get("from", 0))
        if start + size > 10_000:
            return es_error(400, "illegal_argument_exception",
                            f"Result window is too large, from + size must be less than or equal to: [10000] but was "
                            f"[{start + size}]. See the scroll api for a more efficient way to request large data "
                            "sets. This limit can be set by changing the [index.max_result_window] index level "
                            "setting.")
        try:
            if pit is not None:
                if pit.get("id") not in self.pits:
                    return es_error(404, "search_context_missing_exception", "No search context found for id")
                pit_index, frozen = self.pits[pit["id"]]
                result = evaluate_search(frozen, body, index=pit_index, mapping=self._mapping(pit_index),
                                         runtime_scripts=self.runtime_scripts)
                return self._ok({**result, "pit_id": pit["id"]})
            if index is None:
                return es_error(400, "illegal_argument_exception", "fake: a search needs an index or a pit")
            return self._ok(self.search_handler(index, body))
        except QueryError as exc:
            return es_error(400, exc.kind, exc.reason)

    def _bulk(self, req: Recorded) -> Reply:
        lines = req.ndjson()
        items = []
        errors = False
        i = 0
        while i < len(lines):
            action, meta = next(iter(lines[i].items()))
            index, doc_id = meta["_index"], meta["_id"]
            source = lines[i + 1] if action in ("index", "create") else None
            i += 2 if source is not None else 1
            exists = doc_id in self.docs.get(index, {})
            rejected = self.reject(index, doc_id, source or {}) if (self.reject and source is not None) else None
            if action == "index" and index in self.data_streams:
                errors = True
                items.append({action: {"_index": index, "_id": doc_id, "status": 400, "error": {
                    "type": "illegal_argument_exception",
                    "reason": "only write ops with an op_type of create are allowed in data streams"}}})
            elif rejected:
                errors = True
                status = int(rejected[2]) if len(rejected) > 2 else 400
                items.append({action: {"_index": index, "_id": doc_id, "status": status,
                                       "error": {"type": rejected[0], "reason": rejected[1]}}})
            elif action == "create" and exists:
                errors = True
                items.append({action: {"_index": index, "_id": doc_id, "status": 409,
                                       "error": {"type": "version_conflict_engine_exception",
                                                 "reason": f"[{doc_id}]: version conflict, document already exists"}}})
            elif action == "delete":
                if exists:
                    self._changing(index, doc_id)
                    del self.docs[index][doc_id]
                items.append({action: {"_index": index, "_id": doc_id, "status": 200 if exists else 404,
                                       "result": "deleted" if exists else "not_found"}})
            else:
                self._put(index, doc_id, source or {})
                items.append({action: {"_index": index, "_id": doc_id, "status": 200 if exists else 201,
                                       "result": "updated" if exists else "created"}})
        return self._ok({"took": 3, "errors": errors, "items": items})


def empty_search() -> dict[str, Any]:
    return search_response([])


def search_response(
    hits: list[tuple[str, float | None, dict[str, Any]]],
    *,
    total: int | None = None,
    aggregations: dict[str, Any] | None = None,
    index: str = "idx",
) -> dict[str, Any]:
    """A realistic ``_search`` response body."""
    body: dict[str, Any] = {
        "took": 4,
        "timed_out": False,
        "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
        "hits": {
            "total": {"value": len(hits) if total is None else total, "relation": "eq"},
            "max_score": max((s for _, s, _ in hits if s is not None), default=None),
            "hits": [
                {"_index": index, "_id": doc_id, "_score": score, "_source": source,
                 **({"sort": [score, source.get("id", doc_id)]} if score is not None else {})}
                for doc_id, score, source in hits
            ],
        },
    }
    if aggregations is not None:
        body["aggregations"] = aggregations
    return body


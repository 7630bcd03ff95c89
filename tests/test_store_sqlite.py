"""The embedded store: FTS5/BM25 search, filters, policies, log aggregations, atomic loads, threads."""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime, timedelta

import pytest

from safety_governor.adapters.store_sqlite import SQLiteStore, fts_match_expression
from safety_governor.errors import InputError
from safety_governor.models import Incident


def test_file_store_runs_in_wal_mode(tmp_path):
    s = SQLiteStore(tmp_path / "g.db")
    mode = sqlite3.connect(tmp_path / "g.db").execute("PRAGMA journal_mode").fetchone()[0]
    s.close()
    assert mode == "wal"


def test_search_ranks_by_bm25_and_filters_by_service_or_wildcard(store):
    hits = store.search("evidence", "restart reconnect storm", filters={"service": ["payments-api", "*"]}, top_k=5)
    assert hits and hits[0].id == "ev-101"
    assert all(h.source["service"] in ("payments-api", "*") for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_search_filters_are_case_insensitive(store):
    upper = store.search("evidence", "restart", filters={"service": "PAYMENTS-API", "stance": "Contradict"}, top_k=10)
    assert upper and all(h.source["stance"] == "contradict" for h in upper)


def test_query_syntax_in_untrusted_text_is_treated_as_words(store):
    # FTS5 operators and quotes in an agent's claim must not raise or change the query.
    for text in ['restart" OR service:*', "NOT restart AND (", "NEAR(restart pods)", "*"]:
        store.search("evidence", text, filters={"service": "payments-api"})
    assert fts_match_expression('restart" OR service:*', []) == 'text : ("restart" OR "service")'
    assert fts_match_expression("Restart!!", ["payments-api"]).endswith('AND text : ("restart")')
    assert fts_match_expression("the of and", []) is None


def test_empty_query_returns_no_hits(store):
    assert store.search("runbooks", "   ", filters={"service": "payments-api"}) == []


def test_unknown_index_and_unknown_filter_field_are_input_errors(store):
    with pytest.raises(InputError):
        store.search("secrets", "x")
    with pytest.raises(InputError):
        store.find("evidence", {"text": "x"})


def test_policy_conflict_matches_service_or_wildcard_severity_and_action_case_insensitively(store):
    ids = {p["id"] for p in store.policy_conflicts("Payments-API", "RESTART_API_PODS", "HIGH")}
    assert "pol-approval-01" in ids
    assert store.policy_conflicts("payments-api", "restart_api_pods", "low") == []
    assert store.policy_conflicts("billing-batch", "restart_api_pods", "high") == []
    wildcard = {p["id"] for p in store.policy_conflicts("search-api", "drop_database_tables", "low")}
    assert wildcard, "a '*' policy must block for every service"


def test_known_actions_are_recommended_actions_of_approved_runbooks(store):
    store.index_documents("runbooks", [{"id": "rbk-pending", "service": "x", "title": "t",
                                        "recommended_action": "pending_only_action", "body": "b",
                                        "status": "pending_review"}])
    known = store.known_actions()
    assert "restart_api_pods" in known
    assert "pending_only_action" not in known


def test_log_stats_counts_errors_in_the_window_per_service():
    s = SQLiteStore(":memory:")
    now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    logs = []
    for i in range(10):
        ts = (now - timedelta(minutes=1, seconds=i)).isoformat()
        logs.append({"timestamp": ts, "service": "svc-a", "request": "/pay", "response": "503" if i < 3 else "200",
                     "bytes": 100})
    logs.append({"timestamp": (now - timedelta(minutes=2)).isoformat(), "service": "svc-a", "request": "/x",
                 "response": "404", "bytes": 300})
    logs.append({"timestamp": (now - timedelta(hours=2)).isoformat(), "service": "svc-a", "request": "/old",
                 "response": "500", "bytes": 1})
    logs.append({"timestamp": (now - timedelta(minutes=1)).isoformat(), "service": "svc-b", "request": "/b",
                 "response": "500", "bytes": 1})
    s.index_documents("logs", logs)
    summary = s.log_stats(service="svc-a", window_minutes=15, now=now)
    # Disjoint classes: the 404 is the one 4xx, the three 503s are 5xx; the rate counts both.
    assert (summary.total, summary.errors_4xx, summary.errors_5xx) == (11, 1, 3)
    assert summary.errors == 4
    assert summary.error_rate == pytest.approx(4 / 11, abs=1e-4)
    assert summary.avg_bytes == pytest.approx((10 * 100 + 300) / 11, abs=0.1)
    assert summary.top_failing_paths[0] == {"request": "/pay", "errors": 3, "errors_5xx": 3}
    everything = s.log_stats(window_minutes=15, now=now)
    assert everything.total == 12


def test_index_documents_upserts_by_id_and_search_sees_the_update(store):
    before = store.count("evidence")
    store.index_documents("evidence", [{"id": "ev-100", "service": "payments-api", "stance": "support",
                                        "action": "restart_api_pods", "text": "zebra unique marker"}])
    assert store.count("evidence") == before
    assert store.search("evidence", "zebra", filters={"service": "payments-api"})[0].id == "ev-100"
    old_words = store.search("evidence", "recovered", filters={"service": "payments-api"}, top_k=50)
    assert all(h.id != "ev-100" for h in old_words)


def test_a_failing_batch_writes_nothing():
    s = SQLiteStore(":memory:")
    docs = [{"id": "ev-1", "service": "a", "stance": "support", "text": "ok"}, {"service": "no id"}]
    with pytest.raises(KeyError):
        s.index_documents("evidence", docs)
    assert s.count("evidence") == 0


def test_nested_atomic_blocks_roll_back_only_the_inner_savepoint(tmp_path):
    s = SQLiteStore(tmp_path / "a.db")
    with s.atomic():
        s.index_documents("evidence", [{"id": "ev-outer", "service": "a", "stance": "support", "text": "x"}])
        with pytest.raises(RuntimeError):
            with s.atomic():
                s.index_documents("evidence", [{"id": "ev-inner", "service": "a", "stance": "support", "text": "y"}])
                raise RuntimeError("boom")
    assert s.get("evidence", "ev-outer") is not None
    assert s.get("evidence", "ev-inner") is None
    s.close()


def test_incident_is_claimed_once_even_across_threads(tmp_path):
    s = SQLiteStore(tmp_path / "claims.db")
    inc = Incident(id="inc-race", service="payments-api", severity="high", summary="s")
    results: list[bool] = []
    lock = threading.Lock()

    def claim(owner: str) -> None:
        ok = s.claim_incident(inc, owner)
        with lock:
            results.append(ok)

    threads = [threading.Thread(target=claim, args=(f"w{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 7 + [True]
    assert s.get("incidents", "inc-race")["service"] == "payments-api"
    s.close()


@pytest.mark.parametrize("kind", ["file", "memory"])
def test_concurrent_writers_and_readers_share_one_store(tmp_path, kind):
    s = SQLiteStore(tmp_path / "threads.db" if kind == "file" else ":memory:")
    errors: list[Exception] = []

    def writer(n: int) -> None:
        try:
            for i in range(50):
                s.append_event("workflow_events", {"kind": "t", "incident_id": f"inc-{n}", "i": i})
        except Exception as exc:  # pragma: no cover - the assertion below reports it
            errors.append(exc)

    def reader() -> None:
        try:
            for _ in range(50):
                s.count("workflow_events")
                s.search("evidence", "restart pods")
                s.log_stats(window_minutes=5)
        except Exception as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)] + [
        threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert s.count("workflow_events") == 200
    assert len(s.events("workflow_events", incident_id="inc-2")) == 50
    s.close()


def test_cached_search_results_are_dropped_when_the_index_is_written(store):
    first = store.search("evidence", "reconnect storm", filters={"service": "payments-api"}, top_k=5)
    assert first[0].id == "ev-101"
    first[0].source["text"] = "mutated by a caller"
    again = store.search("evidence", "reconnect storm", filters={"service": "payments-api"}, top_k=5)
    assert again[0].source["text"] != "mutated by a caller"
    store.index_documents("evidence", [{"id": "ev-101", "service": "payments-api", "stance": "contradict",
                                        "action": "restart_api_pods", "text": "rewritten without the words"}])
    after = store.search("evidence", "reconnect storm", filters={"service": "payments-api"}, top_k=5)
    assert all(h.id != "ev-101" for h in after)


def test_filters_beyond_the_best_ranked_candidates_still_find_every_match():
    s = SQLiteStore(":memory:")
    strong = [{"id": f"ev-s{i}", "service": "svc", "stance": "support", "text": "alpha alpha alpha beta"}
              for i in range(60)]
    weak = [{"id": f"ev-w{i}", "service": "svc", "stance": "contradict",
             "text": "alpha and a great many other words that dilute the score of this document " * 3}
            for i in range(2)]
    s.index_documents("evidence", strong + weak)
    hits = s.search("evidence", "alpha", filters={"service": "svc", "stance": "contradict"}, top_k=5)
    assert sorted(h.id for h in hits) == ["ev-w0", "ev-w1"]
    best = s.search("evidence", "alpha", filters={"service": "svc"}, top_k=3)
    assert all(h.id.startswith("ev-s") for h in best)

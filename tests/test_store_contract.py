"""The store contract: the semantics every ``Store`` adapter must share.

Each test runs against the embedded store always, and against Elasticsearch when ``ELASTIC_URL``
(or ``ELASTIC_CLOUD_ID``) is set, on fresh indices with a unique prefix that are deleted after
the test. Adapter-specific behaviour lives in ``test_store_sqlite.py`` and
``test_elastic_store.py``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from safety_governor.adapters.store_sqlite import SQLiteStore
from safety_governor.config import ELASTIC_INDEXES, Settings
from safety_governor.errors import InputError
from safety_governor.models import Incident
from safety_governor.ports import Store

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)

RUNBOOKS = [
    {"id": "rb-1", "service": "payments-api", "title": "Connection pool saturation",
     "recommended_action": "Throttle_Traffic", "body": "Throttle traffic and tune the database connection pool."},
    {"id": "rb-2", "service": "payments-api", "title": "Latency quick fix", "recommended_action": "restart_api_pods",
     "body": "Restart API pods when latency spikes.", "status": "approved"},
    {"id": "rb-3", "service": "*", "title": "Generic pool advice", "recommended_action": "tune_pool",
     "body": "Pool tuning in general."},
    {"id": "rb-4", "service": "payments-api", "title": "Learned: pool saturation", "recommended_action": "drain_pool",
     "body": "Connection pool saturation was fixed by draining.", "status": "pending_review",
     "source": "agent_learning", "incident_id": "inc-9"},
]
EVIDENCE = [
    {"id": "ev-1", "service": "payments-api", "stance": "contradict", "action": "restart_api_pods",
     "text": "Restarting pods during database connection saturation caused a reconnect storm.", "source": "postmortem"},
    {"id": "ev-2", "service": "payments-api", "stance": "support", "action": "restart_api_pods",
     "text": "A restart cleared stuck worker threads.", "source": "load-test"},
    {"id": "ev-3", "service": "*", "stance": "contradict", "action": "restart_api_pods",
     "text": "Global: restarts under saturation amplify load.", "source": "postmortem"},
    {"id": "ev-4", "service": "billing-batch", "stance": "support", "action": "scale_worker_pool",
     "text": "Scaling the worker pool cleared the queue.", "source": "slo-report"},
    {"id": "ev-5", "service": "payments-apix", "stance": "contradict", "action": "restart_api_pods",
     "text": "A different service with a similar name and a reconnect storm.", "source": "postmortem"},
]
POLICIES = [
    {"id": "pol-1", "service": "payments-api", "blocked_actions": ["Restart_API_Pods"], "severities": ["High"],
     "rule": "High severity restarts need approval."},
    {"id": "pol-2", "service": "*", "blocked_actions": ["drop_database_tables"],
     "severities": ["low", "medium", "high", "critical"], "rule": "Never drop tables."},
    {"id": "pol-3", "service": "billing-batch", "blocked_actions": ["restart_api_pods"], "severities": ["high"],
     "rule": "Another service."},
    {"id": "pol-4", "service": "payments-api", "blocked_actions": [], "severities": ["high"], "rule": "Information."},
]


def log(minutes_ago: float, service: str, request: str, response: str, nbytes: int) -> dict:
    ts = (NOW - timedelta(minutes=minutes_ago)).isoformat().replace("+00:00", "Z")
    return {"timestamp": ts, "service": service, "request": request, "response": response, "bytes": nbytes}


LOGS = [
    log(0, "payments-api", "/checkout", "503", 100),  # exactly at `now`: inside the window
    log(1, "payments-api", "/checkout", "500", 200),
    log(2, "payments-api", "/checkout", "404", 300),
    log(3, "payments-api", "/cart", "404", 400),
    log(4, "payments-api", "/cart", "502", 500),
    log(5, "payments-api", "/health", "200", 600),
    log(6, "payments-api", "/health", "200", 700),
    log(7, "Billing-Batch", "/jobs", "504", 800),
    log(15, "payments-api", "/checkout", "503", 900),  # exactly at the start: outside (start excluded)
    log(30, "payments-api", "/old", "500", 1000),
]


@dataclass
class Backend:
    store: Store
    another: Callable[[], Store]  # a second store on the same backend (another governor)


def _elastic_backend() -> Iterator[Backend]:
    from safety_governor.adapters.store_elastic import ElasticStore

    prefix = f"sg-contract-{uuid.uuid4().hex[:8]}"
    indices = tuple((logical, f"{prefix}-{logical.replace('_', '-')}") for logical in ELASTIC_INDEXES)
    settings = Settings.from_env().model_copy(update={"elastic_indices": indices})
    made: list[ElasticStore] = []

    def open_one() -> ElasticStore:
        store = ElasticStore.from_settings(settings)
        made.append(store)
        return store

    first = open_one()
    first.ensure_indices()
    try:
        yield Backend(first, open_one)
    finally:
        first.client.options(ignore_status=404).indices.delete(index=",".join(name for _, name in indices))
        for store in made:
            store.close()


@pytest.fixture(params=["sqlite", "elastic"])
def backend(request, tmp_path) -> Iterator[Backend]:
    if request.param == "sqlite":
        path = tmp_path / "contract.db"
        made = [SQLiteStore(path)]

        def another() -> Store:
            made.append(SQLiteStore(path))
            return made[-1]

        yield Backend(made[0], another)
        for store in made:
            store.close()
        return
    if not (os.environ.get("ELASTIC_URL") or os.environ.get("ELASTIC_CLOUD_ID")):
        pytest.skip("set ELASTIC_URL (and ELASTIC_API_KEY) to run the store contract against Elasticsearch")
    yield from _elastic_backend()


@pytest.fixture
def store(backend) -> Store:
    s = backend.store
    s.index_documents("runbooks", RUNBOOKS)
    s.index_documents("evidence", EVIDENCE)
    s.index_documents("policies", POLICIES)
    s.index_documents("logs", LOGS)
    return s


def test_search_returns_the_best_match_first_and_at_most_top_k(store):
    hits = store.search("evidence", "reconnect storm during connection saturation", top_k=2)
    assert len(hits) == 2
    assert hits[0].id == "ev-1"
    assert hits[0].score >= hits[1].score > 0
    assert hits[0].source == EVIDENCE[0]


def test_search_treats_query_syntax_in_untrusted_text_as_words(store):
    for text in ['reconnect" OR service:*', "NOT reconnect AND (", "reconnect* ~2 ^3", '{"match_all": {}}',
                 "storm) OR (1=1", "/.*/"]:
        hits = store.search("evidence", text, filters={"service": "payments-api"}, top_k=5)
        assert all(h.source["service"] == "payments-api" for h in hits)
    assert [h.id for h in store.search("evidence", 'reconnect" OR', filters={"service": "payments-api"})] == ["ev-1"]


def test_an_empty_or_stop_word_only_query_returns_no_hits(store):
    assert store.search("runbooks", "   ") == []
    assert store.search("runbooks", "the of and") == []
    assert store.search("runbooks", "pool", top_k=0) == []


def test_filters_are_exact_and_case_insensitive_and_a_sequence_means_any_of(store):
    upper = store.search("evidence", "reconnect storm", filters={"service": "PAYMENTS-API", "stance": "Contradict"},
                         top_k=10)
    assert [h.id for h in upper] == ["ev-1"]  # not ev-5 (payments-apix): exact, not a prefix
    both = store.search("evidence", "saturation", filters={"service": ["payments-api", "*"]}, top_k=10)
    assert {h.id for h in both} == {"ev-1", "ev-3"}
    assert store.search("evidence", "saturation", filters={"service": []}, top_k=10) == []
    assert [d["id"] for d in store.find("evidence", {"service": ["Payments-API", "*"], "action": "RESTART_API_PODS"})] \
        == ["ev-1", "ev-2", "ev-3"]


def test_runbook_filters_read_the_recommended_action_and_treat_a_missing_status_as_approved(store):
    approved = store.find("runbooks", {"status": "approved"})
    assert [d["id"] for d in approved] == ["rb-1", "rb-2", "rb-3"]
    assert [d["id"] for d in store.find("runbooks", {"action": "throttle_traffic"})] == ["rb-1"]
    pending = store.search("runbooks", "pool saturation", filters={"status": "pending_review"})
    assert [h.id for h in pending] == ["rb-4"]
    assert store.count("runbooks", {"source": "AGENT_LEARNING", "incident_id": "INC-9"}) == 1


def test_unknown_indices_and_filter_fields_are_input_errors(store):
    with pytest.raises(InputError):
        store.search("secrets", "x")
    with pytest.raises(InputError):
        store.find("evidence", {"text": "reconnect"})
    with pytest.raises(InputError):
        store.count("logs", {"service": "payments-api"})
    with pytest.raises(InputError):
        store.index_documents("workflow_events", [{"id": "x"}])


def test_get_and_get_many_return_documents_as_stored_and_leave_missing_ids_out(store):
    assert store.get("policies", "pol-1") == POLICIES[0]
    assert store.get("policies", "pol-404") is None
    found = store.get_many("evidence", ["ev-2", "ev-404", "ev-1", "ev-2"])
    assert found == {"ev-1": EVIDENCE[0], "ev-2": EVIDENCE[1]}
    assert store.get_many("evidence", []) == {}


def test_find_is_ordered_by_id_and_limited(store):
    assert [d["id"] for d in store.find("evidence", {"stance": "contradict"})] == ["ev-1", "ev-3", "ev-5"]
    assert [d["id"] for d in store.find("evidence", {"stance": "contradict"}, limit=2)] == ["ev-1", "ev-3"]


def test_count_counts_everything_or_what_the_filters_match(store):
    assert store.count("evidence") == 5
    assert store.count("evidence", {"service": "payments-api"}) == 2
    assert store.count("evidence", {"service": ["payments-api", "*"], "stance": "contradict"}) == 2
    assert store.count("logs") == len(LOGS)
    assert store.count("workflow_events") == 0


def test_policy_conflicts_match_service_or_wildcard_severity_and_action_case_insensitively(store):
    assert [p["id"] for p in store.policy_conflicts("Payments-API", "RESTART_API_PODS", "HIGH")] == ["pol-1"]
    assert store.policy_conflicts("payments-api", "restart_api_pods", "low") == []
    assert [p["id"] for p in store.policy_conflicts("checkout-web", "drop_database_tables", "low")] == ["pol-2"]
    assert store.policy_conflicts("payments-api", "throttle_traffic", "high") == []


def test_known_actions_are_the_lowercased_actions_of_approved_runbooks(store):
    assert store.known_actions() == {"throttle_traffic", "restart_api_pods", "tune_pool"}


def test_log_stats_count_4xx_and_5xx_disjointly_with_the_top_failing_paths(store):
    s = store.log_stats(service="PAYMENTS-API", window_minutes=15, now=NOW, top_n=5)
    # errors_4xx is 400-499 only: a client adding the two fields gets every failed request once.
    assert (s.total, s.errors_4xx, s.errors_5xx) == (7, 2, 3)
    assert s.errors_4xx + s.errors_5xx == 5
    assert s.error_rate == round(5 / 7, 4)
    assert s.avg_bytes == 400.0
    assert s.top_failing_paths == [
        {"request": "/checkout", "errors": 3, "errors_5xx": 2},
        {"request": "/cart", "errors": 2, "errors_5xx": 1},
    ]
    every = store.log_stats(window_minutes=15, now=NOW, top_n=1)
    assert (every.total, every.errors_4xx, every.errors_5xx) == (8, 2, 4)
    assert every.top_failing_paths == [{"request": "/checkout", "errors": 3, "errors_5xx": 2}]
    quiet = store.log_stats(service="search-api", window_minutes=15, now=NOW)
    assert (quiet.total, quiet.error_rate, quiet.avg_bytes, quiet.top_failing_paths) == (0, 0.0, 0.0, [])


def test_index_documents_upserts_by_id_and_search_sees_the_update(store):
    assert store.index_documents("evidence", [{**EVIDENCE[1], "text": "Restarts fixed a memory leak in workers."}]) == 1
    assert store.count("evidence") == 5
    assert store.get("evidence", "ev-2")["text"] == "Restarts fixed a memory leak in workers."
    assert [h.id for h in store.search("evidence", "memory leak")] == ["ev-2"]
    assert store.search("evidence", "stuck threads") == []


def test_logs_reloaded_with_the_same_content_are_not_duplicated(store):
    assert store.index_documents("logs", LOGS[:3]) == 3
    assert store.count("logs") == len(LOGS)


def test_writes_in_a_failing_atomic_block_are_not_kept(store):
    with pytest.raises(RuntimeError):
        with store.atomic():
            store.index_documents("policies", [{"id": "pol-9", "service": "*", "blocked_actions": ["x"],
                                                "severities": ["low"], "rule": "r"}])
            store.append_event("workflow_events", {"kind": "gate_decision", "incident_id": "inc-1"})
            raise RuntimeError("boom")
    assert store.get("policies", "pol-9") is None
    assert store.count("workflow_events") == 0
    with store.atomic():
        store.index_documents("policies", [{"id": "pol-9", "service": "*", "blocked_actions": ["x"],
                                            "severities": ["low"], "rule": "r"}])
    assert store.get("policies", "pol-9")["rule"] == "r"


def test_events_are_appended_with_an_id_and_read_back_in_order(store):
    ids = [store.append_event("workflow_events", {"kind": kind, "incident_id": inc, "n": n})
           for n, (kind, inc) in enumerate([("gate_decision", "inc-1"), ("approval_accepted", "inc-1"),
                                            ("gate_decision", "inc-2"), ("execution", "inc-1")])]
    explicit = store.append_event("action_executions",
                                  {"id": "exe-1", "incident_id": "inc-1", "at": "2026-11-26T12:00:00Z"})
    assert explicit == "exe-1" and len(set(ids)) == 4
    assert store.count("workflow_events") == 4 and store.count("action_executions") == 1
    inc1 = store.events("workflow_events", "inc-1")
    assert [e["n"] for e in inc1] == [0, 1, 3]
    assert inc1[0]["id"] == ids[0] and inc1[0]["at"]
    assert [e["n"] for e in store.events("workflow_events", kind=["gate_decision"])] == [0, 2]
    assert store.events("action_executions", "inc-1") == [{"id": "exe-1", "incident_id": "inc-1",
                                                           "at": "2026-11-26T12:00:00Z"}]
    assert store.get("action_executions", "exe-1") == store.events("action_executions")[0]


def test_an_incident_is_claimed_once_even_by_another_store_on_the_same_backend(backend):
    incident = Incident(id=f"inc-{uuid.uuid4().hex[:6]}", service="payments-api", severity="high", summary="p99 up")
    assert backend.store.claim_incident(incident, "governor-a") is True
    assert backend.another().claim_incident(incident, "governor-b") is False
    assert backend.store.claim_incident(incident, "governor-a") is False
    assert backend.store.get("incidents", incident.id)["summary"] == "p99 up"

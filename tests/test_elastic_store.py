"""The Elasticsearch store against a local fake speaking the Elasticsearch wire format.

Every test here runs the official ``elasticsearch`` client against ``FakeElasticsearch``: a real
HTTP server on 127.0.0.1 that answers with ``X-Elastic-Product: Elasticsearch`` and the
``vnd.elasticsearch+json`` media type. The tests assert the requests the store sends (index,
DSL shape, no agent text in query syntax, create-only writes) and the parsing of realistic
responses. Semantics shared with the embedded store are in ``test_store_contract.py``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from elasticsearch import Elasticsearch

from safety_governor.adapters.store_elastic import (
    RESPONSE_CODE_FIELD,
    BulkWriteError,
    ElasticStore,
)
from safety_governor.errors import InputError, StoreError, StoreUnavailable
from safety_governor.models import Incident
from wire_fakes import FakeElasticsearch, RecordingServer, Reply, es_error, search_response

API_KEY = "test-elastic-api-key"


def store_on(es: RecordingServer, **kwargs) -> ElasticStore:
    return ElasticStore(Elasticsearch(es.url, api_key=API_KEY, max_retries=0), location=es.url, **kwargs)


@pytest.fixture
def fake_es():
    with FakeElasticsearch() as es:
        yield es


def _searches(es: RecordingServer, index: str) -> list[dict]:
    return [r.json() for r in es.matching("POST", rf"^/{index}/_search$")]


def test_search_on_a_local_es_wire_fake_sends_agent_text_as_words_in_a_multi_match_never_query_syntax():
    hits = [("ev-101", 7.25, {"id": "ev-101", "service": "payments-api", "stance": "contradict",
                              "action": "restart_api_pods", "text": "Restarts during saturation made it worse"}),
            ("ev-100", 3.5, {"id": "ev-100", "service": "payments-api", "stance": "support",
                             "action": "restart_api_pods", "text": "Restart recovered latency"})]
    with FakeElasticsearch(search=lambda index, body: search_response(hits, index=index)) as es:
        store = store_on(es)
        claim = 'restart pods" OR service:* AND {"script": "x"} NOT (db)'
        found = store.search("evidence", claim, filters={"service": ["Payments-API", "*"]}, top_k=2)

    assert [h.id for h in found] == ["ev-101", "ev-100"]
    assert found[0].score == 7.25 and found[0].source["stance"] == "contradict"
    (req,) = es.matching("POST", r"^/evidence-demo/_search$")
    assert req.headers["authorization"] == f"ApiKey {API_KEY}"
    assert "compatible-with=9" in req.headers["accept"]
    body = req.json()
    raw = json.dumps(body)
    assert "query_string" not in raw  # no query syntax anywhere: the words arrive as a value
    assert "service:*" not in raw and "NOT (db)" not in raw
    match = body["query"]["bool"]["must"][0]["multi_match"]
    assert match["query"] == "restart pods service script db"
    assert match["fields"] == ["text", "action.text"]
    assert match["operator"] == "or"
    assert body["query"]["bool"]["filter"] == [{"bool": {"should": [
        {"term": {"service": {"value": "payments-api", "case_insensitive": True}}},
        {"term": {"service": {"value": "*", "case_insensitive": True}}},
    ], "minimum_should_match": 1}}]
    assert body["size"] == 2
    assert body["sort"][0] == {"_score": {"order": "desc"}}
    assert body["sort"][1]["id"]["order"] == "asc"


def test_a_query_of_only_stop_words_or_symbols_sends_nothing_to_the_local_es_wire_fake(fake_es):
    store = store_on(fake_es)
    assert store.search("runbooks", "the of AND OR ()*:", top_k=3) == []
    assert store.search("runbooks", "restart pods", top_k=0) == []
    assert fake_es.requests == []


def test_runbook_filters_on_the_local_es_wire_fake_map_action_and_count_missing_status_as_approved(fake_es):
    store = store_on(fake_es)
    store.search("runbooks", "latency", filters={"service": "payments-api", "status": "approved",
                                                   "action": "RESTART_API_PODS"})
    (body,) = _searches(fake_es, "runbooks-demo")
    filters = body["query"]["bool"]["filter"]
    assert {"term": {"service": {"value": "payments-api", "case_insensitive": True}}} in filters
    assert {"term": {"recommended_action": {"value": "restart_api_pods", "case_insensitive": True}}} in filters
    status = next(f for f in filters if "bool" in f)
    assert status["bool"]["should"] == [
        {"term": {"status": {"value": "approved", "case_insensitive": True}}},
        {"bool": {"must_not": [{"exists": {"field": "status"}}]}},
    ]


def test_unknown_filter_fields_and_indices_are_refused_before_any_request(fake_es):
    store = store_on(fake_es)
    with pytest.raises(InputError, match="cannot filter on 'severity'"):
        store.search("evidence", "restart", filters={"severity": "high"})
    with pytest.raises(InputError, match="unknown index"):
        store.search("secrets", "restart")
    with pytest.raises(InputError, match="cannot be filtered"):
        store.count("logs", {"service": "payments-api"})
    assert fake_es.requests == []


def test_log_stats_on_the_local_es_wire_fake_counts_5xx_numerically_through_a_long_runtime_field():
    aggs = {
        "errors_4xx": {"doc_count": 9},
        "errors_5xx": {"doc_count": 31},
        "avg_bytes": {"value": 5120.44},
        "failing": {"doc_count": 40, "paths": {"doc_count_error_upper_bound": 0, "sum_other_doc_count": 0, "buckets": [
            {"key": "/api/v1/checkout", "doc_count": 33, "errors_5xx": {"doc_count": 30}},
            {"key": "/api/v1/cart", "doc_count": 7, "errors_5xx": {"doc_count": 1}},
        ]}},
    }
    with FakeElasticsearch(search=lambda index, body: search_response([], total=400, aggregations=aggs)) as es:
        store = store_on(es)
        now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
        summary = store.log_stats(service="Payments-API", window_minutes=15, now=now, top_n=2)

    assert (summary.total, summary.errors_4xx, summary.errors_5xx) == (400, 9, 31)
    assert summary.error_rate == 0.1 and summary.avg_bytes == 5120.4
    assert summary.top_failing_paths == [
        {"request": "/api/v1/checkout", "errors": 33, "errors_5xx": 30},
        {"request": "/api/v1/cart", "errors": 7, "errors_5xx": 1},
    ]
    (body,) = _searches(es, "kibana_sample_data_logs")
    runtime = body["runtime_mappings"][RESPONSE_CODE_FIELD]
    assert runtime["type"] == "long"
    assert runtime["script"]["params"] == {"field": "response.keyword"}
    assert "Long.parseLong" in runtime["script"]["source"]
    # Disjoint classes, so errors_4xx + errors_5xx is every failure counted once.
    assert body["aggregations"]["errors_5xx"] == {"filter": {"range": {RESPONSE_CODE_FIELD: {"gte": 500, "lt": 600}}}}
    assert body["aggregations"]["errors_4xx"] == {"filter": {"range": {RESPONSE_CODE_FIELD: {"gte": 400, "lt": 500}}}}
    raw = json.dumps(body)
    assert '"range": {"response' not in raw  # never a (lexicographic) range on the text field
    time_range = body["query"]["bool"]["filter"][0]["range"]["timestamp"]
    assert time_range == {"gt": int(now.timestamp() * 1000) - 15 * 60_000, "lte": int(now.timestamp() * 1000),
                          "format": "epoch_millis"}
    # The service: our `service` field, else (where a line has none) the host mapped to a service.
    by_field, by_host = body["query"]["bool"]["filter"][1]["bool"]["should"]
    assert by_field == {"term": {"service": {"value": "payments-api", "case_insensitive": True}}}
    assert by_host["bool"]["must_not"] == [{"exists": {"field": "service"}}]
    paths = body["aggregations"]["failing"]["aggregations"]["paths"]["terms"]
    assert paths["field"] == "request.keyword" and paths["size"] == 2
    assert body["track_total_hits"] is True and body["size"] == 0


def test_log_stats_with_no_logs_in_the_window_is_all_zero(fake_es):
    summary = store_on(fake_es).log_stats(service="nothing-here", window_minutes=5)
    assert (summary.total, summary.errors_4xx, summary.errors_5xx, summary.error_rate, summary.avg_bytes) == (
        0, 0, 0, 0.0, 0.0)
    assert summary.top_failing_paths == []


def test_claim_on_the_local_es_wire_fake_is_a_create_only_write_and_a_409_means_another_governor_has_it(fake_es):
    incident = Incident(id="inc-77", service="payments-api", severity="high", summary="p99 up")
    first, second = store_on(fake_es), store_on(fake_es)  # two governors, one cluster

    assert first.claim_incident(incident, "governor-a") is True
    assert second.claim_incident(incident, "governor-b") is False
    assert first.claim_incident(incident, "governor-a") is False  # a claim is taken once

    creates = fake_es.matching("PUT", r"^/incident_claims/_create/inc-77$")
    assert len(creates) == 3
    assert creates[0].json()["owner"] == "governor-a"
    assert fake_es.docs["incident_claims"]["inc-77"]["owner"] == "governor-a"
    assert fake_es.docs["incidents-demo"]["inc-77"]["summary"] == "p99 up"
    assert not fake_es.matching("PUT", r"^/incident_claims/_doc/")  # never an overwriting write


def test_a_claim_whose_incident_cannot_be_recorded_is_released(fake_es):
    fake_es.reject = lambda index, doc_id, source: (
        ("mapper_parsing_exception", "bad") if index == "incidents-demo" else None)
    store = store_on(fake_es)
    incident = Incident(id="inc-78", service="payments-api", severity="high", summary="p99 up")
    with pytest.raises(BulkWriteError):
        store.claim_incident(incident, "governor-a")
    assert "inc-78" not in fake_es.docs.get("incident_claims", {})
    fake_es.reject = None
    assert store.claim_incident(incident, "governor-a") is True


def test_bulk_write_with_a_rejected_document_is_undone_and_reports_every_error(fake_es):
    store = store_on(fake_es)
    store.index_documents("evidence", [{"id": "ev-1", "service": "a", "stance": "support", "text": "old"}])
    fake_es.reject = lambda index, doc_id, source: (
        ("mapper_parsing_exception", "failed to parse field [stance]") if doc_id == "ev-bad" else None)

    with pytest.raises(BulkWriteError) as err:
        store.index_documents("evidence", [
            {"id": "ev-1", "service": "a", "stance": "support", "text": "new"},
            {"id": "ev-2", "service": "a", "stance": "support", "text": "brand new"},
            {"id": "ev-bad", "service": "a", "stance": ["x"], "text": "bad"},
        ])

    assert err.value.failures == [{"index": "evidence", "id": "ev-bad", "status": 400,
                                   "type": "mapper_parsing_exception", "reason": "failed to parse field [stance]"}]
    assert "1 of 3 documents were rejected (nothing was kept)" in str(err.value)
    assert fake_es.docs["evidence-demo"] == {"ev-1": {"id": "ev-1", "service": "a", "stance": "support",
                                                      "text": "old"}}
    undo = fake_es.matching("PUT", r"^/_bulk$")[-1].ndjson()
    assert {"delete": {"_index": "evidence-demo", "_id": "ev-2"}} in undo
    assert {"index": {"_index": "evidence-demo", "_id": "ev-1"}} in undo


def test_atomic_on_the_local_es_wire_fake_undoes_the_writes_of_a_block_that_raises(fake_es):
    store = store_on(fake_es)
    old = {"id": "pol-1", "service": "*", "severities": ["high"], "blocked_actions": [], "rule": "old"}
    store.index_documents("policies", [old])
    with pytest.raises(RuntimeError):
        with store.atomic():
            store.index_documents("policies", [{**old, "rule": "new"}, {**old, "id": "pol-2"}])
            store.index_documents("policies", [{**old, "rule": "newer"}])
            event_id = store.append_event("workflow_events", {"kind": "gate_decision", "incident_id": "inc-1"})
            assert store.get("policies", "pol-1")["rule"] == "newer"  # writes are visible inside the block
            raise RuntimeError("boom")
    assert fake_es.docs["policies-demo"] == {"pol-1": old}  # restored, and the new one deleted
    assert event_id not in fake_es.docs["workflow_events"]
    undo = fake_es.matching("PUT", r"^/_bulk$")[-1].ndjson()
    assert undo[0] == {"delete": {"_index": "workflow_events", "_id": event_id}}  # newest first
    assert undo[-2:] == [{"index": {"_index": "policies-demo", "_id": "pol-1"}}, old]


def test_a_nested_atomic_block_that_raises_undoes_only_its_own_writes(fake_es):
    store = store_on(fake_es)
    doc = {"id": "pol-1", "service": "*", "severities": ["high"], "blocked_actions": [], "rule": "r"}
    with store.atomic():
        store.index_documents("policies", [doc])
        with pytest.raises(ValueError):
            with store.atomic():
                store.index_documents("policies", [{**doc, "id": "pol-2"}])
                raise ValueError("inner")
        store.append_event("workflow_events", {"kind": "gate_decision", "incident_id": "inc-1"})
    assert sorted(fake_es.docs["policies-demo"]) == ["pol-1"]
    assert len(fake_es.docs["workflow_events"]) == 1


def test_events_are_appended_create_only_and_logs_get_stable_ids(fake_es):
    store = store_on(fake_es)
    event_id = store.append_event("workflow_events", {"kind": "approval_accepted", "incident_id": "inc-1"})
    line = {"timestamp": "2026-11-26T11:59:00Z", "service": "payments-api", "request": "/x", "response": "503"}
    store.index_documents("logs", [line])
    store.index_documents("logs", [line])

    ops = [json.dumps(r.ndjson()[0]) for r in fake_es.matching("PUT", r"^/_bulk$")]
    assert f'{{"create": {{"_index": "workflow_events", "_id": "{event_id}"}}}}' == ops[0]
    assert ops[1] == ops[2] and '"index"' in ops[1]  # the same stable id twice: an upsert, no duplicate
    assert len(fake_es.docs["kibana_sample_data_logs"]) == 1
    assert fake_es.docs["workflow_events"][event_id]["at"]


def test_policy_conflicts_are_narrowed_by_the_query_and_decided_in_python():
    policies = [("pol-1", None, {"id": "pol-1", "service": "payments-api", "blocked_actions": ["Restart_API_Pods"],
                                 "severities": ["High"], "rule": "needs approval"}),
                # the fake ignores the query; Python must still drop these two
                ("pol-2", None, {"id": "pol-2", "service": "payments-api", "blocked_actions": ["restart_api_pods"],
                                 "severities": ["critical"], "rule": "critical only"}),
                ("pol-3", None, {"id": "pol-3", "service": "billing-batch", "blocked_actions": ["restart_api_pods"],
                                 "severities": ["high"], "rule": "other service"})]
    with FakeElasticsearch(search=lambda index, body: search_response(policies)) as es:
        found = store_on(es).policy_conflicts("PAYMENTS-API", "restart_api_pods", "high")
    assert [p["id"] for p in found] == ["pol-1"]
    filters = _searches(es, "policies-demo")[0]["query"]["bool"]["filter"]
    assert {"term": {"blocked_actions": {"value": "restart_api_pods", "case_insensitive": True}}} in filters
    assert {"term": {"severities": {"value": "high", "case_insensitive": True}}} in filters


def test_known_actions_come_from_a_terms_aggregation_over_approved_runbooks():
    aggs = {"actions": {"buckets": [{"key": "restart_api_pods", "doc_count": 2},
                                    {"key": "Scale_Worker_Pool", "doc_count": 1}]}}
    with FakeElasticsearch(search=lambda index, body: search_response([], aggregations=aggs)) as es:
        assert store_on(es).known_actions() == {"restart_api_pods", "scale_worker_pool"}
    (body,) = _searches(es, "runbooks-demo")
    assert body["aggregations"]["actions"]["terms"]["field"] == "recommended_action"
    assert body["size"] == 0


def test_hybrid_search_on_the_local_es_wire_fake_fuses_bm25_and_semantic_retrievers_with_rrf():
    hits = [("rbk-api-02", 0.0328, {"id": "rbk-api-02", "service": "payments-api", "title": "pool"})]
    with FakeElasticsearch(search=lambda index, body: search_response(hits)) as es:
        store = store_on(es, semantic_field="body_semantic")
        found = store.search("runbooks", "db connection saturation", filters={"service": "payments-api"}, top_k=3)
    assert [h.id for h in found] == ["rbk-api-02"]
    (body,) = _searches(es, "runbooks-demo")
    rrf = body["retriever"]["rrf"]
    bm25, semantic = (r["standard"]["query"]["bool"] for r in rrf["retrievers"])
    assert bm25["must"][0]["multi_match"]["query"] == "db connection saturation"
    assert semantic["must"][0] == {"semantic": {"field": "body_semantic", "query": "db connection saturation"}}
    assert bm25["filter"] == semantic["filter"] == [
        {"term": {"service": {"value": "payments-api", "case_insensitive": True}}}]
    assert rrf["rank_window_size"] >= body["size"] == 3


def test_hybrid_search_refused_by_the_cluster_falls_back_to_bm25_with_a_warning():
    def search(index, body):
        if "retriever" in body:
            raise AssertionError("unreachable")  # replaced by the override below
        return search_response([("rbk-1", 2.0, {"id": "rbk-1"})])

    with FakeElasticsearch(search=search) as es:
        es.override = lambda req: (es_error(403, "security_exception",
                                            "current license is non-compliant for [Reciprocal Rank Fusion (RRF)]")
                                   if req.path.endswith("/_search") and b"retriever" in req.body else None)
        store = store_on(es, semantic_field="body_semantic")
        with pytest.warns(RuntimeWarning, match="using BM25 only"):
            first = store.search("runbooks", "latency")
        second = store.search("runbooks", "latency")
    assert [h.id for h in first] == [h.id for h in second] == ["rbk-1"]
    assert "license" in store.hybrid_disabled
    assert len([b for b in _searches(es, "runbooks-demo") if "retriever" in b]) == 1


def test_a_server_without_the_product_header_is_refused_as_not_elasticsearch():
    with FakeElasticsearch(product_header=False) as es:
        with pytest.raises(StoreUnavailable, match="is not Elasticsearch"):
            store_on(es).count("runbooks")


def test_vendor_errors_from_the_local_es_wire_fake_become_one_clear_sentence_without_the_key():
    replies = {
        "/runbooks-demo/_count": es_error(401, "security_exception", "unable to authenticate"),
        "/evidence-demo/_count": es_error(404, "index_not_found_exception", "no such index [evidence-demo]",
                                          index="evidence-demo"),
        "/policies-demo/_count": es_error(400, "media_type_header_exception",
                                          "Invalid media-type value on headers [Accept, Content-Type]"),
        "/incidents-demo/_count": es_error(403, "security_exception", "action [indices:data/read] is unauthorized"),
    }
    with RecordingServer(lambda req: replies.get(req.path, Reply(500, {}))) as es:
        store = store_on(es)
        with pytest.raises(StoreUnavailable, match="rejected the credentials \\(401\\); check ELASTIC_API_KEY") as e1:
            store.count("runbooks")
        with pytest.raises(StoreError, match="index evidence-demo does not exist.*load_to_elastic.py") as e2:
            store.count("evidence")
        with pytest.raises(StoreUnavailable, match="needs Elasticsearch 9.x") as e3:
            store.count("policies")
        with pytest.raises(StoreError, match="lacks a privilege \\(403\\)") as e4:
            store.count("incidents")
    for err in (e1, e2, e3, e4):
        assert API_KEY not in str(err.value)


def test_an_unreachable_cluster_is_store_unavailable():
    with RecordingServer(lambda req: Reply()) as es:
        url = es.url
    store = ElasticStore(Elasticsearch(url, max_retries=0, request_timeout=2), location=url)
    with pytest.raises(StoreUnavailable, match="cannot reach Elasticsearch"):
        store.get("runbooks", "rbk-1")


def test_ensure_indices_on_the_local_es_wire_fake_creates_missing_indices_with_the_mapping_files():
    with FakeElasticsearch(data_streams=("kibana_sample_data_logs",)) as es:
        es.created_indices["runbooks-demo"] = {}
        report = store_on(es).ensure_indices()
    states = {logical: state for logical, _, state in report}
    assert states["runbooks"] == "exists" and states["logs"] == "data stream"
    assert states["evidence"] == states["incident_claims"] == "created"
    created = es.created_indices["evidence-demo"]
    assert created["mappings"]["properties"]["stance"] == {"type": "keyword", "normalizer": "sg_keyword"}
    assert created["settings"]["analysis"]["normalizer"]["sg_keyword"]["filter"] == ["lowercase", "trim"]
    assert not es.matching("PUT", r"^/runbooks-demo$")  # an existing index is never recreated


def test_index_names_are_configurable_per_logical_index():
    with FakeElasticsearch() as es:
        store = store_on(es, indices={"evidence": "prod-evidence"})
        store.count("evidence")
        assert es.matching("POST", r"^/prod-evidence/_count$")
    with pytest.raises(InputError, match="unknown logical index"):
        ElasticStore(Elasticsearch("http://127.0.0.1:9"), indices={"evidences": "x"})


def test_get_many_reads_with_mget_and_leaves_missing_ids_out(fake_es):
    store = store_on(fake_es)
    store.index_documents("evidence", [{"id": "ev-1", "service": "a", "stance": "support", "text": "t"}])
    assert store.get_many("evidence", ["ev-1", "ev-404"]) == {"ev-1": {"id": "ev-1", "service": "a",
                                                                       "stance": "support", "text": "t"}}
    assert store.get("evidence", "ev-404") is None
    assert fake_es.matching("POST", r"^/evidence-demo/_mget$")[-1].json() == {"ids": ["ev-404"]}


def test_events_on_the_local_es_wire_fake_are_read_in_insertion_order_by_incident_and_kind():
    stored = [("wor-2", None, {"id": "wor-2", "kind": "gate_decision", "incident_id": "inc-1", "sg_seq": 2})]
    with FakeElasticsearch(search=lambda index, body: search_response(stored)) as es:
        events = store_on(es).events("workflow_events", "inc-1", kind=["gate_decision", "approval_refused"])
    assert events == [{"id": "wor-2", "kind": "gate_decision", "incident_id": "inc-1"}]  # order field not leaked
    (body,) = _searches(es, "workflow_events")
    assert body["query"]["bool"]["filter"] == [{"term": {"incident_id": "inc-1"}},
                                               {"terms": {"kind": ["gate_decision", "approval_refused"]}}]
    assert list(body["sort"][0]) == ["sg_seq"] and body["sort"][0]["sg_seq"]["order"] == "asc"


def test_the_client_from_settings_retries_503_from_the_local_es_wire_fake_but_never_a_400():
    from safety_governor.config import Settings

    with FakeElasticsearch() as es:
        answers = [es_error(503, "unavailable_shards_exception", "try again")]
        es.override = lambda req: answers.pop(0) if req.path.endswith("/_count") and answers else None
        store = ElasticStore.from_settings(Settings(elastic_url=es.url, elastic_api_key=API_KEY,
                                                    elastic_max_retries=1))
        assert store.count("runbooks") == 0
        assert len(es.matching("POST", r"/_count$")) == 2
        es.override = lambda req: es_error(400, "parsing_exception", "unknown query [x]")
        with pytest.raises(StoreError, match="400 parsing_exception: unknown query"):
            store.count("runbooks")
        assert len(es.matching("POST", r"/_count$")) == 3

"""The audit worker's detector on a real seeded store: error clusters per service and path."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from safety_governor.adapters.audit_jsonl import MemoryAudit
from safety_governor.adapters.store_sqlite import SQLiteStore
from safety_governor.bootstrap import build
from safety_governor.config import Settings
from safety_governor.knowledge import seed_store
from safety_governor.service.detection import Cluster, DetectionConfig, ErrorClusterDetector, PathStats, request_of
from safety_governor.service.logtail import SQLiteLogTail
from safety_governor.service.telemetry import STORYLINE, Fault, TrafficSimulator


@pytest.fixture
def file_store(tmp_path: Path, knowledge):
    store = SQLiteStore(tmp_path / "governor.db")
    seed_store(store, {**knowledge, "logs": [], "incidents": []}, source="test")
    yield store
    store.close()


def simulate(store, storyline, seconds: int, *, skip_detected: bool = True, config=None):
    """Run the simulated production on a fake clock; feed the detector from the store's tail."""
    clock = [time.time() - seconds - 5]
    world = TrafficSimulator(store, storyline=storyline, clock=lambda: clock[0])
    world.prefill(150)
    tail = SQLiteLogTail(store.path, backfill_seconds=seconds + 300)
    detector = ErrorClusterDetector(config)
    found: list[tuple[int, Cluster]] = []
    try:
        for step in range(seconds):
            clock[0] += 1.0
            world.tick()
            detector.observe(tail.poll())
            skip = {c.service for _, c in found} if skip_detected else set()
            found.extend((step, c) for c in detector.scan(clock[0], skip=skip))
    finally:
        tail.close()
    return found, world


def test_steady_traffic_opens_no_incident(file_store):
    found, world = simulate(file_store, (), 90)
    assert found == []
    assert world.written > 90 * 20


def test_the_default_storyline_is_found_in_the_store_with_severity_and_summary_from_the_logs(file_store):
    found, _ = simulate(file_store, STORYLINE, 80)
    by_service = {c.service: c for _, c in found}
    assert set(by_service) == {"checkout-web", "payments-api", "auth-service", "billing-batch"}
    checkout = by_service["checkout-web"]
    assert checkout.paths[0].request == "POST /checkout/confirm"
    assert checkout.release == "2026.11.26-2" and "after release 2026.11.26-2 deploy" in checkout.summary()
    auth = by_service["auth-service"]
    assert auth.severity() == "critical" and auth.pattern() == "credential_reset_spike"
    assert re.search(r"traffic from few IPs: \d+% of failures from [1-6] client IPs, one user agent", auth.symptoms())
    assert by_service["billing-batch"].pattern() == "queue_lag"
    assert by_service["payments-api"].codes[0][0] in ("503", "500")
    # Incidents come from what was detected, never from a hard-coded id.
    assert checkout.to_incident("inc-x").source == "audit-worker"


def test_detected_incidents_get_the_gate_outcomes_the_storyline_is_built_around(file_store):
    found, _ = simulate(file_store, STORYLINE, 80)
    governor = build(Settings(), store=file_store, audit=MemoryAudit())
    outcome = {}
    for step, cluster in found:
        gate = governor.pipeline.assess(cluster.to_incident(f"inc-{step}-{cluster.service}")).gate
        outcome[cluster.service] = (gate.proposed_action, gate.decision, gate.approval_required)
    assert outcome["checkout-web"] == ("rollback_last_deploy", "execute", "none")
    assert outcome["payments-api"][:2] == ("restart_api_pods", "block_and_escalate")
    assert outcome["auth-service"] == ("enable_reset_rate_limit", "block_and_escalate", "force_override")
    assert outcome["billing-batch"][1] == "execute"


def test_a_blip_shorter_than_the_sustain_window_is_not_an_incident(file_store):
    blip = (Fault("blip", "search-api", start=5, duration=2, requests=(("GET", "/api/v1/search"),), error_rate=1.0,
                  codes=((500, 1.0),), remedies=(), extra_per_second=6.0),)
    found, _ = simulate(file_store, blip, 40, config=DetectionConfig())
    assert found == []
    found, _ = simulate(file_store, blip, 40, config=DetectionConfig(segments_failing=0))
    assert [c.service for _, c in found] == ["search-api"]


def test_services_that_already_have_an_open_incident_are_skipped(file_store):
    found, _ = simulate(file_store, STORYLINE[:1], 30, skip_detected=False)
    assert len(found) > 1 and {c.service for _, c in found} == {"checkout-web"}
    detector = ErrorClusterDetector(DetectionConfig(segments_failing=0))
    tail = SQLiteLogTail(file_store.path, backfill_seconds=600)
    detector.observe(tail.poll())
    tail.close()
    assert detector.scan(time.time(), skip={"checkout-web"}) == []


def test_the_sample_data_clusters_are_found_with_windows_sized_for_its_density(tmp_path: Path, knowledge):
    store = SQLiteStore(tmp_path / "sample.db")
    seed_store(store, {**knowledge, "incidents": []}, source="test")  # logs rebased to end now
    tail = SQLiteLogTail(store.path, backfill_seconds=3 * 3600)
    detector = ErrorClusterDetector(DetectionConfig(window_seconds=900, baseline_seconds=5400, segments_failing=0))
    detector.observe(tail.poll())
    tail.close()
    store.close()
    services = {c.service for c in detector.scan(time.time())}
    assert {"payments-api", "elastic-downloads", "auth-service"} <= services


def test_severity_follows_the_error_rate_and_a_traffic_surge():
    def cluster(errors: int, total: int, volume: float) -> Cluster:
        return Cluster(service="svc", paths=(PathStats("svc", "GET /x", total, errors, 0.01),), total=total,
                       errors=errors, baseline_rate=0.01, volume_ratio=volume, codes=(("500", errors),), tags=(),
                       clients=50, agents=5)

    assert cluster(5, 100, 1.0).severity() == "low"
    assert cluster(15, 100, 1.0).severity() == "medium"
    assert cluster(45, 100, 1.0).severity() == "high"
    assert cluster(45, 100, 4.0).severity() == "critical"
    assert cluster(80, 100, 1.0).severity() == "critical"


def test_the_request_is_read_from_the_apache_line_in_the_message():
    doc = {"request": "/api/v1/checkout", "message": '1.2.3.4 - - [x] "POST /api/v1/checkout HTTP/1.1" 503 1 "-" "ua"'}
    assert request_of(doc) == "POST /api/v1/checkout"
    assert request_of({"request": "/healthz"}) == "/healthz"


def test_the_elasticsearch_tail_on_a_local_es_wire_fake_returns_each_line_once_in_timestamp_order():
    from elasticsearch import Elasticsearch
    from wire_fakes import FakeElasticsearch

    from safety_governor.service.logtail import ElasticLogTail

    base = int(time.time() * 1000)
    lines = [(f"log-{n}", base + (n // 2) * 1000,
              {"timestamp": base + (n // 2) * 1000, "service": "checkout-web", "request": "/checkout/confirm",
               "response": "500", "message": '1.2.3.4 - - [x] "POST /checkout/confirm HTTP/1.1" 500 1 "-" "ua"'})
             for n in range(6)]
    visible = [3]  # lines the cluster has "indexed" so far

    def search(index: str, body: dict) -> dict:
        since = body["query"]["range"]["timestamp"]["gte"]
        hits = [{"_index": index, "_id": i, "_score": None, "_source": src, "sort": [ts]}
                for i, ts, src in lines[: visible[0]] if ts >= since][: body["size"]]
        return {"took": 1, "timed_out": False, "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
                "hits": {"total": {"value": len(hits), "relation": "eq"}, "max_score": None, "hits": hits}}

    with FakeElasticsearch(search=search) as es:
        tail = ElasticLogTail(Elasticsearch(es.url, api_key="k", max_retries=0), "kibana_sample_data_logs",
                              backfill_seconds=60)
        first = tail.poll()
        visible[0] = 6
        second = tail.poll()
        third = tail.poll()
        requests = [r.json() for r in es.matching("POST", r"^/kibana_sample_data_logs/_search$")]
    assert [d["timestamp"] for d in first] == [base, base, base + 1000]
    assert [d["timestamp"] for d in second] == [base + 1000, base + 2000, base + 2000]
    assert third == []
    assert requests[0]["sort"] == [{"timestamp": {"order": "asc"}}]
    assert requests[1]["query"]["range"]["timestamp"]["gte"] == base + 1000
    detector = ErrorClusterDetector()
    assert detector.observe(first + second) == 6 and detector.service_rate("checkout-web", base / 1000 + 3) == 1.0

"""What a real cluster does that a lenient fake would hide (issue 15), checked with the official
``elasticsearch`` client against ``FakeElasticsearch``, a local server speaking the documented
wire format: per-item 429s in a 200 bulk reply, Serverless' ``build_flavor``, refresh policy.
"""

from __future__ import annotations

import pytest
from elasticsearch import Elasticsearch

from safety_governor.adapters.store_elastic import BulkWriteError, ElasticStore
from wire_fakes import FakeElasticsearch

API_KEY = "es-test-api-key-0123456789"


def store_on(es: FakeElasticsearch, **kwargs) -> ElasticStore:
    kwargs.setdefault("sleep", lambda seconds: None)
    return ElasticStore(Elasticsearch(es.url, api_key=API_KEY, max_retries=0), location=es.url, **kwargs)


def queue_full(times: int):
    """A ``reject`` hook answering the first ``times`` attempts of each id with a per-item 429."""
    seen: dict[str, int] = {}

    def reject(index, doc_id, source):
        seen[doc_id] = seen.get(doc_id, 0) + 1
        if seen[doc_id] <= times:
            return ("es_rejected_execution_exception", "rejected execution of coordinating operation", 429)
        return None

    return reject


def test_bulk_items_refused_with_429_by_the_local_es_wire_fake_are_retried_with_backoff_and_kept():
    waits: list[float] = []
    with FakeElasticsearch(reject=queue_full(2)) as es:
        store = store_on(es, sleep=waits.append, bulk_backoff=0.5)
        docs = [{"id": f"ev-{i}", "service": "a", "stance": "support", "text": f"doc {i}"} for i in range(3)]
        assert store.index_documents("evidence", docs) == 3
        assert sorted(es.docs["evidence-demo"]) == ["ev-0", "ev-1", "ev-2"]
        bulks = es.matching("PUT", r"^/_bulk$")
    assert len(bulks) == 3  # the first try and two retries of only the refused items
    assert waits == [0.5, 1.0]


def test_bulk_items_still_refused_after_the_retry_budget_are_undone_with_the_429_reported():
    with FakeElasticsearch() as es:
        store = store_on(es, bulk_retries=2)
        es.reject = lambda index, doc_id, source: (
            ("es_rejected_execution_exception", "queue full", 429) if doc_id == "ev-busy" else None)
        with pytest.raises(BulkWriteError) as err:
            store.index_documents("evidence", [
                {"id": "ev-ok", "service": "a", "stance": "support", "text": "fine"},
                {"id": "ev-busy", "service": "a", "stance": "support", "text": "refused"},
            ])
        assert es.docs.get("evidence-demo", {}) == {}
        attempts = [r for r in es.matching("PUT", r"^/_bulk$") if b"ev-busy" in r.body and b'"index"' in r.body]
    assert [f["status"] for f in err.value.failures] == [429]
    assert len(attempts) == 3  # one try and two retries, then the undo


def test_a_serverless_project_on_the_local_es_wire_fake_is_ready_whatever_its_version_number():
    serverless = {"number": "8.11.0", "build_flavor": "serverless", "build_type": "docker"}
    with FakeElasticsearch(version=serverless) as es:
        ready = store_on(es).check()
    assert ready.ok and "Serverless" in ready.reason


def test_a_self_managed_8x_cluster_is_still_refused_by_the_9x_client():
    with FakeElasticsearch(version={"number": "8.15.0", "build_flavor": "default"}) as es:
        ready = store_on(es).check()
    assert not ready.ok and "needs 9.x" in ready.reason


def test_writes_wait_for_the_next_refresh_where_a_search_follows_and_never_force_one():
    from safety_governor.models import Incident

    with FakeElasticsearch(refresh_interval=0.05) as es:
        store = store_on(es)
        event_id = store.append_event("workflow_events", {"kind": "reply_received", "incident_id": "inc-1", "key": "k"})
        assert [e["id"] for e in store.events("workflow_events", "inc-1")] == [event_id]  # the next read sees it
        store.index_documents("runbooks", [{"id": "rb-1", "service": "a", "title": "pool", "body": "drain"}])
        assert [d["id"] for d in store.find("runbooks", {"service": "a"})] == ["rb-1"]
        assert store.claim_incident(Incident(id="inc-1", service="a", severity="low", summary="s"), "gov-a")
        claims = [r for r in es.requests if "/incident_claims/_create/" in r.path]
        writes = {r.text.splitlines()[0]: r.query.get("refresh") for r in es.matching("PUT", r"^/_bulk$")}
    assert es.forced_refreshes == 0
    assert [refresh for line, refresh in writes.items() if "incidents-demo" not in line] == ["wait_for", "wait_for"]
    assert [refresh for line, refresh in writes.items() if "incidents-demo" in line] == ["false"]
    assert [r.query.get("refresh") for r in claims] == ["false"]  # read back by id: GET is real-time


def test_a_write_without_refresh_is_not_searchable_on_the_local_es_wire_fake_until_the_next_refresh():
    with FakeElasticsearch(refresh_interval=3600) as es:
        client = Elasticsearch(es.url, api_key=API_KEY, max_retries=0)
        client.index(index="runbooks-demo", id="rb-1", document={"id": "rb-1"})
        assert client.search(index="runbooks-demo")["hits"]["total"]["value"] == 0
        assert client.get(index="runbooks-demo", id="rb-1")["found"]  # GET is real-time
        client.index(index="runbooks-demo", id="rb-2", document={"id": "rb-2"}, refresh=True)
        assert client.search(index="runbooks-demo")["hits"]["total"]["value"] == 2
    assert es.forced_refreshes == 1

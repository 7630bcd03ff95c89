"""``load_to_elastic.py`` / ``seed`` and ``assess --live`` against local fakes speaking the
Elasticsearch wire format (``FakeElasticsearch``) and the Kibana converse API, on 127.0.0.1."""

from __future__ import annotations

import json
import re

import pytest

from safety_governor.adapters.store_elastic import ElasticStore
from safety_governor.bootstrap import open_store
from safety_governor.cli import main
from safety_governor.config import DEFAULT_DATA_DIR, Settings
from wire_fakes import FakeElasticsearch, Recorded, RecordingServer, Reply

SAMPLE = json.loads((DEFAULT_DATA_DIR / "sample_data.json").read_text())


@pytest.fixture
def elastic_env(monkeypatch, tmp_path):
    with FakeElasticsearch() as es:
        monkeypatch.setenv("ELASTIC_URL", es.url)
        monkeypatch.setenv("ELASTIC_API_KEY", "seed-test-key")
        monkeypatch.setenv("ELASTIC_MAX_RETRIES", "0")
        monkeypatch.setenv("GOVERNOR_OUTPUT_DIR", str(tmp_path / "out"))
        monkeypatch.delenv("ELASTIC_CLOUD_ID", raising=False)
        monkeypatch.delenv("AGENT_BACKEND", raising=False)
        yield es


def test_open_store_picks_elasticsearch_when_elastic_url_or_cloud_id_is_set():
    store = open_store(Settings(elastic_url="http://user:pw@127.0.0.1:9", elastic_api_key="k"))
    assert isinstance(store, ElasticStore) and store.location == "http://127.0.0.1:9"  # no credentials shown
    cloud = open_store(Settings(elastic_cloud_id="my-deploy:" + "dXMtZWFzdC0xLmF3cy5mb3VuZC5pbyRhYmMkZGVm"))
    assert isinstance(cloud, ElasticStore) and "my-deploy" in cloud.location
    named = open_store(Settings.from_env({"ELASTIC_URL": "http://127.0.0.1:9", "ELASTIC_INDEX_LOGS": "web-logs"}))
    assert named.indices["logs"] == "web-logs" and named.indices["runbooks"] == "runbooks-demo"


def test_seeding_a_local_es_wire_fake_creates_indices_then_bulk_loads_idempotently(elastic_env, tmp_path, capsys):
    es = elastic_env
    data = tmp_path / "knowledge.json"  # the sample knowledge base with a shorter log slice (speed)
    data.write_text(json.dumps({**SAMPLE, "logs": SAMPLE["logs"][:600]}))
    assert main(["seed", "--data", str(data)]) == 0
    out = capsys.readouterr().out
    assert sorted(es.created_indices) == sorted(["runbooks-demo", "evidence-demo", "policies-demo", "incidents-demo",
                                                 "kibana_sample_data_logs", "workflow_events", "action_executions",
                                                 "incident_claims"])
    logs_mapping = es.created_indices["kibana_sample_data_logs"]["mappings"]["properties"]
    assert logs_mapping["response"]["fields"]["keyword"]["type"] == "keyword"
    counts = {index: len(docs) for index, docs in es.docs.items()}
    assert counts == {"runbooks-demo": len(SAMPLE["runbooks"]), "evidence-demo": len(SAMPLE["evidence"]),
                      "policies-demo": len(SAMPLE["policies"]), "incidents-demo": len(SAMPLE["incidents"]),
                      "kibana_sample_data_logs": 600}
    for index in ("runbooks", "evidence"):
        n = len(SAMPLE[index])
        assert re.search(rf"{index}\s+{n} loaded\s+{n} in store", out), out
    assert "created" in out

    assert re.search(r"logs\s+600 loaded\s+600 in store", out), out
    assert main(["seed", "--data", str(data)]) == 0  # again: same ids, no duplicates, no index recreated
    assert {index: len(docs) for index, docs in es.docs.items()} == counts
    assert "exists" in capsys.readouterr().out
    assert len(es.matching("PUT", r"^/evidence-demo$")) == 1


def test_a_rejected_document_is_reported_per_document_and_the_load_is_undone(elastic_env, capsys):
    es = elastic_env
    es.reject = lambda index, doc_id, source: (
        ("mapper_parsing_exception", "failed to parse field [severities]") if doc_id == "pol-approval-01" else None)
    assert main(["seed"]) == 1
    err = capsys.readouterr().err
    assert "error: policies/pol-approval-01: mapper_parsing_exception: failed to parse field [severities]" in err
    assert "nothing was kept" in err
    assert all(not docs for docs in es.docs.values())  # undone


def test_a_kibana_sample_data_stream_is_read_as_is_and_not_loaded(monkeypatch, tmp_path, capsys):
    with FakeElasticsearch(data_streams=("kibana_sample_data_logs",)) as es:
        monkeypatch.setenv("ELASTIC_URL", es.url)
        monkeypatch.setenv("GOVERNOR_OUTPUT_DIR", str(tmp_path))
        assert main(["seed"]) == 0
    assert "is a data stream" in capsys.readouterr().out
    assert "kibana_sample_data_logs" not in es.docs and "kibana_sample_data_logs" not in es.created_indices
    assert len(es.docs["runbooks-demo"]) == len(SAMPLE["runbooks"])


def test_an_unreachable_cluster_is_one_line_on_stderr(monkeypatch, tmp_path, capsys):
    with RecordingServer(lambda req: Reply()) as dead:
        url = dead.url
    monkeypatch.setenv("ELASTIC_URL", url)
    monkeypatch.setenv("ELASTIC_MAX_RETRIES", "0")
    monkeypatch.setenv("GOVERNOR_OUTPUT_DIR", str(tmp_path))
    assert main(["seed"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "cannot reach Elasticsearch" in err[0]


def test_assess_live_claims_the_incident_on_elasticsearch_and_runs_it_once(elastic_env, monkeypatch, tmp_path, capsys):
    es = elastic_env

    def kibana(req: Recorded) -> Reply:
        return Reply(200, {"conversation_id": "conv-1", "steps": [], "response": {"message": "no idea, sorry"}})

    with RecordingServer(kibana) as kb:
        monkeypatch.setenv("AGENT_BACKEND", "kibana")
        monkeypatch.setenv("ELASTIC_KIBANA_URL", kb.url)
        monkeypatch.setenv("ELASTIC_AGENT_ID", "sre-governor")
        incident = tmp_path / "incident.json"
        incident.write_text(json.dumps({"id": "inc-cli-1", "service": "payments-api", "severity": "high",
                                        "summary": "P99 latency up", "symptoms": "timeouts"}))
        assert main(["assess", str(incident), "--live"]) == 0
        out = capsys.readouterr().out
        assert "block_and_escalate" in out and "invalid_output" in out and "pending_approval" in out
        assert main(["assess", str(incident), "--live"]) == 2
        assert "already claimed" in capsys.readouterr().err
    assert es.matching("PUT", r"^/incident_claims/_create/inc-cli-1$")
    assert es.docs["incidents-demo"]["inc-cli-1"]["summary"] == "P99 latency up"
    decisions = [d for d in es.docs["workflow_events"].values() if d["kind"] == "gate_decision"]
    assert decisions and decisions[0]["decision"] == "block_and_escalate"
    assert len(kb.requests) == 1  # the plan failed closed; no stress round

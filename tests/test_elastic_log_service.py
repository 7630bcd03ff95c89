"""The service of a log line on Elasticsearch (issue 15, item 2), with the official client against
``FakeElasticsearch`` serving Kibana's sample web logs as Kibana ships them (``kibana_sample_logs``:
the data set's mapping, no ``service`` field, a data stream, ``timestamp`` an alias of
``@timestamp``); the fake evaluates the store's queries over the documents."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from elasticsearch import Elasticsearch
from kibana_sample_logs import INDEX, MAPPING, documents, response_code

from safety_governor.adapters.elastic_logs import RESPONSE_CODE_SCRIPT, LogService
from safety_governor.adapters.store_elastic import ElasticStore
from safety_governor.config import Settings
from safety_governor.errors import InputError
from wire_fakes import FakeElasticsearch

API_KEY = "es-test-api-key-0123456789"
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def sample_logs():
    with FakeElasticsearch(data_streams=(INDEX,), mappings={INDEX: MAPPING},
                           runtime_scripts={RESPONSE_CODE_SCRIPT: response_code}) as es:
        es.docs[INDEX] = documents(NOW)
        yield es


def store_on(es: FakeElasticsearch, **kwargs) -> ElasticStore:
    return ElasticStore(Elasticsearch(es.url, api_key=API_KEY, max_retries=0), location=es.url, **kwargs)


def test_the_default_mapping_finds_a_services_lines_in_kibanas_sample_logs_as_shipped(sample_logs):
    store = store_on(sample_logs)
    downloads = store.log_stats(service="elastic-downloads", window_minutes=15, now=NOW)
    assert (downloads.total, downloads.errors_4xx, downloads.errors_5xx) == (4, 1, 2)
    assert downloads.error_rate == 0.75
    assert {p["request"] for p in downloads.top_failing_paths} == {
        "/kibana/kibana-6.3.2-linux-x86_64.tar.gz", "/beats/filebeat/filebeat-6.3.2-amd64.deb",
        "/elasticsearch/elasticsearch-6.3.2.zip"}
    assert store.log_stats(service="cdn-edge", window_minutes=15, now=NOW).total == 1
    # An unmapped host is its own service.
    assert store.log_stats(service="elastic-elastic-elastic.org", window_minutes=15, now=NOW).total == 1
    assert store.log_stats(service="payments-api", window_minutes=15, now=NOW).total == 0
    assert store.log_stats(window_minutes=15, now=NOW).total == 6


def test_the_service_can_come_from_the_first_segment_of_the_request_path(sample_logs):
    store = store_on(sample_logs, log_service=LogService.parse("path", ""))
    assert store.log_stats(service="elasticsearch", window_minutes=15, now=NOW).total == 2
    assert store.log_stats(service="Kibana", window_minutes=15, now=NOW).total == 1


def test_a_service_field_wins_over_the_host_where_a_line_has_one():
    import json

    from safety_governor.adapters.store_elastic import MAPPINGS_DIR

    ours = json.loads((MAPPINGS_DIR / f"{INDEX}.json").read_text())  # the index load_to_elastic.py creates
    stamp = NOW.isoformat().replace("+00:00", "Z")
    lines = {  # our loader's lines carry `timestamp` and `service`
        "ours-1": {"timestamp": stamp, "service": "payments-api", "host": "www.elastic.co", "request": "/pay",
                   "response": "503", "bytes": 10},
        "ours-2": {"timestamp": stamp, "host": "www.elastic.co", "request": "/downloads", "response": "200",
                   "bytes": 20},
    }
    with FakeElasticsearch(mappings={INDEX: ours}, runtime_scripts={RESPONSE_CODE_SCRIPT: response_code}) as es:
        es.docs[INDEX] = lines
        store = store_on(es)
        payments = store.log_stats(service="payments-api", window_minutes=15, now=NOW)
        downloads = store.log_stats(service="elastic-downloads", window_minutes=15, now=NOW)
    assert (payments.total, payments.errors_5xx) == (1, 1)
    assert (downloads.total, downloads.errors_5xx) == (1, 0)  # the line with a service is not the host's


def test_the_mapping_is_configured_from_the_environment_and_bad_values_are_one_line_errors():
    settings = Settings.from_env({"ELASTIC_URL": "http://127.0.0.1:9", "ELASTIC_LOG_SERVICE": "service.name,path",
                                  "ELASTIC_LOG_SERVICE_HOSTS": "shop.example.com=checkout-web"})
    store = ElasticStore.from_settings(settings)
    assert store.log_service.sources == ("service.name", "path")
    assert dict(store.log_service.hosts) == {"shop.example.com": "checkout-web"}
    with pytest.raises(InputError, match="ELASTIC_LOG_SERVICE_HOSTS: expected host=service"):
        LogService.parse("host", "www.elastic.co")
    with pytest.raises(InputError, match="ELASTIC_LOG_SERVICE: 'service name' is not a field name"):
        LogService.parse("service name", "")


def test_the_sample_data_stream_refuses_index_writes_as_elasticsearch_does(sample_logs):
    client = Elasticsearch(sample_logs.url, api_key=API_KEY, max_retries=0)
    reply = client.bulk(operations=[{"index": {"_index": INDEX, "_id": "x"}}, {"@timestamp": "2026-12-01T12:00:00Z"}])
    assert reply["items"][0]["index"]["error"]["reason"] == (
        "only write ops with an op_type of create are allowed in data streams")

"""``mappings/``: one Elasticsearch mapping per index, consistent with the queries the store sends."""

from __future__ import annotations

import json

import pytest

from safety_governor.adapters.store_elastic import MAPPINGS_DIR, SEQ_FIELD, TEXT_FIELDS
from safety_governor.adapters.store_sqlite import KEYWORD_FIELDS
from safety_governor.config import ELASTIC_INDEXES


def mapping(logical: str) -> dict:
    return json.loads((MAPPINGS_DIR / f"{ELASTIC_INDEXES[logical]}.json").read_text())


def field(props: dict, dotted: str) -> dict:
    node: dict = {"properties": props}
    for part in dotted.split("."):
        node = node.get("properties", {}).get(part) or node.get("fields", {})[part]
    return node


def test_there_is_exactly_one_mapping_file_per_index():
    files = sorted(p.stem for p in MAPPINGS_DIR.glob("*.json"))
    assert files == sorted(ELASTIC_INDEXES.values())
    for logical in ELASTIC_INDEXES:
        body = mapping(logical)
        assert set(body) <= {"settings", "mappings"}
        assert body["mappings"]["_meta"]["logical_index"] == logical


def test_the_logs_mapping_is_the_kibana_sample_shape_plus_our_service():
    props = mapping("logs")["mappings"]["properties"]
    assert props["response"]["type"] == "text"
    assert props["response"]["fields"]["keyword"]["type"] == "keyword"
    assert props["timestamp"]["type"] == "date" and props["@timestamp"]["type"] == "date"
    assert props["service"]["type"] == "keyword"
    assert field(props, "request.keyword")["type"] == "keyword"
    assert props["bytes"]["type"] == "long"


@pytest.mark.parametrize("logical", ["runbooks", "evidence", "policies", "incidents"])
def test_searched_fields_are_text_and_filter_fields_are_lower_cased_keywords(logical):
    body = mapping(logical)
    props = body["mappings"]["properties"]
    for name in TEXT_FIELDS[logical]:
        assert field(props, name)["type"] == "text", name
        assert field(props, name)["analyzer"] == "sg_text", name
    for name in KEYWORD_FIELDS:
        es_name = "recommended_action" if (logical == "runbooks" and name == "action") else name
        if es_name in props:
            assert props[es_name] | {"fields": None} == {"type": "keyword", "normalizer": "sg_keyword",
                                                         "fields": None}, es_name
    assert props["id"]["type"] == "keyword"  # find() and search() sort on it
    analysis = body["settings"]["analysis"]
    assert analysis["normalizer"]["sg_keyword"]["filter"] == ["lowercase", "trim"]


@pytest.mark.parametrize("logical", ["workflow_events", "action_executions"])
def test_event_indices_index_only_lookup_fields_and_the_insertion_order(logical):
    m = mapping(logical)["mappings"]
    assert m["dynamic"] is False  # no event body can fail on a mapping conflict
    assert m["properties"][SEQ_FIELD]["type"] == "long"
    assert m["properties"]["incident_id"]["type"] == m["properties"]["kind"]["type"] == "keyword"


def test_the_claims_index_holds_one_keyword_document_per_incident():
    props = mapping("incident_claims")["mappings"]["properties"]
    assert {"incident_id", "owner", "claimed_at", "token"} <= set(props)

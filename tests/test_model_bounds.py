"""Every id and free-text field is bounded at the model boundary, with an error naming the field."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from safety_governor import cli
from safety_governor.catalogue import CatalogueAction
from safety_governor.models import (
    KNOWLEDGE_MODELS,
    MAX_ID_LENGTH,
    ClaimReport,
    Incident,
    PlanOutput,
    StressReport,
)

INPUT_MODELS: dict[str, type[BaseModel]] = {
    "incident": Incident, "plan": PlanOutput, "stress_report": StressReport, "claim_report": ClaimReport,
    "catalogue_action": CatalogueAction, **{f"knowledge_{k}": v for k, v in KNOWLEDGE_MODELS.items()},
}


def _unbounded(schema: dict[str, Any], defs: dict[str, Any], path: str = "") -> list[str]:
    """Paths of string (and list) schemas with no upper bound, following $refs."""
    if "$ref" in schema:
        return _unbounded(defs[schema["$ref"].split("/")[-1]], defs, path)
    found: list[str] = []
    for key in ("anyOf", "allOf", "oneOf"):
        for sub in schema.get(key, []):
            found += _unbounded(sub, defs, path)
    kind = schema.get("type")
    if kind == "string" and "maxLength" not in schema and "enum" not in schema and "format" not in schema \
            and "const" not in schema and "pattern" not in schema:
        found.append(path)
    if kind == "array":
        found += _unbounded(schema.get("items") or {}, defs, f"{path}[]")
    for name, sub in (schema.get("properties") or {}).items():
        found += _unbounded(sub, defs, f"{path}.{name}")
    return found


@pytest.mark.parametrize("name", INPUT_MODELS)
def test_every_string_field_of_an_input_model_has_a_maximum_length(name):
    schema = INPUT_MODELS[name].model_json_schema()
    assert _unbounded(schema, schema.get("$defs", {})) == []


def test_a_ten_million_character_incident_id_is_refused_naming_the_field_and_the_limit():
    with pytest.raises(ValidationError) as info:
        Incident(id="i" * 10_000_000, service="payments-api", severity="high", summary="p99 up")
    (error,) = info.value.errors()
    assert error["loc"] == ("id",) and f"at most {MAX_ID_LENGTH} characters" in error["msg"]


def test_an_agent_plan_with_an_oversized_claim_is_invalid_not_truncated():
    with pytest.raises(ValidationError, match="key_claims.0"):
        PlanOutput(proposed_action="restart_api_pods", key_claims=["x" * 5000], confidence_initial=7)


def test_assess_on_a_scenario_with_a_huge_incident_id_is_one_line_and_exit_2(tmp_path, capsys):
    path = tmp_path / "huge.json"
    path.write_text(json.dumps({"name": "huge id", "incident": {
        "id": "inc-" + "9" * 1_000_000, "service": "payments-api", "severity": "high", "summary": "p99 up"}}))
    assert cli.main(["assess", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "incident.id" in err and f"at most {MAX_ID_LENGTH} characters" in err
    assert len(err) < 500  # the value itself is not echoed back

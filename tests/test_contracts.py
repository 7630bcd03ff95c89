"""contracts/*.schema.json are generated from the models and must not drift."""

from __future__ import annotations

import json

from safety_governor.contracts import CONTRACTS_DIR, drifted, render_schemas
from safety_governor.models import CONTRACT_MODELS, PlanOutput


def test_contracts_on_disk_equal_the_models():
    assert drifted() == [], "run `python -m safety_governor contracts` and commit the result"


def test_every_contract_model_has_a_schema_file():
    assert {f"{name}.schema.json" for name in CONTRACT_MODELS} == {p.name for p in CONTRACTS_DIR.glob("*.schema.json")}


def test_drift_is_detected(tmp_path):
    for name, text in render_schemas().items():
        (tmp_path / name).write_text(text)
    schema = json.loads((tmp_path / "plan_output.schema.json").read_text())
    schema["required"] = []
    (tmp_path / "plan_output.schema.json").write_text(json.dumps(schema))
    (tmp_path / "stale.schema.json").write_text("{}")
    problems = drifted(tmp_path)
    assert "plan_output.schema.json: differs from the models" in problems
    assert "stale.schema.json: no model generates it" in problems


def test_plan_contract_requires_the_seed_fields():
    schema = PlanOutput.model_json_schema()
    assert {"proposed_action", "confidence_initial"} <= set(schema["required"])
    assert schema["properties"]["confidence_initial"]["maximum"] == 10

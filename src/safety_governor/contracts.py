"""JSON Schemas in ``contracts/``, generated from the pydantic models (never edited by hand)."""

from __future__ import annotations

import json
from pathlib import Path

from .config import PROJECT_ROOT
from .models import CONTRACT_MODELS

CONTRACTS_DIR = PROJECT_ROOT / "contracts"


def render_schemas() -> dict[str, str]:
    """File name → schema text, exactly as written to disk."""
    out = {}
    for name, model in CONTRACT_MODELS.items():
        schema = model.model_json_schema(mode="validation")
        schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": f"{name}.schema.json", **schema}
        out[f"{name}.schema.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out


def write_schemas(directory: Path = CONTRACTS_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for filename, text in render_schemas().items():
        path = directory / filename
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def drifted(directory: Path = CONTRACTS_DIR) -> list[str]:
    """Schema files that are missing, stale or unexpected."""
    expected = render_schemas()
    problems = []
    for filename, text in expected.items():
        path = directory / filename
        if not path.exists():
            problems.append(f"{filename}: missing")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(f"{filename}: differs from the models")
    for path in sorted(directory.glob("*.schema.json")):
        if path.name not in expected:
            problems.append(f"{path.name}: no model generates it")
    return problems

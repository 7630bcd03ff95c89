"""Configuration: the gate's versioned thresholds and the runtime settings.

``GatePolicy`` is the one place the gate's thresholds live; its hash goes into every decision.
``Settings`` is read from the environment (and ``.env``, loaded by the composition root), never
from code; secrets stay out of ``repr`` and logs.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from .errors import ConfigError, InputError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_GATE_POLICY_PATH = PROJECT_ROOT / "config" / "gate_policy.json"
DEFAULT_DATA_DIR = PROJECT_ROOT / "data"
DEFAULT_OUTPUT_DIR = PROJECT_ROOT / "output"


class GatePolicy(BaseModel):
    """The gate's thresholds. Versioned; its canonical hash is recorded in every decision."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str
    contradiction_block_threshold: int = Field(2, ge=1)
    coverage_threshold: float = Field(0.34, ge=0, le=1)
    refusal_confidence_threshold: float = Field(5.0, ge=0, le=10)
    contradiction_penalty: float = Field(0.9, ge=0)
    conflict_penalty: float = Field(1.5, ge=0)
    confidence_floor: float = Field(1.0, ge=0, le=10)
    u_curve_full_context_threshold: float = Field(0.4, ge=0, le=1)
    full_context_severities: tuple[str, ...] = ("high", "critical")
    evidence_top_k: int = Field(3, ge=1, le=50)

    @property
    def config_hash(self) -> str:
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()[:16]


def load_gate_policy(path: Path | None = None) -> GatePolicy:
    path = path or DEFAULT_GATE_POLICY_PATH
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: gate policy file not found") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from exc
    try:
        return GatePolicy.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {describe_validation_error(exc)}") from exc


def describe_validation_error(exc: ValidationError, limit: int = 3) -> str:
    """One line naming the fields pydantic rejected, e.g. ``field 'service': Field required``."""
    parts = []
    for err in exc.errors()[:limit]:
        loc = ".".join(str(p) for p in err.get("loc", ())) or "(root)"
        parts.append(f"field '{loc}': {err.get('msg', 'invalid')}")
    more = len(exc.errors()) - limit
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)


def _csv(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in (value or "").split(",") if v.strip())


class Settings(BaseModel):
    """Runtime settings. Build with ``Settings.from_env()``; tests pass values directly."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    data_dir: Path = DEFAULT_DATA_DIR
    output_dir: Path = DEFAULT_OUTPUT_DIR
    store_path: Path | None = None  # default: <output_dir>/governor.db
    gate_policy_path: Path = DEFAULT_GATE_POLICY_PATH
    agent_backend: str = "offline"
    agent_model: str = "gpt-oss-120b"
    local_user: str = "oncall"
    approvers: tuple[str, ...] = ("oncall",)
    overriders: tuple[str, ...] = ("oncall",)
    cdct_api_url: str | None = None
    ddft_api_url: str | None = None
    eect_api_url: str | None = None
    framework_api_timeout: float = 3.0
    elastic_url: str | None = None
    elastic_api_key: SecretStr | None = None

    @property
    def resolved_store_path(self) -> Path:
        return self.store_path or (self.output_dir / "governor.db")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        simple = {
            "GOVERNOR_DATA_DIR": "data_dir",
            "GOVERNOR_OUTPUT_DIR": "output_dir",
            "GOVERNOR_STORE_PATH": "store_path",
            "GOVERNOR_GATE_POLICY": "gate_policy_path",
            "AGENT_BACKEND": "agent_backend",
            "AGENT_MODEL": "agent_model",
            "GOVERNOR_LOCAL_USER": "local_user",
            "CDCT_API_URL": "cdct_api_url",
            "DDFT_API_URL": "ddft_api_url",
            "EECT_API_URL": "eect_api_url",
            "ELASTIC_URL": "elastic_url",
            "ELASTIC_API_KEY": "elastic_api_key",
        }
        for var, field in simple.items():
            if env.get(var):
                values[field] = env[var]
        local_user = str(values.get("local_user", "oncall"))
        values["approvers"] = _csv(env.get("GOVERNOR_APPROVERS")) or (local_user,)
        values["overriders"] = _csv(env.get("GOVERNOR_OVERRIDERS")) or (local_user,)
        if env.get("FRAMEWORK_API_TIMEOUT"):
            values["framework_api_timeout"] = env["FRAMEWORK_API_TIMEOUT"]
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise InputError(f"environment: {describe_validation_error(exc)}") from exc

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
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from .errors import ConfigError, InputError
from .guardrails import GuardrailConfig

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_GATE_POLICY_PATH = PROJECT_ROOT / "config" / "gate_policy.json"
DEFAULT_APPROVERS_PATH = PROJECT_ROOT / "config" / "approvers.json"
DEFAULT_DATA_DIR = PROJECT_ROOT / "data"
DEFAULT_OUTPUT_DIR = PROJECT_ROOT / "output"
# Logical index -> default Elasticsearch index (the seed's names); ELASTIC_INDEX_<LOGICAL> overrides.
ELASTIC_INDEXES: dict[str, str] = {
    "runbooks": "runbooks-demo",
    "evidence": "evidence-demo",
    "policies": "policies-demo",
    "incidents": "incidents-demo",
    "logs": "kibana_sample_data_logs",
    "workflow_events": "workflow_events",
    "action_executions": "action_executions",
    "incident_claims": "incident_claims",
}


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
    # Below this final confidence the gate does not execute on its own (rule low_confidence).
    execute_confidence_floor: float = Field(5.0, ge=0, le=10)
    # A human reply answers one decision for this long; then the wait closes as expired.
    approval_ttl_seconds: int = Field(1800, ge=1)
    # Kill switch, freeze windows, rate limits, circuit breaker (issue 11): in the hashed config.
    guardrails: GuardrailConfig = Field(default_factory=GuardrailConfig)

    @cached_property
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
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a JSON object of gate thresholds")
    # Every threshold is written down: a key left out would silently take a code default.
    missing = [key for key in GatePolicy.model_fields if key not in raw]
    if missing:
        raise ConfigError(f"{path}: missing key(s) {', '.join(repr(k) for k in missing)}")
    try:
        return GatePolicy.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {describe_validation_error(exc)}") from exc


def describe_validation_error(
    exc: ValidationError, limit: int = 3, *, variables: Mapping[str, str] | None = None
) -> str:
    """One line naming the fields pydantic rejected, e.g. ``field 'service': Field required``.

    With ``variables`` (field -> environment variable) it names the variable the user set instead,
    e.g. ``VERIFY_POLL_SECONDS: Input should be a valid number``; values are never echoed (some
    are secrets).
    """
    parts = []
    for err in exc.errors()[:limit]:
        path = err.get("loc", ())
        if variables is not None and path:
            parts.append(f"{variables.get(str(path[0]), str(path[0]))}: {err.get('msg', 'invalid')}")
            continue
        loc = ".".join(str(p) for p in path) or "(root)"
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
    # Who may approve or override, their roles and how channels know them (authority.py).
    approvers_path: Path = DEFAULT_APPROVERS_PATH
    agent_backend: str = "offline"
    agent_model: str = "gpt-oss-120b"
    local_user: str = "oncall"  # the name the autopilot (a scripted on-call) replies as
    cdct_api_url: str | None = None
    ddft_api_url: str | None = None
    eect_api_url: str | None = None
    framework_api_timeout: float = 3.0
    elastic_url: str | None = None
    elastic_api_key: SecretStr | None = None
    # Live Elastic path (issue 5): Elasticsearch store, Kibana Agent Builder, OpenAI-compatible LLM.
    elastic_cloud_id: str | None = None
    elastic_ca_certs: Path | None = None
    elastic_request_timeout: float = Field(10.0, gt=0, le=600)
    elastic_max_retries: int = Field(3, ge=0, le=10)
    # Per logical index overrides of the physical index name, e.g. (("runbooks", "rb-prod"),).
    elastic_indices: tuple[tuple[str, str], ...] = ()
    elastic_semantic_field: str | None = None
    # Where the service of a log line comes from (adapters/elastic_logs.py): sources in order, and
    # host=service pairs; the defaults work on our loaded logs and on Kibana's sample data.
    elastic_log_service: str = "service,host"
    elastic_log_service_hosts: str = (
        "www.elastic.co=elastic-downloads,artifacts.elastic.co=elastic-downloads,"
        "cdn.elastic-elastic-elastic.org=cdn-edge"
    )
    elastic_kibana_url: str | None = None
    elastic_agent_id: str | None = None
    elastic_connector_id: str | None = None
    openai_base_url: str | None = None
    openai_api_key: SecretStr | None = None
    openai_model: str | None = None
    # The model server's context window in tokens; None: guessed per server (Ollama 4096).
    openai_context_tokens: int | None = Field(None, ge=1024, le=10_000_000)
    agent_connect_timeout: float = Field(5.0, gt=0, le=120)
    agent_read_timeout: float = Field(300.0, gt=0, le=1800)
    agent_max_retries: int = Field(3, ge=0, le=10)
    agent_max_turns: int = Field(8, ge=1, le=50)
    # Execution (issue 7): dry_run renders and records; webhook POSTs signed actions.
    executor: Literal["dry_run", "webhook"] = "dry_run"
    executor_webhook_url: str | None = None
    executor_webhook_secret: SecretStr | None = None
    executor_webhook_timeout: float = Field(5.0, gt=0, le=120)
    executor_webhook_connect_timeout: float = Field(3.0, gt=0, le=60)
    executor_webhook_retries: int = Field(2, ge=0, le=10)
    # Verification after execution: watch the service's error rate for a bounded window.
    verify_window_seconds: float = Field(10.0, ge=0, le=3600)
    verify_poll_seconds: float = Field(1.0, gt=0, le=300)
    verify_error_rate_threshold: float = Field(0.10, ge=0, le=1)
    # Slack approvals (issue 6): Web API with the bot token; Socket Mode (buttons) with the app token.
    slack_bot_token: SecretStr | None = None
    slack_channel: str | None = None
    slack_app_token: SecretStr | None = None
    slack_api_url: str | None = None
    slack_approvers: tuple[str, ...] = ()
    slack_overriders: tuple[str, ...] = ()
    slack_admin_user_id: str | None = None
    # Least seconds between two conversations.replies calls, all threads together: Slack's Tier 1
    # (commercially distributed apps outside the Marketplace) allows one a minute.
    slack_poll_seconds: float = Field(60.0, gt=0, le=3600)
    slack_catchup_poll_seconds: float = Field(300.0, gt=0, le=86400)
    slack_max_backoff_seconds: float = Field(300.0, gt=0, le=86400)
    # Jira tickets (issue 6): REST API v2 with an email + API token (Jira Cloud).
    jira_url: str | None = None
    jira_email: str | None = None
    jira_api_token: SecretStr | None = None
    jira_project_key: str | None = Field(None, pattern=r"^[A-Z][A-Z0-9_]{0,49}$")
    jira_issue_type: str = "Task"
    jira_timeout: float = Field(10.0, gt=0, le=300)
    jira_retry_seconds: float = Field(60.0, gt=0, le=86400)
    # The incident service (issue 14): agent phases of different incidents run concurrently up to
    # this many; telemetry older than the retention is pruned from the embedded store (0: never).
    agent_concurrency: int = Field(4, ge=1, le=64)
    log_retention_hours: float = Field(24.0, ge=0, le=24 * 365)
    # Audit trail (issue 11): with a key the hash chain is HMAC-SHA256, which nobody without it can recompute.
    audit_hmac_key: SecretStr | None = None

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
            "GOVERNOR_APPROVERS_FILE": "approvers_path",
            "AGENT_BACKEND": "agent_backend",
            "AGENT_MODEL": "agent_model",
            "GOVERNOR_LOCAL_USER": "local_user",
            "CDCT_API_URL": "cdct_api_url",
            "DDFT_API_URL": "ddft_api_url",
            "EECT_API_URL": "eect_api_url",
            "ELASTIC_URL": "elastic_url",
            "ELASTIC_API_KEY": "elastic_api_key",
            "ELASTIC_CLOUD_ID": "elastic_cloud_id",
            "ELASTIC_CA_CERTS": "elastic_ca_certs",
            "ELASTIC_REQUEST_TIMEOUT": "elastic_request_timeout",
            "ELASTIC_MAX_RETRIES": "elastic_max_retries",
            "ELASTIC_SEMANTIC_FIELD": "elastic_semantic_field",
            "ELASTIC_LOG_SERVICE": "elastic_log_service",
            "ELASTIC_LOG_SERVICE_HOSTS": "elastic_log_service_hosts",
            "ELASTIC_KIBANA_URL": "elastic_kibana_url",
            "ELASTIC_AGENT_ID": "elastic_agent_id",
            "ELASTIC_CONNECTOR_ID": "elastic_connector_id",
            "OPENAI_BASE_URL": "openai_base_url",
            "OPENAI_API_KEY": "openai_api_key",
            "OPENAI_MODEL": "openai_model",
            "OPENAI_CONTEXT_TOKENS": "openai_context_tokens",
            "AGENT_CONNECT_TIMEOUT": "agent_connect_timeout",
            "AGENT_READ_TIMEOUT": "agent_read_timeout",
            "AGENT_MAX_RETRIES": "agent_max_retries",
            "AGENT_MAX_TURNS": "agent_max_turns",
            "EXECUTOR": "executor",
            "EXECUTOR_WEBHOOK_URL": "executor_webhook_url",
            "EXECUTOR_WEBHOOK_SECRET": "executor_webhook_secret",
            "EXECUTOR_WEBHOOK_TIMEOUT": "executor_webhook_timeout",
            "EXECUTOR_WEBHOOK_CONNECT_TIMEOUT": "executor_webhook_connect_timeout",
            "EXECUTOR_WEBHOOK_RETRIES": "executor_webhook_retries",
            "VERIFY_WINDOW_SECONDS": "verify_window_seconds",
            "VERIFY_POLL_SECONDS": "verify_poll_seconds",
            "VERIFY_ERROR_RATE_THRESHOLD": "verify_error_rate_threshold",
            "SLACK_BOT_TOKEN": "slack_bot_token",
            "SLACK_CHANNEL": "slack_channel",
            "SLACK_APP_TOKEN": "slack_app_token",
            "SLACK_API_URL": "slack_api_url",
            "SLACK_ADMIN_USER_ID": "slack_admin_user_id",
            "SLACK_POLL_SECONDS": "slack_poll_seconds",
            "SLACK_CATCHUP_POLL_SECONDS": "slack_catchup_poll_seconds",
            "SLACK_MAX_BACKOFF_SECONDS": "slack_max_backoff_seconds",
            "JIRA_URL": "jira_url",
            "JIRA_EMAIL": "jira_email",
            "JIRA_API_TOKEN": "jira_api_token",
            "JIRA_PROJECT_KEY": "jira_project_key",
            "JIRA_ISSUE_TYPE": "jira_issue_type",
            "JIRA_TIMEOUT": "jira_timeout",
            "JIRA_RETRY_SECONDS": "jira_retry_seconds",
            "AGENT_CONCURRENCY": "agent_concurrency",
            "LOG_RETENTION_HOURS": "log_retention_hours",
            "AUDIT_HMAC_KEY": "audit_hmac_key",
        }
        for var, field in simple.items():
            if env.get(var):
                values[field] = env[var]
        # Approvers and overriders come from the approvers file, never from a caller's environment.
        if env.get("FRAMEWORK_API_TIMEOUT"):
            values["framework_api_timeout"] = env["FRAMEWORK_API_TIMEOUT"]
        # Slack user ids (U…), comma-separated; no default: in live mode nobody approves until set.
        values["slack_approvers"] = _csv(env.get("SLACK_APPROVERS"))
        values["slack_overriders"] = _csv(env.get("SLACK_OVERRIDERS"))
        # ELASTIC_INDEX_RUNBOOKS=rb-prod etc.: one variable per logical index (ELASTIC_INDEXES below).
        values["elastic_indices"] = tuple(
            (index, env[var].strip()) for index in ELASTIC_INDEXES
            if (var := f"ELASTIC_INDEX_{index.upper()}") in env and env[var].strip()
        )
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            variables = {field: var for var, field in simple.items()} | {
                "framework_api_timeout": "FRAMEWORK_API_TIMEOUT", "slack_approvers": "SLACK_APPROVERS",
                "slack_overriders": "SLACK_OVERRIDERS", "elastic_indices": "ELASTIC_INDEX_<NAME>",
            }
            raise InputError(f"environment: {describe_validation_error(exc, variables=variables)}") from exc


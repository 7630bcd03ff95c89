"""The composition root: picks the adapters for the CLI, the TUI, the MCP entry and replay.

Only entry points (the CLI, the service runtime, the MCP entry, replay, benchmarks) import it;
nothing it imports imports it back.

Nothing opens a database or a socket at import time; ``build`` does, and tests pass their own
adapters by keyword.
"""

from __future__ import annotations

import sys
from typing import Any

from .adapters.audit_jsonl import JsonlAudit
from .adapters.executor_dryrun import DryRunExecutor
from .adapters.executor_webhook import WebhookExecutor
from .adapters.framework_scores import BundledScores, HostedScores
from .adapters.store_sqlite import SQLiteStore
from .agents.offline import OfflineAgent
from .approvals import ApprovalPolicy
from .catalogue import ActionCatalogue
from .config import GatePolicy, Settings, load_gate_policy
from .errors import ConfigError, InputError
from .governor import Governor
from .knowledge import CORE_INDICES, LoadReport, load_knowledge_file, seed_store
from .pipeline import ReliabilityLayerAgent
from .ports import (
    AgentBackend,
    ApprovalChannel,
    AuditSink,
    Executor,
    ScoreProvider,
    Store,
    TicketPort,
    ToolPort,
)
from .tools import GovernorTools, LocalToolPort

TOOL_TRANSPORTS = ("local", "mcp-inprocess")
AGENT_BACKENDS = ("offline", "kibana", "openai")


def open_store(settings: Settings) -> Store:
    """Elasticsearch when ``ELASTIC_URL`` or ``ELASTIC_CLOUD_ID`` is set, else the embedded store."""
    if settings.elastic_url or settings.elastic_cloud_id:
        from .adapters.store_elastic import ElasticStore

        return ElasticStore.from_settings(settings)
    return SQLiteStore(settings.resolved_store_path)


def audit_key(settings: Settings) -> bytes | None:
    """``AUDIT_HMAC_KEY`` as bytes, or ``None`` (plain SHA-256 chain)."""
    key = settings.audit_hmac_key.get_secret_value() if settings.audit_hmac_key else ""
    return key.encode("utf-8") if key else None


def open_audit(settings: Settings, policy: GatePolicy | None = None, *, instance: str | None = None) -> JsonlAudit:
    """The JSONL audit trail in ``settings.output_dir``: its genesis records name this instance and
    the gate config hash; ``AUDIT_HMAC_KEY`` makes the chain an HMAC chain."""
    config_hash = (policy or load_gate_policy(settings.gate_policy_path)).config_hash
    return JsonlAudit(settings.output_dir, instance=instance, config_hash=config_hash, hmac_key=audit_key(settings))


def audit_status(settings: Settings, audit: AuditSink) -> tuple[bool, str]:
    """(ok, one line) on the audit trail's chain for a status panel, checked now."""
    from .audit_chain import status_line

    return status_line(settings.output_dir, audit_key(settings), getattr(audit, "warnings", ()))


def seed_if_empty(store: Store, settings: Settings) -> LoadReport | None:
    """Seed an empty embedded store from ``data/`` (the knowledge indices, as the dashboard does;
    no logs or incidents). Returns the load report, or ``None`` when the store already holds
    knowledge or is not the embedded one (Elasticsearch is loaded with ``load-data``)."""
    if not isinstance(store, SQLiteStore) or any(store.count(index) for index in CORE_INDICES):
        return None
    knowledge = load_knowledge_file(settings.data_dir / "sample_data.json")
    return seed_store(store, {**knowledge, "logs": [], "incidents": []}, source=str(settings.data_dir))


def build_scores(settings: Settings) -> ScoreProvider:
    table = BundledScores(settings.data_dir / "model_profiles.json")
    if settings.cdct_api_url or settings.ddft_api_url or settings.eect_api_url:
        return HostedScores(table, cdct_url=settings.cdct_api_url, ddft_url=settings.ddft_api_url,
                            eect_url=settings.eect_api_url, timeout=settings.framework_api_timeout)
    return table


def _require(backend: str, variables: dict[str, object]) -> None:
    missing = [name for name, value in variables.items() if not value]
    if missing:
        raise ConfigError(f"AGENT_BACKEND={backend} needs {', '.join(missing)} (not set)")


def build_agent(settings: Settings, *, audit: AuditSink | None = None) -> AgentBackend:
    """``AGENT_BACKEND`` = offline (default) | kibana | openai; start-up errors name each missing variable."""
    if settings.agent_backend == "offline":
        return OfflineAgent(model=settings.agent_model)
    from .agents._live import HttpPolicy

    policy = HttpPolicy(connect_timeout=settings.agent_connect_timeout,
                        read_timeout=settings.agent_read_timeout, max_retries=settings.agent_max_retries)
    if settings.agent_backend == "kibana":
        _require("kibana", {"ELASTIC_KIBANA_URL": settings.elastic_kibana_url,
                            "ELASTIC_API_KEY": settings.elastic_api_key,
                            "ELASTIC_AGENT_ID": settings.elastic_agent_id})
        from .agents.kibana import KibanaAgent

        assert settings.elastic_kibana_url and settings.elastic_api_key and settings.elastic_agent_id
        return KibanaAgent(kibana_url=settings.elastic_kibana_url, api_key=settings.elastic_api_key,
                           agent_id=settings.elastic_agent_id, model=settings.agent_model,
                           connector_id=settings.elastic_connector_id, policy=policy, audit=audit)
    if settings.agent_backend == "openai":
        _require("openai", {"OPENAI_BASE_URL": settings.openai_base_url, "OPENAI_MODEL": settings.openai_model})
        from .agents.openai_compat import OpenAICompatAgent

        assert settings.openai_base_url and settings.openai_model
        return OpenAICompatAgent(base_url=settings.openai_base_url, model=settings.openai_model,
                                 api_key=settings.openai_api_key, policy=policy,
                                 max_turns=settings.agent_max_turns,
                                 context_tokens=settings.openai_context_tokens)
    raise ConfigError(
        f"AGENT_BACKEND={settings.agent_backend!r} is not available "
        f"(available: {', '.join(AGENT_BACKENDS)})"
    )


def build_executor(settings: Settings, store: Store, actions: ActionCatalogue) -> Executor:
    """``EXECUTOR=dry_run`` (the default) or ``webhook`` (needs the URL and the secret)."""
    if settings.executor == "webhook":
        if not settings.executor_webhook_url or settings.executor_webhook_secret is None:
            missing = [name for name, value in (("EXECUTOR_WEBHOOK_URL", settings.executor_webhook_url),
                                                ("EXECUTOR_WEBHOOK_SECRET", settings.executor_webhook_secret))
                       if not value]
            raise ConfigError(f"EXECUTOR=webhook needs {', '.join(missing)}")
        return WebhookExecutor(
            store, actions, url=settings.executor_webhook_url, secret=settings.executor_webhook_secret,
            timeout=settings.executor_webhook_timeout, connect_timeout=settings.executor_webhook_connect_timeout,
            retries=settings.executor_webhook_retries,
        )
    return DryRunExecutor(store, actions)


# --- tickets and approvals (issue 6) ---------------------------------------------------------


def _slack_configured(settings: Settings) -> bool:
    return bool(settings.slack_bot_token or settings.slack_channel or settings.slack_app_token)


def _jira_configured(settings: Settings) -> bool:
    return bool(settings.jira_url or settings.jira_email or settings.jira_api_token or settings.jira_project_key)


def _local_tickets(settings: Settings, store: Store) -> TicketPort:
    """The embedded tickets (``SRE-101``…), in the store's own SQLite file when it has one."""
    try:
        from .adapters.tickets_local import LocalTickets
    except ImportError as exc:  # the local adapters belong to the TUI issue
        raise ConfigError("local tickets are not available in this build (adapters/tickets_local.py)") from exc
    path = getattr(store, "path", None) if isinstance(store, SQLiteStore) else settings.resolved_store_path
    return LocalTickets(path or ":memory:")


def local_inbox(store: Store | None = None, *, audit: AuditSink | None = None) -> ApprovalChannel:
    """The local inbox; over a store it also takes replies queued by ``approvals reply``."""
    from .adapters.inbox_local import LocalInbox
    from .approval_state import ApprovalState

    return LocalInbox(state=ApprovalState(store, audit=audit) if store is not None else None)


def build_tickets(settings: Settings, store: Store, *, audit: AuditSink | None = None) -> TicketPort:
    """Jira when any ``JIRA_*`` variable is set (all four are then required), backed by local
    tickets while Jira is down; else the local tickets."""
    if not _jira_configured(settings):
        return _local_tickets(settings, store)
    from .adapters.fallbacks import FallbackTickets
    from .adapters.jira_tickets import JiraTickets, missing_settings
    from .approval_state import ApprovalState

    missing = missing_settings(settings)
    if missing:
        raise ConfigError(f"Jira tickets need {', '.join(missing)} (not set)")
    state = ApprovalState(store, audit=audit)
    return FallbackTickets(JiraTickets.from_settings(settings, state), _local_tickets(settings, store), state)


def build_approval_channel(settings: Settings, store: Store, *, audit: AuditSink | None = None) -> ApprovalChannel:
    """Slack when ``SLACK_BOT_TOKEN``/``SLACK_CHANNEL`` are set, with the local inbox alongside
    (``FallbackApprovalChannel``); else the local inbox. Call ``start()`` on the result (if it
    has one) to connect Socket Mode, and show ``check()`` at start-up: with no
    ``SLACK_APPROVERS``/``SLACK_OVERRIDERS`` it is not ready and every approval is refused."""
    if not _slack_configured(settings):
        return local_inbox(store, audit=audit)
    from .adapters.fallbacks import FallbackApprovalChannel
    from .adapters.slack_approvals import SlackApprovalChannel, missing_settings
    from .approval_state import ApprovalState

    missing = missing_settings(settings)
    if missing:
        raise ConfigError(f"Slack approvals need {', '.join(missing)} (not set)")
    slack = SlackApprovalChannel.from_settings(settings, ApprovalState(store, audit=audit))
    return FallbackApprovalChannel(slack, local_inbox(store, audit=audit))


def build_approval_policy(settings: Settings, *, ttl_seconds: float | None = None) -> ApprovalPolicy:
    """Who may decide, from the approvers file (``config/approvers.json``: users, roles, local OS
    accounts and Slack ids). With Slack configured, ``SLACK_APPROVERS``/``SLACK_OVERRIDERS`` (this
    governor's own environment) add Slack ids; with no Slack principal at all (neither there nor
    in the file), nobody may decide and the governor refuses approvals. ``ttl_seconds`` (default
    the gate policy's ``approval_ttl_seconds``) bounds how long a reply can answer a decision."""
    from .authority import load_approvers

    approvers = load_approvers(settings.approvers_path)
    if ttl_seconds is None:
        ttl_seconds = load_gate_policy(settings.gate_policy_path).approval_ttl_seconds
    if not _slack_configured(settings):
        return approvers.policy(ttl_seconds=ttl_seconds)
    if not (settings.slack_approvers or settings.slack_overriders or approvers.slack_map()):
        return ApprovalPolicy.of((), ())
    return approvers.policy(ttl_seconds=ttl_seconds, extra={"approve": settings.slack_approvers,
                                                            "override": settings.slack_overriders})


def build(
    settings: Settings | None = None,
    *,
    store: Store | None = None,
    agent: AgentBackend | None = None,
    audit: AuditSink | None = None,
    executor: Executor | None = None,
    scores: ScoreProvider | None = None,
    tool_port: ToolPort | None = None,
    policy: GatePolicy | None = None,
    actions: ActionCatalogue | None = None,
    tool_transport: str = "local",
) -> Governor:
    """Wire the application. ``tool_transport`` picks how the agents reach the tools when no
    ``tool_port`` is given: ``local`` (direct calls) or ``mcp-inprocess`` (an MCP client session
    on an in-process MCP server over this governor, the same surface external agents use).
    ``actions`` replaces ``data/actions.json`` (a replay merges scenario entries into it); a
    missing or empty ``actions.json`` is an error naming the file."""
    if tool_transport not in TOOL_TRANSPORTS:
        raise ConfigError(f"tool transport {tool_transport!r} is not one of {', '.join(TOOL_TRANSPORTS)}")
    settings = settings or Settings.from_env()
    policy = policy or load_gate_policy(settings.gate_policy_path)
    if actions is None:
        try:
            actions = ActionCatalogue.load(settings.data_dir / "actions.json")
        except InputError as exc:
            raise ConfigError(str(exc)) from exc
    owned: list[Any] = []
    if store is None:
        store = open_store(settings)
        owned.append(store)
    scores = scores or build_scores(settings)
    audit = audit or open_audit(settings, policy)
    tools = GovernorTools(store, scores)
    explicit_port = tool_port is not None
    tool_port = tool_port or LocalToolPort(tools, audit)
    agent = agent or build_agent(settings, audit=audit)
    if executor is None:
        executor = build_executor(settings, store, actions)
        if hasattr(executor, "close"):
            owned.append(executor)
    pipeline = ReliabilityLayerAgent(
        store=store, agent=agent, tools=tool_port, scores=scores, audit=audit, executor=executor,
        policy=policy, actions=actions,
    )
    governor = Governor(settings=settings, policy=policy, store=store, tools=tools, tool_port=tool_port,
                        agent=agent, scores=scores, audit=audit, executor=executor,
                        pipeline=pipeline, actions=actions, _owned=owned)
    if tool_transport == "mcp-inprocess" and not explicit_port:
        use_mcp_tool_port(governor)
    return governor


def use_mcp_tool_port(governor: Governor) -> ToolPort:
    """Route the pipeline's tool calls through an in-process MCP client session, on an MCP server
    built over ``governor``; the session closes with the governor, before its store."""
    port = in_process_port(governor)
    governor.tool_port = port
    governor.pipeline.tools = port
    governor._owned.insert(0, port)
    return port


def in_process_port(governor: Governor, *, timeout: float | None = None) -> ToolPort:
    """An MCP client session (``MCPToolPort``) on an in-process MCP server built over ``governor``."""
    from .mcp_client import DEFAULT_TIMEOUT, MCPToolPort
    from .mcp_server import build_server

    return MCPToolPort.in_process(build_server(governor), audit=governor.audit,
                                  timeout=DEFAULT_TIMEOUT if timeout is None else timeout)


def build_mcp_server(settings: Settings | None = None, *, token: str | None = None,
                     public_url: str | None = None) -> Any:
    """The MCP server over a governor built from ``settings`` (default ``Settings.from_env()``),
    which the server owns: the store opens here, once, and ``server.close()`` closes it. No agent
    backend is built: the server never converses with an agent; it only needs the configured
    model's name (for evaluate_plan's confidence), so a live agent's settings are not required."""
    from .mcp_server import build_server

    settings = settings or Settings.from_env()
    governor = build(settings, agent=OfflineAgent(model=settings.agent_model))
    try:
        seeded = seed_if_empty(governor.store, settings)
        if seeded is not None:  # stdout may carry MCP messages: say it on stderr
            counts = ", ".join(f"{n} {index}" for index, n in seeded.counts.items() if n)
            print(f"safety-governor MCP: the embedded store {settings.resolved_store_path} was empty; "
                  f"seeded it from {seeded.source} ({counts})", file=sys.stderr)
        return build_server(governor, owns_governor=True, token=token, public_url=public_url)
    except BaseException:
        governor.close()
        raise

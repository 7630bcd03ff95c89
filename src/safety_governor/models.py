"""Pydantic models: the single source of truth for every contract in the pipeline.

The JSON Schemas in ``contracts/`` are generated from these classes
(``python -m safety_governor contracts``) and a test keeps them equal.

Two kinds of model live here:

* what an agent (an LLM, or the offline agent) returns: ``PlanOutput`` and ``StressReport``.
  They are untrusted: the pipeline validates them and Python re-derives every number the gate reads.
* what Python derives: ``StressOutput`` (grounded evidence), ``CompressOutput``, ``GateOutput``,
  ``RunRecord``. These are written to the audit trail.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from .redaction import redact_text

Severity = Literal["low", "medium", "high", "critical"]
Stance = Literal["support", "contradict", "neutral"]
Decision = Literal["execute", "block_and_escalate"]
# ``forbidden``: no reply can run it (catalogue automation ``never``); it is done by hand, outside.
ApprovalRequired = Literal["none", "approve", "force_override", "forbidden"]
# Catalogue facts: how far the governor may automate an action, and what it can break.
Automation = Literal["auto", "approval", "never"]
Risk = Literal["low", "medium", "high"]
ContextMode = Literal["full_context", "compressed_context"]
RuleId = Literal[
    "policy_conflict",
    "contradictions",
    "insufficient_evidence",
    "critical_severity",
    "invalid_output",
    "unknown_action",
    "requires_approval",
    "forbidden_action",
    "low_confidence",
    "knowledge_unavailable",
    "frozen",
    "change_freeze",
    "rate_limited",
    "circuit_open",
]
NonEmptyStr = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
# An agent's confidence: a JSON number 0-10. Strict, so ``true`` or ``"10"`` is invalid output,
# never coerced into a confidence.
Confidence = Annotated[float, Field(strict=True, ge=0, le=10)]

# Every id and free-text field is bounded here, at the model boundary: an unbounded value (a
# 10-million-character incident id) would otherwise travel into the store, the audit trail, Slack
# and Jira. The limits are generous for real use; the error names the field and the limit.
MAX_ID_LENGTH = 200  # ids, services, actions, sources, users
MAX_TEXT_LENGTH = 4000  # a summary, a claim, a rule, an evidence passage, a log line
MAX_LONG_TEXT_LENGTH = 20000  # a runbook body, an agent's rationale
MAX_LIST_LENGTH = 100  # cited ids, symptoms, steps, blocked actions
Identifier = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_ID_LENGTH)]
OptionalIdentifier = Annotated[str, StringConstraints(strip_whitespace=True, max_length=MAX_ID_LENGTH)]
NonEmptyText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_TEXT_LENGTH)]
Text = Annotated[str, StringConstraints(max_length=MAX_TEXT_LENGTH)]
NonEmptyLongText = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_LONG_TEXT_LENGTH)
]
LongText = Annotated[str, StringConstraints(max_length=MAX_LONG_TEXT_LENGTH)]

SEVERITIES: tuple[str, ...] = ("low", "medium", "high", "critical")
RULE_IDS: tuple[str, ...] = RuleId.__args__  # type: ignore[attr-defined]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


def normalise_action(action: str) -> str:
    """Action ids compare case-insensitively and ignore surrounding blanks."""
    return action.strip().lower()


class Incident(_Model):
    """An incident the governor is asked to remediate."""

    id: Identifier
    service: Identifier
    severity: Severity
    summary: NonEmptyText
    symptoms: Text = ""
    pattern: Text | None = None
    source: OptionalIdentifier | None = None
    detected_at: datetime | None = None
    created_at: datetime | None = None

    @field_validator("severity", mode="before")
    @classmethod
    def _lower_severity(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("summary", "symptoms", "pattern")
    @classmethod
    def _redact_credentials(cls, value: str | None) -> str | None:
        # An incident is free text from logs and people: a pasted token stops here, before the
        # store, the ticket, the approval request or the audit trail sees it.
        return redact_text(value) if value else value


class GuardrailState(_Model):
    """What the guardrails looked like for one incident when the gate decided: read by Python
    from the store (``guardrails.read_state``); the gate compares it with the policy's limits.
    ``now`` is part of the facts, so the same facts give the same decision."""

    # When the state was read; the gate's clock for windows and cooldowns. Not serialised, so
    # the same guardrail state gives the same decision id whenever it is read.
    now: datetime | None = Field(default=None, exclude=True)
    frozen: bool = False
    frozen_by: str | None = None
    frozen_reason: str | None = None
    frozen_at: datetime | None = None
    service_automatic_executions: int = 0  # on the incident's service in the last hour
    automatic_executions: int = 0  # on every service in the last hour
    last_service_execution_at: datetime | None = None  # any execution, automatic or approved
    failed_verifications_at: list[datetime] = Field(default_factory=list)  # on the service, since its last reset
    breaker_reset_at: datetime | None = None
    failed_same_action: bool = False  # this incident's proposed action already failed verification
    unreadable: str | None = None  # the store could not answer: the gate blocks


class PlanOutput(_Model):
    """The agent's remediation plan (phase 1). Untrusted input."""

    model_config = ConfigDict(extra="ignore")

    proposed_action: Identifier
    rationale: LongText = ""
    key_claims: list[NonEmptyText] = Field(default_factory=list, max_length=20)
    confidence_initial: Confidence
    retrieved_context_ids: list[OptionalIdentifier] = Field(default_factory=list, max_length=MAX_LIST_LENGTH)


class ClaimReport(_Model):
    """What the agent says it found for one claim."""

    model_config = ConfigDict(extra="ignore")

    claim: Text
    supporting_doc_ids: list[OptionalIdentifier] = Field(default_factory=list, max_length=MAX_LIST_LENGTH)
    contradicting_doc_ids: list[OptionalIdentifier] = Field(default_factory=list, max_length=MAX_LIST_LENGTH)


class StressReport(_Model):
    """The agent's stress-test report (phase 2). Untrusted input: Python grounds it."""

    model_config = ConfigDict(extra="ignore")

    claim_results: list[ClaimReport] = Field(default_factory=list, max_length=MAX_LIST_LENGTH)
    policy_conflicts: list[OptionalIdentifier] = Field(default_factory=list, max_length=MAX_LIST_LENGTH)
    fabricated_authority_rejected: bool = False
    confidence_post_stress: Confidence | None = None
    position_after_stress: LongText = ""


class ClaimEvidence(_Model):
    """Grounded evidence for one claim: only documents Python found in the store."""

    claim: str
    support_docs: list[str] = Field(default_factory=list)
    contradiction_docs: list[str] = Field(default_factory=list)
    ungrounded_citations: list[str] = Field(default_factory=list)


class FrameworkScores(_Model):
    """Per-model reliability scores (CDCT / DDFT / EECT), normalised to the published scales."""

    model: str
    hoc: float = 0.0
    ci: float = 0.0
    u_curve_magnitude: float | None = None
    as_score: float = 0.0
    act_rate: float = 0.0
    ecs: float = 0.0  # 0-10 scale; the hosted EECT API's 0-1 values are scaled up at the edge
    source: str = "none"


class LogSummary(_Model):
    """Aggregated live telemetry for a service over a time window.

    ``errors_4xx`` and ``errors_5xx`` are disjoint (400-499 and 500-599), so their sum is every
    failed request and ``error_rate`` is that sum over ``total``.
    """

    service: str | None = Field(None, description="The service counted, or null for all services.")
    window_minutes: int = Field(description="The look-back window in minutes, ending now.")
    total: int = Field(0, description="Requests logged in the window.")
    errors_4xx: int = Field(0, description="Requests answered with a status from 400 to 499 (client errors only).")
    errors_5xx: int = Field(0, description="Requests answered with a status from 500 to 599 (server errors only).")
    error_rate: float = Field(
        0.0, description="(errors_4xx + errors_5xx) / total, 0-1; 0 when nothing was logged."
    )
    avg_bytes: float = Field(0.0, description="Mean response size in bytes.")
    top_failing_paths: list[dict[str, Any]] = Field(
        default_factory=list,
        description="The request paths with the most failed requests (status >= 400), most first: "
                    "{request, errors (4xx + 5xx), errors_5xx}.",
    )

    @classmethod
    def of_counts(
        cls, *, service: str | None, window_minutes: int, total: int, errors_4xx: int, errors_5xx: int,
        avg_bytes: float | None, top_failing_paths: list[dict[str, Any]],
    ) -> LogSummary:
        """The summary from a store's raw counts: both stores derive the rate and rounding here."""
        return cls(
            service=service, window_minutes=window_minutes, total=total,
            errors_4xx=errors_4xx, errors_5xx=errors_5xx,
            error_rate=round((errors_4xx + errors_5xx) / total, 4) if total else 0.0,
            avg_bytes=round(float(avg_bytes or 0.0), 1) if total else 0.0,
            top_failing_paths=top_failing_paths,
        )

    @property
    def errors(self) -> int:
        """Every failed request (4xx + 5xx)."""
        return self.errors_4xx + self.errors_5xx


class StressOutput(_Model):
    """Phase 2 after grounding by Python. Every number here was recomputed from the store."""

    claim_evidence: list[ClaimEvidence] = Field(default_factory=list)
    supporting_doc_ids: list[str] = Field(default_factory=list)
    contradicting_doc_ids: list[str] = Field(default_factory=list)
    contradiction_count: int = Field(ge=0)
    evidence_coverage: float = Field(ge=0, le=1)
    policy_conflicts: list[str] = Field(default_factory=list)
    unconfirmed_policy_conflicts: list[str] = Field(default_factory=list)
    ungrounded_citations: list[str] = Field(default_factory=list)
    fabricated_authority_rejected: bool = False
    confidence_post_stress: float | None = Field(default=None, ge=0, le=10)
    position_after_stress: str = ""
    live_logs: LogSummary | None = None
    framework_scores: FrameworkScores | None = None
    agent_report_valid: bool = True


class CompressOutput(_Model):
    """Phase 3 (Python): context mode and contract validation of the agent's outputs."""

    context_mode: ContextMode
    context_reasons: list[str] = Field(default_factory=list)
    output_contract_valid: bool
    contract_errors: list[str] = Field(default_factory=list)
    required_fields_present: list[str] = Field(default_factory=list)


class ActionFacts(_Model):
    """The catalogue entry of the proposed action for the incident's service, as the executor
    reads it (``catalogue.lookup``). ``catalogued`` is False when the action is not catalogued
    at all or not for this service; ``services`` then says where it does apply, if anywhere."""

    action: str
    catalogued: bool
    services: list[str] = Field(default_factory=list)
    automation: Automation | None = None
    risk: Risk | None = None
    reversible: bool | None = None


class KnowledgeFacts(_Model):
    """Whether the store can vouch for the gate's inputs (DESIGN principle 7). ``problems``
    names each index or file that is empty or unreadable; any problem blocks."""

    problems: list[str] = Field(default_factory=list)

    @property
    def available(self) -> bool:
        return not self.problems


class GateFacts(_Model):
    """What Python looked up through its ports for the gate, besides the agent's outputs: the
    action's consequences and the knowledge base's availability. The pipeline builds it; the gate
    reads it and hashes it into the decision id. Guardrails (issue 11) join here as one more field.

    ``action`` is ``None`` when there is no usable plan (``invalid_output`` covers that)."""

    action: ActionFacts | None = None
    knowledge: KnowledgeFacts = Field(default_factory=KnowledgeFacts)
    # The kill switch, executions, failed verifications read from the store (issue 11); ``None``
    # when the caller has no guardrail state to offer (a bare gate call): no guardrail rule runs.
    guardrails: GuardrailState | None = None
    # Roles the policies blocking this action name (``PolicyDoc.required_roles``): each must sign.
    required_roles: list[str] = Field(default_factory=list)


class GateReason(_Model):
    rule_id: RuleId
    message: str


class GateOutput(_Model):
    """Phase 4 (Python, deterministic): the decision and why."""

    incident_id: str
    decision: Decision
    rule_ids: list[RuleId] = Field(default_factory=list)
    reasons: list[GateReason] = Field(default_factory=list)
    cautions: list[str] = Field(default_factory=list)
    approval_required: ApprovalRequired
    proposed_action: str | None = None
    confidence_initial: float
    confidence_final: float
    confidence_delta: float
    contradiction_count: int
    evidence_coverage: float
    policy_conflicts: list[str] = Field(default_factory=list)
    context_mode: ContextMode
    decision_id: str
    config_hash: str
    facts: GateFacts = Field(default_factory=GateFacts)


class ApprovalEvent(_Model):
    """One reply from a human and what the governor made of it."""

    user: str  # the configured user the reply's principal maps to (or the principal, if unmapped)
    text: str
    command: Literal["APPROVE", "FORCE_OVERRIDE", "HOLD", "REJECT"] | None = None
    outcome: Literal["accepted", "refused", "ignored", "unauthorized", "invalid", "expired"]
    reason: str = ""
    at: datetime | None = None
    channel: str | None = None  # tui, cli, slack, scenario
    os_account: str | None = None  # the operating-system account, for the local channels
    principal: str | None = None  # how the channel named the sender, when it is not the user name
    decision_id: str | None = None  # the decision the reply answers


class ExecutionRecord(_Model):
    """What an executor did (or, for dry runs, would have done)."""

    execution_id: str
    incident_id: str
    decision_id: str
    action: str
    mode: str
    status: Literal["dry_run", "succeeded", "failed", "refused"]
    preview: str
    authorised_by: str
    at: datetime


class RunRecord(_Model):
    """The full pipeline record of one incident: what lands in ``agent_runs.jsonl``."""

    incident: Incident
    agent_backend: str
    model: str
    plan: PlanOutput | None = None
    plan_error: str | None = None
    stress: StressOutput
    stress_error: str | None = None
    compress: CompressOutput
    gate: GateOutput
    approvals: list[ApprovalEvent] = Field(default_factory=list)
    final_state: Literal[
        "executed", "pending_approval", "rejected", "held", "execution_refused", "audit_failed", "expired"
    ]
    executed: bool
    execution: ExecutionRecord | None = None
    tool_calls: int = 0
    started_at: datetime
    finished_at: datetime


class RunbookDoc(BaseModel):
    """A remediation procedure in the ``runbooks`` index."""

    model_config = ConfigDict(extra="allow")

    id: Identifier
    service: Identifier
    title: NonEmptyText
    recommended_action: Identifier
    body: NonEmptyLongText
    source: OptionalIdentifier = "sre-handbook"
    symptoms: list[Text] = Field(default_factory=list, max_length=MAX_LIST_LENGTH)
    steps: list[Text] = Field(default_factory=list, max_length=MAX_LIST_LENGTH)
    # Learned entries start as pending_review and are not retrievable until approved.
    status: Literal["approved", "pending_review", "revoked"] = "approved"
    incident_id: OptionalIdentifier | None = None


class EvidenceDoc(BaseModel):
    """A supporting, contradicting or neutral piece of evidence in the ``evidence`` index."""

    model_config = ConfigDict(extra="allow")

    id: Identifier
    service: Identifier
    stance: Stance
    action: OptionalIdentifier | None = None
    text: NonEmptyText
    source: OptionalIdentifier = "unknown"
    incident_id: OptionalIdentifier | None = None


class PolicyDoc(BaseModel):
    """Actions blocked for a service (or ``*``) at given severities."""

    model_config = ConfigDict(extra="allow")

    id: Identifier
    service: Identifier
    blocked_actions: list[Identifier] = Field(default_factory=list, max_length=MAX_LIST_LENGTH)
    severities: list[Severity] = Field(min_length=1)
    rule: NonEmptyText
    # A block by this policy needs one APPROVE from a distinct user holding each of these roles.
    required_roles: list[Identifier] = Field(default_factory=list, max_length=MAX_LIST_LENGTH)


class LogDoc(BaseModel):
    """An access-log line in the ``kibana_sample_data_logs`` shape, plus our ``service``."""

    model_config = ConfigDict(extra="allow")

    timestamp: datetime
    service: Identifier
    request: Text = "/"
    response: Annotated[str, StringConstraints(pattern=r"^[1-5][0-9][0-9]$")]
    bytes: int = Field(default=0, ge=0)
    host: OptionalIdentifier = ""
    message: Text = ""

    @field_validator("response", mode="before")
    @classmethod
    def _response_as_text(cls, value: Any) -> Any:
        # Elastic maps `response` as text with a keyword sub-field; accept numbers too.
        return str(value) if isinstance(value, int) else value


KNOWLEDGE_MODELS: dict[str, type[BaseModel]] = {
    "runbooks": RunbookDoc,
    "evidence": EvidenceDoc,
    "policies": PolicyDoc,
    "incidents": Incident,
    "logs": LogDoc,
}


CONTRACT_MODELS: dict[str, type[BaseModel]] = {
    "incident": Incident,
    "plan_output": PlanOutput,
    "stress_report": StressReport,
    "stress_output": StressOutput,
    "compress_output": CompressOutput,
    "gate_facts": GateFacts,
    "gate_output": GateOutput,
    "run_record": RunRecord,
}

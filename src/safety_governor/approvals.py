"""The approval rules: what a human reply means, who may say it, and what it allows.

Pure logic, shared by every channel (local inbox, TUI keys, scripted replays, Slack). A command is
the first word of a reply, case-insensitive and whole (``APPROVE``, ``FORCE_OVERRIDE <reason>``,
``HOLD``, ``REJECT``); nothing else counts: not "ok", "yes", "approved" or "I approve".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from .models import ApprovalEvent, ApprovalRequired, Decision

Command = Literal["APPROVE", "FORCE_OVERRIDE", "HOLD", "REJECT"]
COMMANDS: tuple[Command, ...] = ("APPROVE", "FORCE_OVERRIDE", "HOLD", "REJECT")
State = Literal["auto", "pending", "held", "approved", "overridden", "rejected"]


def parse_command(text: str) -> tuple[Command | None, str]:
    """``("FORCE_OVERRIDE", "db team on bridge")`` for ``"force_override db team on bridge"``."""
    words = (text or "").strip().split(maxsplit=1)
    if not words:
        return None, ""
    first = words[0].upper()
    rest = words[1].strip() if len(words) > 1 else ""
    for command in COMMANDS:
        if first == command:
            return command, rest
    return None, rest


@dataclass(frozen=True)
class ApprovalPolicy:
    """Who counts. Approvers may APPROVE, HOLD and REJECT; overriders may also FORCE_OVERRIDE."""

    approvers: frozenset[str]
    overriders: frozenset[str]

    @classmethod
    def of(cls, approvers: list[str] | tuple[str, ...], overriders: list[str] | tuple[str, ...]) -> ApprovalPolicy:
        return cls(frozenset(approvers), frozenset(overriders))

    def may_decide(self, user: str) -> bool:
        return user in self.approvers or user in self.overriders

    def may_override(self, user: str) -> bool:
        return user in self.overriders


FORBIDDEN_TEXT = (
    "refused: the action catalogue marks this action 'never'; the governor does not run it whatever "
    "anyone replies. If it must happen, do it by hand, outside the governor."
)


def refusal_explanation(incident_id: str, severity: str, confidence: float, threshold: float) -> str:
    """The deterministic explanation of a refused APPROVE (the fallback when no agent writes one)."""
    if severity == "critical":
        why = "the incident is critical"
    else:
        why = f"final confidence {confidence:.2f} is below the refusal threshold {threshold:.1f}"
    return (
        f"APPROVE refused for {incident_id}: {why}. Only FORCE_OVERRIDE <reason> from a configured "
        "overrider proceeds, and the override is logged permanently."
    )


@dataclass
class ApprovalSession:
    """The approval state of one gated incident, fed one reply at a time."""

    incident_id: str
    decision: Decision
    approval_required: ApprovalRequired
    policy: ApprovalPolicy
    refusal_text: str = ""
    # Builds the refusal text on the first refused APPROVE (a live agent may be asked to explain).
    explainer: Callable[[], str] | None = None
    state: State = "pending"
    events: list[ApprovalEvent] = field(default_factory=list)
    authorised_by: str | None = None
    override_reason: str | None = None

    def __post_init__(self) -> None:
        if self.decision == "execute":
            self.state = "auto"
            self.authorised_by = "gate"

    @property
    def may_execute(self) -> bool:
        return self.state in ("auto", "approved", "overridden")

    @property
    def closed(self) -> bool:
        return self.state == "rejected"

    @property
    def approve_refused(self) -> bool:
        return any(e.command == "APPROVE" and e.outcome == "refused" for e in self.events)

    def apply(self, user: str, text: str, at: datetime | None = None) -> ApprovalEvent:
        command, rest = parse_command(text)
        outcome, reason = self._judge(user, command, rest)
        event = ApprovalEvent(user=user, text=text, command=command, outcome=outcome, reason=reason, at=at)
        self.events.append(event)
        return event

    def _judge(self, user: str, command: Command | None, rest: str) -> tuple[
        Literal["accepted", "refused", "ignored", "unauthorized", "invalid"], str
    ]:
        if command is None:
            return "ignored", "not a command: the first word must be APPROVE, FORCE_OVERRIDE, HOLD or REJECT"
        if not self.policy.may_decide(user):
            return "unauthorized", f"{user} is not a configured approver"
        if self.state == "rejected":
            return "ignored", "incident already rejected; nothing will execute"
        if self.approval_required == "forbidden" and command in ("APPROVE", "FORCE_OVERRIDE"):
            return "refused", FORBIDDEN_TEXT
        if self.state in ("approved", "overridden") and command in ("APPROVE", "FORCE_OVERRIDE"):
            return "ignored", f"already {self.state}"
        if command == "REJECT":
            self.state = "rejected"
            self.authorised_by = None
            return "accepted", "rejected: closed without executing"
        if command == "HOLD":
            if self.state in ("approved", "overridden"):
                return "ignored", f"already {self.state}; HOLD arrived too late"
            self.state = "held"
            self.authorised_by = None
            return "accepted", "held: nothing executes until APPROVE (or FORCE_OVERRIDE) or REJECT"
        if command == "FORCE_OVERRIDE":
            if not self.policy.may_override(user):
                return "unauthorized", f"{user} may approve but is not a configured overrider"
            if not rest:
                return "invalid", "FORCE_OVERRIDE needs a reason: FORCE_OVERRIDE <reason>"
            self.state = "overridden"
            self.authorised_by = user
            self.override_reason = rest
            return "accepted", f"override by {user}: {rest}"
        # APPROVE
        if self.approval_required == "force_override":
            if not self.refusal_text and self.explainer is not None:
                self.refusal_text = self.explainer()
            return "refused", self.refusal_text or "APPROVE is not enough here; FORCE_OVERRIDE <reason> is required"
        self.state = "approved"
        self.authorised_by = user
        return "accepted", f"approved by {user}"

"""The approval rules: what a human reply means, who may say it, and what it allows.

Pure logic, shared by every channel (local inbox, TUI keys, CLI, scripted replays, Slack). A
command is the first word of a reply, compared case-insensitively in ASCII only (no Unicode case
folding: ``FORCE_OVERRıDE`` with a dotless ı is not a command) and whole (``APPROVE``,
``FORCE_OVERRIDE <reason>``, ``HOLD``, ``REJECT``); nothing else counts: not "ok", "yes",
"approved" or "I approve". A ``FORCE_OVERRIDE`` reason needs ``MIN_REASON_CHARS`` visible
characters once whitespace and format characters (zero-width spaces, Unicode category Cf) are
removed.

Authority: a reply comes from a principal as the channel knows it (a configured user name in a
scripted replay, ``os:<account>`` for the local channels, a Slack user id); ``ApprovalPolicy``
maps it to a configured user, and only configured users count. A reply answers one decision: a
reply naming another decision is refused, and one arriving ``ttl_seconds`` or more after the
decision finds the wait expired (nothing runs). When the gate's policy conflict names
``required_roles``, one APPROVE from a distinct user per role is needed before anything runs;
FORCE_OVERRIDE by an overrider is still the break-glass path.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from .models import ApprovalEvent, ApprovalRequired, Decision

Command = Literal["APPROVE", "FORCE_OVERRIDE", "HOLD", "REJECT"]
COMMANDS: tuple[Command, ...] = ("APPROVE", "FORCE_OVERRIDE", "HOLD", "REJECT")
State = Literal["auto", "pending", "held", "approved", "overridden", "rejected", "expired"]
Outcome = Literal["accepted", "refused", "ignored", "unauthorized", "invalid", "expired"]
MIN_REASON_CHARS = 8
OS_PREFIX = "os:"
CHANNELS = ("tui", "cli", "slack", "scenario")


def parse_command(text: str) -> tuple[Command | None, str]:
    """``("FORCE_OVERRIDE", "db team on bridge")`` for ``"force_override db team on bridge"``."""
    words = (text or "").strip().split(maxsplit=1)
    if not words:
        return None, ""
    first = words[0]
    rest = words[1].strip() if len(words) > 1 else ""
    # ASCII only: str.upper() would fold "ı" (dotless i) to "I" and "ſ" to "S".
    if first.isascii() and first.upper() in COMMANDS:
        return first.upper(), rest  # type: ignore[return-value]
    return None, rest


def visible_length(text: str) -> int:
    """Characters left after removing whitespace and format characters (category Cf: zero-width
    spaces and joiners, direction marks, the BOM)."""
    return sum(1 for ch in text if not ch.isspace() and unicodedata.category(ch) != "Cf")


@dataclass(frozen=True)
class ApprovalPolicy:
    """Who counts. Approvers may APPROVE, HOLD and REJECT; overriders may also FORCE_OVERRIDE.

    Args:
        approvers, overriders: configured user names.
        roles: each user's roles (``dba``, ``incident_commander``, …).
        aliases: principal -> user: Slack user ids, ``os:<account>`` local accounts (``os:*`` maps
            every local account not listed to one user).
        ttl_seconds: how long a reply can answer a decision (``None``: no expiry).
    """

    approvers: frozenset[str]
    overriders: frozenset[str]
    roles: Mapping[str, frozenset[str]] = field(default_factory=dict)
    aliases: Mapping[str, str] = field(default_factory=dict)
    ttl_seconds: float | None = None

    @classmethod
    def of(
        cls,
        approvers: Iterable[str],
        overriders: Iterable[str],
        *,
        roles: Mapping[str, Iterable[str]] | None = None,
        aliases: Mapping[str, str] | None = None,
        ttl_seconds: float | None = None,
    ) -> ApprovalPolicy:
        return cls(frozenset(approvers), frozenset(overriders),
                   {u: frozenset(r) for u, r in (roles or {}).items()}, dict(aliases or {}), ttl_seconds)

    def user_of(self, principal: str) -> str:
        """The configured user a principal maps to (itself when it is a user name)."""
        if principal in self.aliases:
            return self.aliases[principal]
        if principal.startswith(OS_PREFIX) and f"{OS_PREFIX}*" in self.aliases:
            return self.aliases[f"{OS_PREFIX}*"]
        return principal

    def may_decide(self, user: str) -> bool:
        user = self.user_of(user)
        return user in self.approvers or user in self.overriders

    def may_override(self, user: str) -> bool:
        return self.user_of(user) in self.overriders

    def roles_of(self, user: str) -> frozenset[str]:
        return self.roles.get(self.user_of(user), frozenset())


@dataclass(frozen=True)
class ScriptedReply:
    """A reply with its time after the decision (replays, the CLI's ``assess``)."""

    user: str
    text: str
    after_seconds: float = 0.0
    channel: str = "scenario"


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


FORBIDDEN_TEXT = (
    "refused: the action catalogue marks this action 'never'; the governor does not run it whatever "
    "anyone replies. If it must happen, do it by hand, outside the governor."
)


def role_assignment(required: Iterable[str], signers: Mapping[str, frozenset[str]]) -> dict[str, str]:
    """The largest assignment role -> distinct signer (each user signs at most one role), found by
    augmenting paths; ``signers`` maps each approving user to the roles they hold."""
    role_of: dict[str, str] = {}  # user -> the role they sign

    def place(role: str, seen: set[str]) -> bool:
        for user, held in sorted(signers.items()):
            if role in held and user not in seen:
                seen.add(user)
                if user not in role_of or place(role_of[user], seen):
                    role_of[user] = role
                    return True
        return False

    for role in sorted(set(required)):
        place(role, set())
    return {role: user for user, role in role_of.items()}


@dataclass
class ApprovalSession:
    """The approval state of one gated incident, fed one reply at a time.

    Args:
        decision_id: the decision the replies answer (a reply naming another one is refused).
        decided_at: when the decision was made; with ``policy.ttl_seconds``, a reply at or after
            ``decided_at + ttl`` expires the wait.
        required_roles: roles that must each sign with an APPROVE from a distinct user.
    """

    incident_id: str
    decision: Decision
    approval_required: ApprovalRequired
    policy: ApprovalPolicy
    refusal_text: str = ""
    # Builds the refusal text on the first refused APPROVE (a live agent may be asked to explain).
    explainer: Callable[[], str] | None = None
    decision_id: str | None = None
    decided_at: datetime | None = None
    required_roles: tuple[str, ...] = ()
    state: State = "pending"
    events: list[ApprovalEvent] = field(default_factory=list)
    authorised_by: str | None = None
    override_reason: str | None = None
    signers: dict[str, frozenset[str]] = field(default_factory=dict)  # approving user -> roles held

    def __post_init__(self) -> None:
        if self.decision == "execute":
            self.state = "auto"
            self.authorised_by = "gate"

    @property
    def may_execute(self) -> bool:
        return self.state in ("auto", "approved", "overridden")

    @property
    def closed(self) -> bool:
        return self.state in ("rejected", "expired")

    @property
    def approve_refused(self) -> bool:
        return any(e.command == "APPROVE" and e.outcome == "refused" for e in self.events)

    def signed_roles(self) -> dict[str, str]:
        """role -> the distinct user who signed it (so far)."""
        return role_assignment(self.required_roles, self.signers)

    def missing_roles(self) -> list[str]:
        signed = self.signed_roles()
        return [r for r in sorted(set(self.required_roles)) if r not in signed]

    def roles_status(self) -> str:
        """``signed: dba (alice); missing: incident_commander`` (empty when no roles are required)."""
        if not self.required_roles:
            return ""
        signed = self.signed_roles()
        done = ", ".join(f"{r} ({u})" for r, u in sorted(signed.items())) or "none"
        missing = ", ".join(self.missing_roles()) or "none"
        return f"roles signed: {done}; missing: {missing}"

    def expired_at(self, at: datetime | None) -> bool:
        """True when ``at`` is ``ttl_seconds`` or more after the decision (a wait then expires)."""
        ttl = self.policy.ttl_seconds
        if ttl is None or at is None or self.decided_at is None:
            return False
        return (at - self.decided_at).total_seconds() >= ttl

    def expire(self) -> bool:
        """Close a wait nobody answered in time; True if it was open (nothing will run)."""
        if self.state in ("pending", "held"):
            self.state = "expired"
            self.authorised_by = None
            return True
        return False

    def apply(
        self,
        user: str,
        text: str,
        at: datetime | None = None,
        *,
        decision_id: str | None = None,
        channel: str | None = None,
    ) -> ApprovalEvent:
        """Judge one reply from ``user`` (a principal: see ``ApprovalPolicy.user_of``)."""
        command, rest = parse_command(text)
        who = self.policy.user_of(user)
        outcome, reason = self._judge(who, command, rest, at, decision_id)
        os_account = user[len(OS_PREFIX):] if user.startswith(OS_PREFIX) else None
        event = ApprovalEvent(user=who, text=text, command=command, outcome=outcome, reason=reason, at=at,
                              channel=channel, os_account=os_account,
                              principal=user if user != who else None, decision_id=decision_id or self.decision_id)
        self.events.append(event)
        return event

    def _judge(
        self, user: str, command: Command | None, rest: str, at: datetime | None, decision_id: str | None
    ) -> tuple[Outcome, str]:
        if command is None:
            return "ignored", "not a command: the first word must be APPROVE, FORCE_OVERRIDE, HOLD or REJECT"
        if decision_id is not None and self.decision_id is not None and decision_id != self.decision_id:
            return "refused", (f"this reply answers decision {decision_id}, not the current one "
                               f"({self.decision_id}); a fresh assessment needs a fresh reply")
        if not self.policy.may_decide(user):
            return "unauthorized", f"{user} is not a configured approver"
        # Only a wait expires (pending, or held): an authorised decision is not undone by the clock.
        if self.state == "expired" or (self.state in ("pending", "held") and self.expired_at(at)):
            self.expire()
            return "expired", (f"the wait expired ({self.policy.ttl_seconds:.0f} s after the decision); "
                               "nothing runs, a fresh assessment is needed")
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
            if visible_length(rest) < MIN_REASON_CHARS:
                return "invalid", (f"FORCE_OVERRIDE needs a reason of at least {MIN_REASON_CHARS} visible "
                                   "characters: FORCE_OVERRIDE <reason>")
            self.state = "overridden"
            self.authorised_by = user
            self.override_reason = rest
            return "accepted", f"override by {user}: {rest}"
        # APPROVE
        if self.approval_required == "force_override":
            if not self.refusal_text and self.explainer is not None:
                self.refusal_text = self.explainer()
            return "refused", self.refusal_text or "APPROVE is not enough here; FORCE_OVERRIDE <reason> is required"
        if self.required_roles:
            return self._sign(user)
        self.state = "approved"
        self.authorised_by = user
        return "accepted", f"approved by {user}"

    def _sign(self, user: str) -> tuple[Outcome, str]:
        """An APPROVE where the blocking policy names roles: it counts as one role's signature."""
        if user in self.signers:
            return "ignored", f"{user} already signed; {self.roles_status()}"
        held = self.policy.roles_of(user) & set(self.required_roles)
        if not held:
            return "unauthorized", (f"{user} holds none of the roles this decision needs "
                                    f"({', '.join(sorted(set(self.required_roles)))}); {self.roles_status()}")
        before = len(self.signed_roles())
        self.signers[user] = frozenset(held)
        if len(self.signed_roles()) == before:
            del self.signers[user]
            return "ignored", f"{user}'s roles are already signed by others; {self.roles_status()}"
        if self.missing_roles():
            return "accepted", f"signed by {user}; {self.roles_status()}"
        self.state = "approved"
        self.authorised_by = ", ".join(sorted(set(self.signed_roles().values())))
        return "accepted", f"approved: every required role signed; {self.roles_status()}"

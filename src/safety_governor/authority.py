"""Who may allow what: the approvers file (``config/approvers.json``) and local identity.

The file names the users, their roles, who may approve and who may override, and how each user
is known on a channel: local operating-system accounts (``os_accounts``; ``"*"`` maps every
account no other user lists) and Slack user ids (``slack_ids``)::

    {"version": "…", "approval_ttl_seconds"?: …,
     "users": {"alice": {"roles": ["dba"], "approve": true, "override": false,
                         "os_accounts": ["alice"], "slack_ids": ["U0123ALICE"]}}}

Authorisation is decided by the governor that holds the wait, with its own copy of this file; a
reply sent from a shell carries only the sender's OS account (read from the kernel's process
credentials, not from ``$USER``), never a name the sender chose. Errors name the file and the key.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .approvals import OS_PREFIX, ApprovalPolicy
from .config import describe_validation_error
from .errors import ConfigError, InputError
from .knowledge import read_json
from .models import NonEmptyStr


class ApproverEntry(BaseModel):
    """One configured user."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    roles: list[NonEmptyStr] = Field(default_factory=list)
    approve: bool = Field(True, strict=True)  # "yes" is not a boolean here
    override: bool = Field(False, strict=True)
    os_accounts: list[NonEmptyStr] = Field(default_factory=list)
    slack_ids: list[NonEmptyStr] = Field(default_factory=list)


class ApproversFile(BaseModel):
    """``config/approvers.json``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: NonEmptyStr
    users: dict[NonEmptyStr, ApproverEntry] = Field(min_length=1)

    def os_account_map(self) -> dict[str, str]:
        """``os:<account>`` (and ``os:*``) -> user; an account listed twice is a configuration error."""
        out: dict[str, str] = {}
        for name, entry in self.users.items():
            for account in entry.os_accounts:
                key = f"{OS_PREFIX}{account}"
                if key in out and out[key] != name:
                    raise ConfigError(f"OS account {account!r} is mapped to both {out[key]} and {name}")
                out[key] = name
        return out

    def slack_map(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for name, entry in self.users.items():
            for slack_id in entry.slack_ids:
                if slack_id in out and out[slack_id] != name:
                    raise ConfigError(f"Slack id {slack_id!r} is mapped to both {out[slack_id]} and {name}")
                out[slack_id] = name
        return out

    def user_for_os_account(self, account: str) -> str | None:
        mapping = self.os_account_map()
        return mapping.get(f"{OS_PREFIX}{account}") or mapping.get(f"{OS_PREFIX}*")

    def policy(self, *, ttl_seconds: float | None = None, extra: Mapping[str, Iterable[str]] | None = None
               ) -> ApprovalPolicy:
        """The approval policy of this file; ``extra`` adds ``approve``/``override`` principals
        named by the governor's own environment (``SLACK_APPROVERS``/``SLACK_OVERRIDERS``)."""
        approvers = {n for n, e in self.users.items() if e.approve or e.override}
        overriders = {n for n, e in self.users.items() if e.override}
        if extra:
            approvers.update(extra.get("approve", ()))
            overriders.update(extra.get("override", ()))
            approvers.update(extra.get("override", ()))
        return ApprovalPolicy.of(approvers, overriders,
                                 roles={n: [r.strip().lower() for r in e.roles] for n, e in self.users.items()},
                                 aliases={**self.os_account_map(), **self.slack_map()}, ttl_seconds=ttl_seconds)


def load_approvers(path: Path) -> ApproversFile:
    """Read and validate the approvers file; errors name the file and the key."""
    try:
        raw: Any = read_json(path)
    except InputError as exc:
        raise ConfigError(str(exc)) from exc
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: expected a JSON object with 'version' and 'users'")
    try:
        parsed = ApproversFile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {describe_validation_error(exc)}") from exc
    try:
        parsed.os_account_map()
        parsed.slack_map()
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return parsed


def os_account() -> str:
    """This process's operating-system account, from its effective uid (not ``$USER``/``$LOGNAME``,
    which any caller can set)."""
    return pwd.getpwuid(os.geteuid()).pw_name


def local_principal() -> str:
    """How the local channels (TUI keys, CLI) name the sender: ``os:<account>``."""
    return f"{OS_PREFIX}{os_account()}"


def check_cli_user(approvers: ApproversFile, requested: str | None) -> tuple[str, str]:
    """``(os_account, user)`` for a CLI caller; ``--user`` is refused unless it names the user the
    caller's own OS account maps to. Raises ``InputError`` (exit 2) otherwise."""
    account = os_account()
    mapped = approvers.user_for_os_account(account)
    if requested is not None and requested.strip() and requested.strip() != mapped:
        raise InputError(f"--user {requested.strip()} refused: OS account {account!r} maps to "
                         f"{mapped or 'no configured user'}; identity comes from the account, not the flag")
    if mapped is None:
        raise InputError(f"OS account {account!r} is not mapped to any user in the approvers file")
    return account, mapped

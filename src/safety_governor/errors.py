"""Exceptions raised by Safety Governor.

    GovernorError
    ├── InputError            bad user input: a file, a field, an argument (CLI exit code 2)
    ├── ConfigError           missing or invalid configuration
    ├── StoreError            the store failed
    │   ├── StoreUnavailable  the store cannot be reached at all
    │   └── StoreCorrupt      the store file is damaged or not a store (CLI exit code 2)
    ├── AgentBackendError     the agent backend failed or returned nothing usable
    ├── ToolCallError         an MCP/SRE tool call failed
    ├── AuditWriteError       the audit trail could not be written: nothing may execute
    ├── ApprovalChannelError  the approval channel (inbox, Slack) failed
    ├── TicketError           the ticket system (local, Jira) failed
    └── ExecutionRefused      an executor refused to run an action

Adapters translate vendor exceptions into these (``raise StoreError(...) from exc``), so the
pipeline fails closed by catching ``GovernorError`` without importing any vendor client.
"""

from __future__ import annotations


class GovernorError(Exception):
    """Base class of every error the governor raises on purpose."""


class InputError(GovernorError):
    """Bad input from a user: a malformed file, a missing field, a wrong argument."""


class ConfigError(GovernorError):
    """Configuration is missing or invalid."""


class StoreError(GovernorError):
    """A store operation failed."""


class StoreUnavailable(StoreError):
    """The store cannot be reached."""


class StoreCorrupt(StoreError):
    """The store file is not a database or is damaged; the message names the file and the fix."""


class AgentBackendError(GovernorError):
    """The agent backend failed or gave nothing usable."""


class ToolCallError(GovernorError):
    """A tool call failed; the message is safe to show to an agent."""


class AuditWriteError(GovernorError):
    """The audit trail could not be written. Nothing may execute after this."""


class ApprovalChannelError(GovernorError):
    """The approval channel failed."""


class TicketError(GovernorError):
    """The ticket system failed (Jira unreachable, refused, or misconfigured)."""


class ExecutionRefused(GovernorError):
    """An executor refused to run an action (not passed, not approved, or not catalogued)."""

"""Keeping secrets out of messages, logs, the store and the audit trail.

Two nets, both applied before anything reaches a file:

* by key: values under secret-looking keys (``token``, ``password``, ``api_key``, …) become
  ``[redacted]`` (``redact``);
* by shape: free text is scanned for common credential patterns (a ``Bearer``/``Basic`` header
  value, ``sk-…`` API keys, AWS ``AKIA…`` key ids, Slack ``xox?-…`` and GitHub ``ghp_…`` tokens,
  JWTs, PEM private keys, a password in a URL or a query string) and each match becomes
  ``[redacted:<kind>]`` (``redact_text``), so a token pasted into an incident, an agent reply or a
  tool argument is not written verbatim anywhere.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

_SECRET_KEY = re.compile(r"(token|secret|password|api[_-]?key|authorization)", re.IGNORECASE)


def _looks_encoded(token: str) -> bool:
    """A header credential has digits, symbols or inner capitals; prose after the word
    ("Basic checks", "bearer authentication") has none."""
    return (any(c.isdigit() or c in "+/=" for c in token)
            or (any(c.isupper() for c in token[1:]) and any(c.islower() for c in token)))


# (kind, pattern, group kept in front of the marker, optional check of the matched secret).
# Order matters: a PEM block or a JWT inside a header value is caught by the first that matches.
_PATTERNS: tuple[tuple[str, re.Pattern[str], int, Callable[[str], bool] | None], ...] = (
    ("private_key", re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----.*?"
                               r"(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----|\Z)", re.DOTALL), 0, None),
    ("bearer_token", re.compile(r"(\bBearer\s+)([A-Za-z0-9\-._~+/]{8,}=*)", re.IGNORECASE), 1, _looks_encoded),
    ("basic_auth", re.compile(r"(\bBasic\s+)([A-Za-z0-9+/]{8,}={0,2})(?![A-Za-z0-9+/=])", re.IGNORECASE), 1,
     _looks_encoded),
    ("jwt", re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.ey[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), 0, None),
    ("api_key", re.compile(r"\bsk[-_][A-Za-z0-9_-]{8,}"), 0, None),
    ("aws_access_key", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), 0, None),
    ("slack_token", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{8,}"), 0, None),
    ("github_token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})"), 0, None),
    ("url_password", re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/\s:@\"']*:)([^@\s/\"']+)(?=@)", re.IGNORECASE), 1, None),
    ("password", re.compile(r"(\b(?:password|passwd|pwd|pass|secret|token|api[_-]?key|apikey|access[_-]?token"
                            r"|client[_-]?secret)=)([^&\s#\"'<>]+)", re.IGNORECASE), 1, None),
)
_HINT = re.compile(r"bearer|basic|eyj|sk[-_]|akia|asia|xox|gh[pousr]_|github_pat_|://|=|-----begin",
                   re.IGNORECASE)


def redact_text(text: str) -> str:
    """``text`` with every credential-shaped substring replaced by ``[redacted:<kind>]``.

    Idempotent: a marker is never matched again.
    """
    if not text or not _HINT.search(text):
        return text
    for kind, pattern, keep, check in _PATTERNS:
        marker = f"[redacted:{kind}]"

        def replace(match: re.Match[str], keep: int = keep, check: Any = check, marker: str = marker) -> str:
            secret = match.group(keep + 1) if keep else match.group(0)
            if secret.startswith("[redacted") or (check is not None and not check(secret)):
                return match.group(0)
            return (match.group(keep) if keep else "") + marker

        text = pattern.sub(replace, text)
    return text


def redact(value: Any) -> Any:
    """A copy with the values under secret-looking keys replaced by ``[redacted]`` and
    credential patterns in every string replaced by ``[redacted:<kind>]``."""
    if isinstance(value, Mapping):
        return {k: ("[redacted]" if _SECRET_KEY.search(str(k)) else redact(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


class RedactingFormatter(logging.Formatter):
    """A log formatter whose output (message, arguments and traceback) passes ``redact_text``."""

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record))


def redact_url(url: str) -> str:
    """The URL without user:password, query or fragment: safe for messages and previews."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "<invalid url>"
    host = parts.hostname or ""
    if port:
        host = f"{host}:{port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))

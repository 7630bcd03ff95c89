"""Keeping secrets out of messages, logs and the audit trail."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

_SECRET_KEY = re.compile(r"(token|secret|password|api[_-]?key|authorization)", re.IGNORECASE)


def redact(value: Any) -> Any:
    """A copy with the values under secret-looking keys replaced by ``[redacted]``."""
    if isinstance(value, Mapping):
        return {k: ("[redacted]" if _SECRET_KEY.search(str(k)) else redact(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    return value


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

"""``Retry-After``: one reading of the header for every HTTP client of the governor.

RFC 9110 section 10.2.3 allows two forms: ``delay-seconds`` (``120``) and an ``HTTP-date``
(``Fri, 31 Dec 1999 23:59:59 GMT``). Slack sends seconds; proxies and webhook receivers may send
either. Used by the Slack channel, the live agents and the webhook executor. Pure standard library.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any


def _utcnow() -> datetime:
    return datetime.now(UTC)


def parse_retry_after(
    value: Any, *, cap: float | None = None, now: Callable[[], datetime] = _utcnow
) -> float | None:
    """Seconds to wait before retrying, from a ``Retry-After`` value; None when absent or unreadable.

    Args:
        value: the header value (a string; a list of strings takes the first).
        cap: the longest wait returned (a far-future date or a huge number is capped to it).
        now: the current UTC time, for the HTTP-date form (tests inject one).

    A date in the past, or a negative number, means "retry now" (0.0).
    """
    if isinstance(value, list | tuple):
        value = value[0] if value else None
    text = str(value).strip() if value is not None else ""
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        if when.tzinfo is None:  # RFC 9110 dates are GMT
            when = when.replace(tzinfo=UTC)
        seconds = (when - now()).total_seconds()
    if math.isnan(seconds):
        return None
    seconds = max(0.0, seconds)
    return min(cap, seconds) if cap is not None else seconds


def retry_after_header(
    headers: Mapping[str, Any] | None, *, cap: float | None = None, now: Callable[[], datetime] = _utcnow
) -> float | None:
    """``parse_retry_after`` of the ``Retry-After`` header in ``headers`` (any letter case)."""
    for name, value in (headers or {}).items():
        if str(name).lower() == "retry-after":
            return parse_retry_after(value, cap=cap, now=now)
    return None

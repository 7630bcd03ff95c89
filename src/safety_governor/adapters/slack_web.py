"""Slack Web API calls for the approval channel: retries, rate limits, and vendor errors mapped.

* **Rate limits**: a 429 asking for a short wait (``Retry-After`` of at most ``rate_limit_max_wait``
  seconds, in either of its forms) is retried in place; a longer one propagates, so the channel
  reschedules that call after ``Retry-After`` instead of blocking the worker thread.
* **A refused connection** is retried once at once (nothing was sent, so a post cannot be doubled).
* **Errors**: ``call`` turns slack-sdk's exceptions into ``SlackUnavailable`` (retry later: Slack
  unreachable, throttling, 5xx, or an ``ok: false`` someone may fix, such as ``not_in_channel``) or
  ``SlackPermanent`` (no retry can fix that one call: the message is gone, the blocks refused).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any
from urllib.error import URLError

from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry import ConnectionErrorRetryHandler, RateLimitErrorRetryHandler, RetryHandler
from slack_sdk.http_retry.builtin_interval_calculators import FixedValueRetryIntervalCalculator

from ..errors import GovernorError
from ..retry_after import retry_after_header

DEFAULT_RETRY_AFTER = 1.0  # Slack's own client waits about a second when a 429 names no delay

# ``ok: false`` answers that no retry can fix for that one call (the message is gone, or the
# update is not allowed); configuration errors (invalid_auth, channel_not_found, not_in_channel)
# stay retryable, because someone may fix them while the incident waits.
PERMANENT_ERRORS = frozenset({"message_not_found", "cant_update_message", "edit_window_closed", "msg_too_long",
                              "invalid_blocks", "no_text"})


class SlackUnavailable(GovernorError):
    """Slack cannot do the call now; retry after ``retry_after`` seconds (or a backoff)."""

    def __init__(self, message: str, *, retry_after: float | None = None, unreachable: bool = False,
                 throttled: bool = False) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.unreachable = unreachable
        self.throttled = throttled


class SlackPermanent(GovernorError):
    """Slack refused the call for good; retrying the same call cannot help."""


class BoundedRateLimitRetryHandler(RateLimitErrorRetryHandler):
    """Retries a 429 in place only when Slack asks for a short wait; a longer ``Retry-After``
    propagates, so the channel reschedules the call instead of sleeping in the worker thread.
    Reads ``Retry-After`` as seconds or as an HTTP-date (slack-sdk's own handler reads seconds only)."""

    def __init__(self, max_retry_count: int = 2, max_wait_seconds: float = 5.0) -> None:
        super().__init__(max_retry_count=max_retry_count)
        self.max_wait_seconds = max_wait_seconds

    @staticmethod
    def _wait(response: Any) -> float:
        wait = retry_after_header(response.headers if response is not None else None)
        return DEFAULT_RETRY_AFTER if wait is None else wait

    def _can_retry(self, *, state: Any, request: Any, response: Any = None, error: Any = None) -> bool:
        if not super()._can_retry(state=state, request=request, response=response, error=error):
            return False
        return self._wait(response) <= self.max_wait_seconds

    def prepare_for_next_attempt(self, *, state: Any, request: Any, response: Any = None, error: Any = None) -> None:
        if response is None:
            raise error
        state.next_attempt_requested = True
        time.sleep(self._wait(response) + random.random() / 10)
        state.increment_current_attempt()


def default_retry_handlers(*, connect_retry_interval: float = 0.5, rate_limit_max_wait: float = 5.0) -> list[RetryHandler]:
    """One quick retry when the connection is refused (nothing was sent, so a post cannot be
    duplicated), and in-place retries of short rate limits."""
    return [
        ConnectionErrorRetryHandler(max_retry_count=1,
                                    interval_calculator=FixedValueRetryIntervalCalculator(connect_retry_interval),
                                    error_types=[URLError]),
        BoundedRateLimitRetryHandler(max_retry_count=2, max_wait_seconds=rate_limit_max_wait),
    ]


def describe(exc: BaseException) -> tuple[str, float | None]:
    """One line for a slack-sdk or socket error, and the ``Retry-After`` wait of a 429."""
    if isinstance(exc, SlackApiError):
        status = exc.response.status_code
        error = exc.response.get("error") if isinstance(exc.response.data, dict) else None
        wait = None
        if status == 429:
            wait = retry_after_header(exc.response.headers)
            wait = DEFAULT_RETRY_AFTER if wait is None else wait
        return f"{error or 'error'} (HTTP {status})", wait
    if isinstance(exc, URLError):
        return f"unreachable ({exc.reason})", None
    return f"unreachable ({type(exc).__name__})", None


def call(method: str, fn: Callable[[], Any]) -> Any:
    """Run one Web API call; vendor errors become ``SlackUnavailable`` / ``SlackPermanent``."""
    try:
        return fn()
    except (SlackClientError, OSError) as exc:
        message, wait = describe(exc)
        if isinstance(exc, SlackApiError) and exc.response.status_code == 200 and \
                exc.response.get("error") in PERMANENT_ERRORS:
            raise SlackPermanent(f"Slack {method}: {message}") from exc
        status = exc.response.status_code if isinstance(exc, SlackApiError) else None
        raise SlackUnavailable(f"Slack {method}: {message}", retry_after=wait, unreachable=status is None,
                               throttled=status is not None and (status == 429 or status >= 500)) from exc

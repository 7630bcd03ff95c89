"""One ``Retry-After`` reading (seconds or an HTTP-date) for Slack, the live agents and the webhook."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from safety_governor.retry_after import parse_retry_after, retry_after_header

NOW = datetime(2026, 12, 2, 6, 0, 0, tzinfo=UTC)


def now() -> datetime:
    return NOW


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("1.5", 1.5),
        ("-3", 0.0),
        ("Wed, 02 Dec 2026 06:00:45 GMT", 45.0),  # RFC 9110 IMF-fixdate
        ("Wednesday, 02-Dec-26 06:01:00 GMT", 60.0),  # obsolete RFC 850 form, still allowed
        ("Wed, 02 Dec 2026 05:59:00 GMT", 0.0),  # a date in the past: retry now
        (["30", "99"], 30.0),
        ("", None),
        (None, None),
        ("soon", None),
        ("nan", None),
    ],
)
def test_retry_after_reads_delay_seconds_and_http_dates(value, seconds):
    assert parse_retry_after(value, now=now) == seconds


def test_retry_after_is_capped_and_found_in_any_header_case():
    assert parse_retry_after("Thu, 01 Jan 2099 00:00:00 GMT", cap=30, now=now) == 30
    assert parse_retry_after("86400", cap=30) == 30
    assert retry_after_header({"retry-after": "Wed, 02 Dec 2026 06:00:10 GMT"}, now=now) == 10.0
    assert retry_after_header({"Retry-After": ["4"]}) == 4.0
    assert retry_after_header({"Content-Type": "application/json"}) is None
    assert retry_after_header(None) is None

"""Retry timing and answer headers: backoff, Retry-After, HTTP dates, rate limits, redirects."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from multidict import CIMultiDict
from yarl import URL

from mirror.retry import (
    MAX_RETRY_AFTER,
    backoff,
    http_date,
    parse_ratelimit,
    parse_retry_after,
    redirect_target,
    retry_after,
    retry_delay,
    same_origin,
)

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def test_backoff_doubles_up_to_a_cap() -> None:
    assert [backoff(attempt) for attempt in range(7)] == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]


@pytest.mark.parametrize(
    ("status", "headers", "attempt", "expected"),
    [
        (500, {}, 0, 0.2),
        (503, {}, 1, 0.4),
        (429, {"Retry-After": "7"}, 0, 7.0),
        (429, {"Retry-After": str(int(MAX_RETRY_AFTER))}, 0, MAX_RETRY_AFTER),
        (429, {"Retry-After": str(int(MAX_RETRY_AFTER) + 1)}, 0, None),
        (429, {}, 0, None),
        (404, {}, 0, None),
        (401, {}, 0, None),
        (500, {}, 2, None),
        (429, {"Retry-After": "1"}, 2, None),
    ],
)
def test_retry_delay(status: int, headers: dict[str, str], attempt: int,
                     expected: float | None) -> None:
    assert retry_delay(status, headers, attempt, 2, NOW) == expected


def test_retry_after_reads_a_date_against_the_answers_own_date() -> None:
    headers = CIMultiDict({"retry-after": "Wed, 01 May 2024 12:00:45 GMT",
                           "date": "Wed, 01 May 2024 12:00:40 GMT"})
    assert retry_after(headers, NOW) == 5
    assert retry_after({"Retry-After": "Wed, 01 May 2024 12:00:45 GMT"}, NOW) == 45
    assert retry_after({"Retry-After": "3", "Date": "garbage"}, NOW) == 3
    assert retry_after({}, NOW) is None


def test_parse_retry_after() -> None:
    assert parse_retry_after("12", NOW) == 12
    assert parse_retry_after(" 12 ", NOW) == 12
    assert parse_retry_after("Wed, 01 May 2024 12:00:45 GMT", NOW) == 45
    assert parse_retry_after("Wed, 01 May 2024 11:00:00 GMT", NOW) == 0
    assert parse_retry_after("soon", NOW) is None
    assert parse_retry_after("-3", NOW) is None


def test_http_date() -> None:
    assert http_date("Wed, 01 May 2024 12:00:00 GMT") == NOW
    assert http_date("Wed, 01 May 2024 14:00:00 +0200") == NOW
    east = http_date("Wed, 01 May 2024 14:00:00 +0200")
    assert east is not None and east.utcoffset() == timedelta(hours=2)
    assert http_date("Wed, 01 May 2024 12:00:00 -0000") == NOW  # "no zone" reads as UTC
    assert http_date("") is None
    assert http_date("yesterday") is None


def test_parse_ratelimit() -> None:
    assert parse_ratelimit("100;w=21600") == 100
    assert parse_ratelimit("76") == 76
    assert parse_ratelimit(" 76 ; w=21600") == 76
    assert parse_ratelimit("") is None
    assert parse_ratelimit("many") is None


def test_redirect_target() -> None:
    here = URL("https://registry.example/v2/library/alpine/blobs/sha256:abc")
    assert redirect_target(here, "https://cdn.example/b?sig=1") == URL(
        "https://cdn.example/b?sig=1")
    assert redirect_target(here, "/v2/other") == URL("https://registry.example/v2/other")
    assert redirect_target(here, "") is None
    assert redirect_target(here, "http://[::1") is None


def test_same_origin() -> None:
    base = URL("https://registry.example")
    assert same_origin(URL("https://registry.example/v2/x"), base)
    assert same_origin(URL("https://registry.example:443/v2/x"), base)
    assert not same_origin(URL("http://registry.example/v2/x"), base)
    assert not same_origin(URL("https://cdn.example/v2/x"), base)
    assert not same_origin(URL("https://registry.example:5000/v2/x"), base)

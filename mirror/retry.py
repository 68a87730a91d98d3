"""When and where to try an upstream again, read from its answer's headers.

Owns the arithmetic of waiting (exponential backoff, `Retry-After` as delay-seconds or an
HTTP date, whether an answer is worth another attempt), Docker Hub's `ratelimit-*` counts,
and where a redirect's `Location` points. Pure and clock-free: callers pass "now" in. It
must not know aiohttp, sessions or metrics; headers arrive as a case-insensitive mapping.
"""

from __future__ import annotations

import email.utils
from collections.abc import Mapping
from datetime import UTC, datetime

from yarl import URL

MAX_RETRY_AFTER = 30.0  # a longer 429 wait is the client's to make, not ours
BACKOFF_BASE = 0.2
BACKOFF_CAP = 5.0


def backoff(attempt: int) -> float:
    """Seconds to wait before retry number `attempt + 1`: 0.2, 0.4, 0.8, ... capped at 5."""
    return min(BACKOFF_BASE * 2.0**attempt, BACKOFF_CAP)


def retry_delay(
    status: int, headers: Mapping[str, str], attempt: int, retries: int, now: datetime
) -> float | None:
    """Seconds to wait before retrying an answer with `status`, or None to give up on it.

    Gives up once `attempt` reaches `retries`; a 5xx waits `backoff(attempt)`; a 429 waits
    its `Retry-After` when that is given and at most MAX_RETRY_AFTER; anything else is final.
    """
    if attempt >= retries:
        return None
    if status >= 500:
        return backoff(attempt)
    if status == 429:
        wait = retry_after(headers, now)
        return wait if wait is not None and wait <= MAX_RETRY_AFTER else None
    return None


def retry_after(headers: Mapping[str, str], now: datetime) -> float | None:
    """`Retry-After` in seconds, or None; an HTTP date is read against the answer's own
    `Date`, or against `now` when the answer has none."""
    value = headers.get("Retry-After")
    if value is None:
        return None
    sent = http_date(headers.get("Date", ""))
    return parse_retry_after(value, sent or now)


def parse_retry_after(value: str, now: datetime) -> float | None:
    """Seconds to wait from a `Retry-After` value (delay-seconds or HTTP date), or None."""
    value = value.strip()
    if value.isdigit():
        return float(value)
    when = http_date(value)
    return None if when is None else max(0.0, (when - now).total_seconds())


def http_date(value: str) -> datetime | None:
    """An HTTP date as an aware datetime (UTC when it names no zone), or None."""
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def parse_ratelimit(value: str) -> float | None:
    """The count in a Docker Hub `ratelimit-*` header such as `100;w=21600`, or None."""
    try:
        return float(value.split(";", 1)[0].strip())
    except ValueError:
        return None


def redirect_target(current: URL, location: str) -> URL | None:
    """Where a `Location` value points from `current`, or None if it is empty or invalid."""
    if not location:
        return None
    try:
        return current.join(URL(location))
    except ValueError:
        return None


def same_origin(a: URL, b: URL) -> bool:
    """True if both URLs have the same scheme, host and port (where credentials may go)."""
    return (a.scheme, a.host, a.port) == (b.scheme, b.host, b.port)

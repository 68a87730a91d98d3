"""What an upstream's failure means to the mirror's client: the spec error for a final
non-2xx answer, or for a connection that failed, each naming the upstream and why.
Also the bounded body reader used for errors, tokens and manifests.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import aiohttp

from mirror.config import UpstreamSettings
from mirror.errors import (
    BlobUnknown,
    Denied,
    ManifestUnknown,
    MirrorError,
    NameUnknown,
    TooManyRequests,
    UpstreamUnavailable,
)
from mirror.retry import retry_after

_ERROR_BODY_LIMIT = 64 * 1024
_NOT_FOUND: dict[str, type[MirrorError]] = {"manifest": ManifestUnknown, "blob": BlobUnknown}


async def answer_error(
    response: aiohttp.ClientResponse,
    answered_by: str,
    target: str,
    kind: str,
    repo: str,
    who: str,
    attempts: int,
) -> MirrorError:
    """The error a final non-2xx answer to `target` means (`answered_by` names the
    upstream, `who` the credentials used); releases the response."""
    status = f"{response.status} {response.reason or ''}".strip()
    answered = f"{answered_by} {status} to {target}"
    try:
        if response.status == 404:
            codes = await _error_codes(response)
            error = NameUnknown if "NAME_UNKNOWN" in codes else _NOT_FOUND.get(kind, NameUnknown)
            return error(f"{answered} ({', '.join(sorted(codes)) or 'not found'})")
        if response.status == 403:
            return Denied(f"{answered}: {who} may not pull {repo!r}")
        if response.status == 429:
            wait = retry_after(response.headers, datetime.now(UTC))
            later = f", retry after {wait:g}s" if wait is not None else ""
            return TooManyRequests(f"{answered}: rate limited{later}", wait)
        if response.status >= 500:
            return UpstreamUnavailable(f"{answered} after {attempts} attempt(s)", 502)
        return UpstreamUnavailable(f"{answered}, which the mirror cannot use", 502)
    finally:
        response.release()


def transport_failure(
    exc: BaseException, where: str, settings: UpstreamSettings, target: str, attempts: int
) -> UpstreamUnavailable:
    """A failed exchange as UpstreamUnavailable: 504 timed out, 503 unreachable, 502."""
    tried = f" after {attempts} attempt(s)" if attempts > 1 else ""
    if isinstance(exc, TimeoutError):
        limits = (
            f"connect timeout {settings.connect_timeout:g}s, "
            f"read timeout {settings.read_timeout:g}s"
        )
        return UpstreamUnavailable(f"{where} timed out on {target}{tried} ({limits})", 504)
    reason = str(exc) or type(exc).__name__
    if isinstance(exc, aiohttp.ClientConnectionError):
        return UpstreamUnavailable(f"{where} is unreachable for {target}{tried}: {reason}", 503)
    return UpstreamUnavailable(f"{where} broke off {target}: {reason}", 502)


async def read_limited(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body, or its first `limit` bytes if it is longer: for manifests, tokens and
    errors, never a blob. Reads until the end, however the body arrives."""
    body = bytearray()
    while len(body) < limit:
        chunk = await response.content.read(limit - len(body))
        if not chunk:
            break
        body += chunk
    return bytes(body)


async def _error_codes(response: aiohttp.ClientResponse) -> set[str]:
    """The `code`s of a distribution-spec error body; empty if there is none to read."""
    try:
        document = json.loads(await read_limited(response, _ERROR_BODY_LIMIT))
        return {str(e["code"]) for e in document["errors"] if isinstance(e, dict) and "code" in e}
    except (ValueError, KeyError, TypeError, aiohttp.ClientError, TimeoutError):
        return set()

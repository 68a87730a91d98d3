"""The upstream registry client: its session, token auth, redirects, retries, error mapping.

Owns everything between "GET this path of that upstream" and a 2xx response: Bearer and
Basic auth (tokens cached per scope), redirects that keep `Authorization` on the
registry's own origin, bounded retries, and failures turned into `errors` that name the
upstream. It must not know the cache: callers decide what a response means.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from mirror import __version__
from mirror.auth import (
    Challenge,
    TokenCache,
    TokenKey,
    basic_authorization,
    parse_token_response,
    pick_challenge,
)
from mirror.config import UpstreamSettings
from mirror.errors import (
    MirrorError,
    TooManyRequests,
    Unauthorized,
    UpstreamUnavailable,
)
from mirror.metrics import Metrics
from mirror.retry import (
    backoff,
    parse_ratelimit,
    redirect_target,
    retry_after,
    retry_delay,
    same_origin,
)
from mirror.upstreamerrors import answer_error, read_limited, transport_failure

log = logging.getLogger(__name__)

MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_TOKEN_BODY_LIMIT = 1024 * 1024


def new_session(settings: UpstreamSettings) -> aiohttp.ClientSession:
    """The one client session for an upstream; the caller closes it.

    Bodies pass through byte for byte (no decompression, `Accept-Encoding: identity`),
    connect and read timeouts come from `settings`, and there is no total timeout
    because a blob may take as long as it takes while bytes keep flowing.
    """
    timeout = aiohttp.ClientTimeout(
        total=None, sock_connect=settings.connect_timeout, sock_read=settings.read_timeout
    )
    headers = {"User-Agent": f"mirror/{__version__}", "Accept-Encoding": "identity"}
    return aiohttp.ClientSession(timeout=timeout, auto_decompress=False, headers=headers)


@dataclass(frozen=True, slots=True)
class _Call:
    method: str
    url: URL
    kind: str
    repo: str
    headers: Mapping[str, str]

    @property
    def target(self) -> str:
        return f"{self.method} {self.url.path}"


class UpstreamClient:
    """Requests to one upstream registry, authenticated the way a real client does it.

    The upstream's last challenge (realm, service) is remembered so that later requests
    carry a token up front instead of paying a 401 round trip. Tokens, passwords and
    `Authorization` values never appear in messages or logs.
    """

    def __init__(
        self,
        settings: UpstreamSettings,
        session: aiohttp.ClientSession,
        tokens: TokenCache,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self.settings = settings
        self.where = f"upstream {settings.name} ({settings.url})"
        self._session = session
        self._tokens = tokens
        self._metrics = metrics
        self._clock = clock
        self._sleep = sleep
        self._base = URL(settings.url.rstrip("/"))
        self._challenge: Challenge | None = None
        self._basic = basic_authorization(settings.username, settings.password)

    @asynccontextmanager
    async def request(
        self,
        method: str,
        path: str,
        *,
        kind: str,
        repo: str,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """Send `method /v2/<path>` upstream and yield its 2xx response; release it on exit.

        `kind` labels metrics (manifest|blob|tags|catalog); `repo` names the token scope
        `repository:<repo>:pull`. Before yielding, retries connection errors, 5xx and
        short 429s, then raises NameUnknown/ManifestUnknown/BlobUnknown (404), Denied
        (403), Unauthorized (401), TooManyRequests (429) or UpstreamUnavailable (502
        broken, 503 unreachable, 504 timed out). A failure while the caller reads the
        body inside the block is raised as UpstreamUnavailable too. Safe to cancel.
        """
        url = URL(f"{self._base}/v2/{path}")
        call = _Call(method, url.with_query(dict(params)) if params else url, kind, repo,
                     dict(headers or {}))
        response = await self._with_retries(call)
        try:
            yield response
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._failure(exc, f"reading the body of {call.target}") from exc
        finally:
            response.release()

    async def _with_retries(self, call: _Call) -> aiohttp.ClientResponse:
        attempt = 0
        while True:
            try:
                response = await self._authorized(call)
            except (aiohttp.ClientError, TimeoutError) as exc:
                retryable = isinstance(exc, aiohttp.ClientConnectionError | TimeoutError)
                if not retryable or attempt >= self.settings.retries:
                    failure = self._failure(exc, call.target, attempt + 1)
                    log.warning("%s", failure.message)
                    raise failure from exc
                delay, reason = backoff(attempt), str(exc) or type(exc).__name__
            else:
                if 200 <= response.status < 300:
                    return response
                retry = retry_delay(response.status, response.headers, attempt,
                                    self.settings.retries, datetime.now(UTC))
                if retry is None:
                    error = await self._error(call, response, attempt + 1)
                    if isinstance(error, UpstreamUnavailable | TooManyRequests):
                        log.warning("%s", error.message)
                    raise error
                response.release()
                delay, reason = retry, f"answered {response.status}"
            log.warning("%s: %s on %s; retry %d of %d in %.1fs", self.where, reason,
                        call.target, attempt + 1, self.settings.retries, delay)
            await self._sleep(delay)
            attempt += 1

    async def _authorized(self, call: _Call) -> aiohttp.ClientResponse:
        """One exchange: credentials up front when the challenge is known, one 401 answered."""
        known = None if self._challenge is None or not call.repo else self._challenge
        authorization = await self._authorization(known, call) if known else None
        response = await self._follow(call, authorization)
        if response.status != 401:
            return response
        challenge = pick_challenge(response.headers.getall("WWW-Authenticate", []))
        response.release()
        if challenge is None:
            raise Unauthorized(f"{self.where} answered 401 to {call.target} without a "
                               "Bearer or Basic challenge the mirror can answer")
        self._challenge = challenge
        authorization = await self._authorization(challenge, call, refused=authorization)
        if authorization is None:
            raise Unauthorized(f"{self.where} wants {challenge.scheme} auth for repository "
                               f"{call.repo!r} and no username/password is configured")
        response = await self._follow(call, authorization)
        if response.status == 401:
            refusal = pick_challenge(response.headers.getall("WWW-Authenticate", []))
            response.release()
            detail = refusal.params.get("error", "") if refusal else ""
            raise Unauthorized(f"{self.where} refused {self._who()} for repository "
                               f"{call.repo!r}" + (f" ({detail})" if detail else ""))
        return response

    async def _authorization(
        self, challenge: Challenge, call: _Call, *, refused: str | None = None
    ) -> str | None:
        """The `Authorization` value answering `challenge`, never the `refused` one, or None
        if the mirror has none."""
        if challenge.scheme == "basic":
            return self._basic
        if challenge.scheme != "bearer" or not challenge.realm:
            return None
        scope = f"repository:{call.repo}:pull" if call.repo else challenge.params.get("scope", "")
        key = TokenKey(challenge.realm, challenge.service, scope)
        sent = refused or ""
        stale = sent.removeprefix("Bearer ") if sent.startswith("Bearer ") else None
        token = await self._tokens.token(key, lambda: self._fetch_token(key, call), refused=stale)
        return f"Bearer {token}"

    async def _fetch_token(self, key: TokenKey, call: _Call) -> tuple[str, float]:
        """Ask the challenge's realm for a token, with Basic credentials when configured."""
        query = {name: value for name, value in (("service", key.service), ("scope", key.scope))
                 if value}
        url = self._base.join(URL(key.realm)).update_query(query)
        basic = {"Authorization": self._basic} if self._basic else {}
        response = await self._send("GET", url, "token", basic)
        endpoint = f"{self.where} token endpoint {url.origin()}{url.path}"
        try:
            if response.status in (401, 403):
                raise Unauthorized(f"{endpoint} refused {self._who()} for repository "
                                   f"{call.repo!r} ({response.status})")
            if response.status == 429:
                raise TooManyRequests(f"{endpoint} is rate limiting token requests",
                                      retry_after(response.headers, datetime.now(UTC)))
            if response.status != 200:
                raise UpstreamUnavailable(f"{endpoint} answered {response.status}", 502)
            return parse_token_response(await read_limited(response, _TOKEN_BODY_LIMIT))
        except ValueError as exc:
            raise UpstreamUnavailable(f"{endpoint} sent an unusable answer: {exc}", 502) from exc
        finally:
            response.release()

    async def _follow(self, call: _Call, authorization: str | None) -> aiohttp.ClientResponse:
        """Send `call`, following redirects; `Authorization` goes to the registry's origin only."""
        url = call.url
        for _ in range(MAX_REDIRECTS + 1):
            headers = CIMultiDict(call.headers)
            headers.popall("Authorization", None)
            if authorization and same_origin(url, self._base):
                headers["Authorization"] = authorization
            response = await self._send(call.method, url, call.kind, headers)
            if response.status not in _REDIRECTS:
                return response
            target = redirect_target(url, response.headers.get("Location", ""))
            response.release()
            if target is None:
                raise UpstreamUnavailable(
                    f"{self.where} redirected {call.target} without a usable Location", 502)
            url = target
        raise UpstreamUnavailable(
            f"{self.where} redirected {call.target} more than {MAX_REDIRECTS} times", 502)

    async def _send(
        self, method: str, url: URL, kind: str, headers: Mapping[str, str]
    ) -> aiohttp.ClientResponse:
        """One HTTP request, counted and timed until headers; never follows redirects."""
        name = self.settings.name
        started = self._clock()
        try:
            response = await self._session.request(
                method, url, headers=headers, allow_redirects=False)
        except (aiohttp.ClientError, TimeoutError):
            self._metrics.upstream_requests.labels(name, kind, "error").inc()
            raise
        self._metrics.upstream_duration.labels(name, kind).observe(self._clock() - started)
        self._metrics.upstream_requests.labels(name, kind, str(response.status)).inc()
        for header, gauge in (("ratelimit-limit", self._metrics.ratelimit_limit),
                              ("ratelimit-remaining", self._metrics.ratelimit_remaining)):
            value = parse_ratelimit(response.headers.get(header, ""))
            if value is not None:
                gauge.labels(name).set(value)
        return response

    async def _error(
        self, call: _Call, response: aiohttp.ClientResponse, attempts: int
    ) -> MirrorError:
        """The error a final non-2xx answer means; releases the response."""
        return await answer_error(
            response, f"{self.where} answered", call.target, call.kind, call.repo,
            self._who(), attempts,
        )

    def _failure(
        self, exc: BaseException, target: str, attempts: int = 1
    ) -> UpstreamUnavailable:
        """A transport failure as UpstreamUnavailable: 504 timed out, 503 unreachable, 502."""
        return transport_failure(exc, self.where, self.settings, target, attempts)

    def _who(self) -> str:
        return "the configured credentials" if self.settings.username else "anonymous access"

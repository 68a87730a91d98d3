"""Registry auth without the network: `WWW-Authenticate` challenges, token responses, tokens.

Owns parsing a challenge, reading a token endpoint's answer, Basic credentials, and keeping
tokens per (realm, service, scope) until shortly before they expire, judged by an injected
clock, with at most one fetch per scope under way. It must not know how requests are sent:
`upstream.py` does the HTTP around it and hands in the fetch.
"""

from __future__ import annotations

import base64
import json
import math
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aiocache import SimpleMemoryCache

from mirror.singleflight import SingleFlight

# The token spec's default when a token response carries no `expires_in`.
DEFAULT_TOKEN_LIFETIME = 60.0
# A token is handed out until this share of its lifetime (at most MAX_REFRESH_MARGIN s)
# is left, so a request never leaves with a token that expires on the way.
REFRESH_SHARE = 0.1
MAX_REFRESH_MARGIN = 30.0

_SCHEME_RE = re.compile(r"\s*([A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]*)(?:\s+|$)")
_PARAM_RE = re.compile(
    r'\s*([A-Za-z0-9!#$%&\'*+.^_`|~-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]*))\s*(?:,|$)'
)
_ESCAPE_RE = re.compile(r"\\(.)")


@dataclass(frozen=True, slots=True)
class Challenge:
    """One parsed `WWW-Authenticate` challenge: lower-cased scheme, lower-cased param names."""

    scheme: str
    params: dict[str, str]

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")

    @property
    def service(self) -> str:
        return self.params.get("service", "")


def parse_challenge(header: str) -> Challenge | None:
    """Parse one `WWW-Authenticate` value such as `Bearer realm="...",service="...",scope="..."`.

    Quoted values may contain commas and backslash escapes. Returns None for an empty
    or malformed header; never raises.
    """
    scheme_match = _SCHEME_RE.match(header)
    if scheme_match is None:
        return None
    params: dict[str, str] = {}
    position = scheme_match.end()
    while position < len(header):
        param = _PARAM_RE.match(header, position)
        if param is None or param.end() == position:
            return None
        name, quoted, bare = param.groups()
        params[name.lower()] = _ESCAPE_RE.sub(r"\1", quoted) if quoted is not None else bare
        position = param.end()
    return Challenge(scheme=scheme_match.group(1).lower(), params=params)


def pick_challenge(headers: Iterable[str]) -> Challenge | None:
    """The challenge to answer among `WWW-Authenticate` values: Bearer if offered, else
    Basic, else None (unparseable values and other schemes are skipped)."""
    parsed = [c for c in map(parse_challenge, headers) if c and c.scheme in ("bearer", "basic")]
    return min(parsed, key=lambda c: c.scheme != "bearer", default=None)


def basic_authorization(username: str | None, password: str | None) -> str | None:
    """The `Authorization` value for HTTP Basic auth, or None without a username."""
    if not username:
        return None
    pair = f"{username}:{password or ''}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")


def parse_token_response(body: bytes) -> tuple[str, float]:
    """Read a token endpoint's JSON answer: (`token` or `access_token`, `expires_in` seconds).

    `expires_in` defaults to 60 s as the token spec says. Raises ValueError when the
    body is not JSON or carries no token.
    """
    try:
        document: Any = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError("token response is not JSON") from exc
    if not isinstance(document, dict):
        raise ValueError("token response is not a JSON object")
    token = document.get("token") or document.get("access_token")
    if not isinstance(token, str) or not token:
        raise ValueError("token response carries no token")
    expires_in = document.get("expires_in")
    if not isinstance(expires_in, int | float) or isinstance(expires_in, bool):
        expires_in = DEFAULT_TOKEN_LIFETIME
    return token, float(expires_in)


@dataclass(frozen=True, slots=True)
class TokenKey:
    """What a token is good for: the challenge's realm and service, and the scope asked."""

    realm: str
    service: str
    scope: str

    def cache_key(self) -> str:
        """A string key that is unambiguous whatever the parts contain (scopes hold spaces)."""
        return "token:" + json.dumps([self.realm, self.service, self.scope])


TokenFetch = Callable[[], Awaitable[tuple[str, float]]]


class TokenCache:
    """Bearer tokens per `TokenKey`, handed out until shortly before they expire.

    Entries live in an aiocache backend (in-memory by default; a shared backend lets
    replicas share tokens, given a clock they agree on). Expiry is decided with the
    injected `clock` only; the backend's ttl merely collects garbage. Fetches are shared
    within this process only.
    """

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, cache: Any = None
    ) -> None:
        self._clock = clock
        # No per-call timeout on the in-memory default: a dict lookup needs no wait_for.
        self._cache: Any = cache if cache is not None else SimpleMemoryCache(timeout=None)
        # Keyed by the refused token too, so that a caller replacing a refused token never
        # joins a flight that hands that same token back from the cache.
        self._flights: SingleFlight[tuple[TokenKey, str | None], str] = SingleFlight()

    async def token(self, key: TokenKey, fetch: TokenFetch, *, refused: str | None = None) -> str:
        """The cached token for `key`, else one from `fetch()` (token, expires_in), stored.

        Concurrent calls for one key share a single `fetch` and all get its token or its
        exception. With `refused` (a token the upstream just rejected), that token is not
        handed out again; a fresh one is fetched unless another caller already replaced
        it. Cancelling a caller does not cancel a fetch the others wait for.
        """
        token = await self.get(key) if refused is None else None
        if token is None:
            token, _shared = await self._flights.do(
                (key, refused), lambda: self._fill(key, fetch, refused))
        return token

    async def _fill(self, key: TokenKey, fetch: TokenFetch, refused: str | None) -> str:
        # Look again: a flight that ended while the caller read the cache stored its token.
        token = await self.get(key)
        if token is None or token == refused:
            token, expires_in = await fetch()
            await self.put(key, token, expires_in)
        return token

    async def get(self, key: TokenKey) -> str | None:
        """The cached token for `key`, or None if there is none or it is about to expire."""
        entry = await self._cache.get(key.cache_key())
        if not isinstance(entry, dict) or self._clock() >= entry["use_until"]:
            return None
        token: str = entry["token"]
        return token

    async def put(self, key: TokenKey, token: str, expires_in: float) -> None:
        """Remember `token` for `key`, valid `expires_in` seconds from now; replaces any other.

        A token too short-lived to survive the refresh margin is not stored.
        """
        margin = min(expires_in * REFRESH_SHARE, MAX_REFRESH_MARGIN)
        if expires_in - margin <= 0:
            return
        entry = {"token": token, "use_until": self._clock() + expires_in - margin}
        await self._cache.set(key.cache_key(), entry, ttl=math.ceil(expires_in))

"""Short-lived answers kept in memory: tag checks and upstream 404s, judged by a clock.

Values live in an aiocache cache (its Redis backend is the path to several
replicas); freshness is decided here with an injected clock so tests control time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aiocache import SimpleMemoryCache

from mirror.errors import MirrorError


@dataclass(frozen=True, slots=True)
class TagCheck:
    """A tag's manifest as confirmed with the upstream at `checked_at`; its bytes are
    kept so a fresh tag is answered without touching the disk."""

    digest: str
    media_type: str
    body: bytes
    checked_at: float


class Memo:
    """Tag checks trusted for `tag_ttl`, upstream 404s remembered for `negative_ttl`."""

    def __init__(self, tag_ttl: float, negative_ttl: float, clock: Callable[[], float]) -> None:
        # No per-call timeout: a dict lookup needs no asyncio.wait_for around it.
        self._cache = SimpleMemoryCache(timeout=None)
        self._tag_ttl = tag_ttl
        self._negative_ttl = negative_ttl
        self._clock = clock

    @staticmethod
    def _key(*parts: str) -> str:
        return "\x00".join(parts)

    async def fresh_tag(self, upstream: str, repo: str, tag: str) -> TagCheck | None:
        """The tag's last check if it is younger than tag_ttl, else None."""
        check: TagCheck | None = await self._cache.get(self._key("tag", upstream, repo, tag))
        if check is None or self._clock() - check.checked_at >= self._tag_ttl:
            return None
        return check

    async def tag_checked(
        self, upstream: str, repo: str, tag: str, digest: str, media_type: str, body: bytes
    ) -> None:
        """Record that the upstream confirmed `tag` → `digest` now."""
        check = TagCheck(digest, media_type, body, self._clock())
        # The aiocache ttl only collects garbage; freshness is judged above.
        await self._cache.set(
            self._key("tag", upstream, repo, tag), check, ttl=max(1, int(self._tag_ttl) * 2)
        )

    async def not_found(
        self, upstream: str, repo: str, kind: str, reference: str
    ) -> MirrorError | None:
        """A fresh copy of the upstream's 404 for this reference if it is still remembered."""
        entry: tuple[type[MirrorError], str, float] | None = await self._cache.get(
            self._key("404", upstream, repo, kind, reference)
        )
        if entry is None or self._clock() - entry[2] >= self._negative_ttl:
            return None
        return entry[0](entry[1])

    async def remember_not_found(
        self, upstream: str, repo: str, kind: str, reference: str, error: MirrorError
    ) -> None:
        """Remember an upstream 404 for negative_ttl."""
        if self._negative_ttl <= 0:
            return
        await self._cache.set(
            self._key("404", upstream, repo, kind, reference),
            (type(error), error.message, self._clock()),
            ttl=max(1, int(self._negative_ttl) * 2),
        )

    async def close(self) -> None:
        """Release the cache backend."""
        await self._cache.close()

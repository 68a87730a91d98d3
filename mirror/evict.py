"""The storage quota: room for downloads, and least-recently-used eviction at watermarks.

Policy (`choose_victims`, pure) is kept apart from deletion (`Quota.evict_to`). A
download reserves its size before writing; when the cache would pass the high
watermark, blobs are evicted down to the low one, least recently used first,
never a pinned one. A reader of an evicted blob keeps its open file and every byte.
Must not know HTTP or upstreams.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Set
from dataclasses import dataclass

from mirror.index import BlobIndex, Entry
from mirror.metrics import Metrics
from mirror.storage import BlobStore

log = logging.getLogger(__name__)


def choose_victims(entries: Iterable[Entry], keep: Set[str], excess: int) -> list[Entry]:
    """Least recently used entries not in `keep` whose sizes add up to at least `excess`
    (fewer if there are not enough)."""
    victims: list[Entry] = []
    freed = 0
    for entry in sorted(entries, key=lambda e: e.last_access):
        if freed >= excess:
            break
        if entry.digest not in keep:
            victims.append(entry)
            freed += entry.size
    return victims


def older_than(entries: Iterable[Entry], keep: Set[str], cutoff: float) -> list[Entry]:
    """Entries not in `keep` last used before `cutoff` (seconds since the epoch)."""
    return [e for e in entries if e.last_access < cutoff and e.digest not in keep]


@dataclass(frozen=True, slots=True)
class Evicted:
    """What one eviction removed."""

    count: int
    bytes: int


def remove(index: BlobIndex, store: BlobStore, victims: Iterable[Entry]) -> Evicted:
    """Delete blobs from the store and the index (blocking). Readers with the file open
    keep their bytes."""
    count = freed = 0
    for victim in victims:
        store.delete(victim.digest)
        freed += index.remove(victim.digest)
        count += 1
    return Evicted(count, freed)


class Quota:
    """Keeps the bytes the cache holds under `max_size`."""

    def __init__(
        self,
        index: BlobIndex,
        store: BlobStore,
        metrics: Metrics,
        *,
        max_size: int,
        high: float,
        low: float,
        pinned: Callable[[], set[str]],
    ) -> None:
        self._index = index
        self._store = store
        self._metrics = metrics
        self.max_size = max_size
        self._high = int(max_size * high)
        self._low = int(max_size * low)
        self._pinned = pinned
        self._reserved = 0
        self._lock = asyncio.Lock()

    async def reserve(self, size: int) -> bool:
        """Make room for a download of `size` bytes and hold it until `release`.

        False when it cannot be cached: larger than the high watermark (keeping it would
        evict it at once), or no room can be made (everything else is pinned); the caller
        then passes it through.
        """
        if size > self._high:
            return False
        if self._index.total() + self._reserved + size > self._high:
            await self.evict_to(self.low_target() - size)
        if self._index.total() + self._reserved + size > self.max_size:
            return False
        self._reserved += size
        return True

    def low_target(self) -> int:
        """What eviction brings the cache down to: the low watermark, less reservations."""
        return self._low - self._reserved

    def fill(self, digest: str, kind: str, repo: str) -> Fill:
        """The policy for one download of `digest` pulled for `repo`."""
        return Fill(self, digest, kind, repo)

    def release(self, size: int) -> None:
        """Give back a reservation (the download committed or failed)."""
        self._reserved -= size

    async def added(self, digest: str, size: int, kind: str, repo: str, reserved: int = 0) -> None:
        """Index a committed blob or manifest, give back what was `reserved` for it, then
        evict if past the high watermark."""
        await asyncio.to_thread(self._index.add, digest, size, kind, repo)
        self.release(reserved)
        await self.enforce()

    async def enforce(self) -> None:
        """Evict down to the low watermark if the cache is past the high one."""
        if self._index.total() + self._reserved > self._high:
            await self.evict_to(self.low_target())
        self.publish()

    async def evict_to(self, target: int) -> Evicted:
        """Evict least recently used blobs until the cache holds at most `target` bytes."""
        async with self._lock:
            evicted = await asyncio.to_thread(self._evict, max(0, target))
        if evicted.count:
            self._metrics.evictions.inc(evicted.count)
            self._metrics.evicted_bytes.inc(evicted.bytes)
            log.warning(
                "evicted %d blobs (%d bytes) to stay under the %d-byte quota",
                evicted.count,
                evicted.bytes,
                self.max_size,
            )
        self.publish()
        return evicted

    def _evict(self, target: int) -> Evicted:
        excess = self._index.total() - target
        if excess <= 0:
            return Evicted(0, 0)
        victims = choose_victims(self._index.entries(), self._pinned(), excess)
        evicted = remove(self._index, self._store, victims)
        if self._index.total() > target:
            log.warning(
                "cache holds %d bytes, above the %d-byte target: the rest is pinned",
                self._index.total(),
                target,
            )
        return evicted

    def publish(self) -> None:
        """Bring the size gauges up to date."""
        self._metrics.cache_size.set(self._index.total())
        self._metrics.cache_blobs.set(self._index.count())
        self._metrics.cache_max.set(self.max_size)


class Fill:
    """The quota's side of one download (a fetch.FillPolicy): reserve, index, release."""

    def __init__(self, quota: Quota, digest: str, kind: str, repo: str) -> None:
        self._quota = quota
        self._digest = digest
        self._kind = kind
        self._repo = repo
        self._reserved = 0

    async def admit(self, size: int | None) -> bool:
        """Reserve room for a known size; pass through what cannot be cached."""
        if size is None:
            return True
        if not await self._quota.reserve(size):
            log.warning(
                "passing %s through uncached: %d bytes do not fit the %d-byte quota",
                self._digest,
                size,
                self._quota.max_size,
            )
            return False
        self._reserved = size
        return True

    async def make_room(self, needed: int) -> bool:
        """Disk full: evict at least `needed` bytes more than the low watermark asks."""
        evicted = await self._quota.evict_to(self._quota.low_target() - needed)
        return evicted.count > 0

    async def committed(self, size: int) -> None:
        """Turn the reservation into an index entry."""
        reserved, self._reserved = self._reserved, 0
        await self._quota.added(self._digest, size, self._kind, self._repo, reserved)

    def finished(self) -> None:
        """Give back the reservation, once."""
        self._quota.release(self._reserved)
        self._reserved = 0

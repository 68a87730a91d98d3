"""The persistent index of what the cache holds: size, kind, repositories, last access.

Kept in a diskcache (SQLite) folder inside the storage folder, so it survives restarts
and a `mirror cache` command can work on it while the mirror runs. A hit only records
its access time in memory (`touch`); `flush` writes those in one batch, off the loop.
Methods other than `touch` block: call them from a thread. This
module must not know HTTP, upstreams or eviction policy.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import diskcache

from mirror.storage import BlobStore

_ENTRY = "entry:"
_TOTAL = "total"
_COUNT = "count"
_STATUS = "status"


@dataclass(frozen=True, slots=True)
class Entry:
    """One cached blob or manifest."""

    digest: str
    size: int
    kind: str  # "blob" | "manifest"
    repos: tuple[str, ...]  # "<upstream>/<repository>" it was pulled for
    last_access: float  # seconds since the epoch


@dataclass(frozen=True, slots=True)
class Reconciled:
    """What start-up found: files without entries (indexed), entries without files (dropped)."""

    indexed: int
    dropped: int


class BlobIndex:
    """Entries by digest, their total size and count, and the running mirror's status."""

    def __init__(self, root: Path, clock: Callable[[], float] = time.time) -> None:
        self._cache = diskcache.Cache(str(root / "index"), eviction_policy="none")
        self._clock = clock
        self._pending: dict[str, float] = {}

    def close(self) -> None:
        """Flush pending access times and close the database."""
        self.flush()
        self._cache.close()

    def add(self, digest: str, size: int, kind: str, repo: str) -> None:
        """Index a committed blob (or note one more repository for it); counts its size once."""
        key = _ENTRY + digest
        now = self._clock()
        with self._cache.transact():
            old: Entry | None = self._cache.get(key)
            if old is None:
                self._cache.set(key, Entry(digest, size, kind, (repo,), now))
                self._cache.incr(_TOTAL, size)
                self._cache.incr(_COUNT, 1)
            elif repo not in old.repos:
                self._cache.set(key, replace(old, repos=(*old.repos, repo), last_access=now))

    def remove(self, digest: str) -> int:
        """Drop an entry; return the bytes it accounted for (0 if there was none)."""
        with self._cache.transact():
            old: Entry | None = self._cache.pop(_ENTRY + digest)
            if old is None:
                return 0
            self._cache.incr(_TOTAL, -old.size)
            self._cache.incr(_COUNT, -1)
        self._pending.pop(digest, None)
        return old.size

    def get(self, digest: str) -> Entry | None:
        """The entry for a digest, with its latest access time."""
        entry: Entry | None = self._cache.get(_ENTRY + digest)
        if entry is not None and digest in self._pending:
            entry = replace(entry, last_access=max(entry.last_access, self._pending[digest]))
        return entry

    def entries(self) -> Iterator[Entry]:
        """Every entry, with pending access times applied."""
        for key in self._cache.iterkeys():
            if isinstance(key, str) and key.startswith(_ENTRY):
                entry = self.get(key[len(_ENTRY) :])
                if entry is not None:
                    yield entry

    def total(self) -> int:
        """Bytes of every indexed blob and manifest."""
        total: int = self._cache.get(_TOTAL, 0)
        return total

    def count(self) -> int:
        """How many blobs and manifests are indexed."""
        count: int = self._cache.get(_COUNT, 0)
        return count

    def touch(self, digest: str) -> None:
        """Record an access in memory; cheap and never blocking (see `flush`)."""
        self._pending[digest] = self._clock()

    def flush(self) -> int:
        """Write pending access times of entries that still exist; return how many."""
        pending, self._pending = self._pending, {}
        written = 0
        with self._cache.transact():
            for digest, when in pending.items():
                entry: Entry | None = self._cache.get(_ENTRY + digest)
                if entry is not None and when > entry.last_access:
                    self._cache.set(_ENTRY + digest, replace(entry, last_access=when))
                    written += 1
        return written

    def set_status(self, status: dict[str, object]) -> None:
        """Publish the running mirror's status (pid, counters) for `mirror cache stats`."""
        self._cache.set(_STATUS, status)

    def status(self) -> dict[str, object] | None:
        """The last status a running mirror published, if any."""
        status: dict[str, object] | None = self._cache.get(_STATUS)
        return status

    def reconcile(self, store: BlobStore) -> Reconciled:
        """Make the index match the files: index orphans, drop entries whose file is gone.

        Reads sizes and modification times only, never a blob's bytes.
        """
        stats = {digest: store.stat(digest) for digest in store.digests()}
        on_disk = {digest: stat for digest, stat in stats.items() if stat is not None}
        indexed = dropped = 0
        with self._cache.transact():
            known = {e.digest: e for e in self.entries()}
            for digest in known.keys() - on_disk.keys():
                self._cache.delete(_ENTRY + digest)
                dropped += 1
            for digest, (size, mtime) in on_disk.items():
                entry = known.get(digest)
                if entry is None or entry.size != size:
                    kind, repos = (entry.kind, entry.repos) if entry else ("blob", ())
                    self._cache.set(_ENTRY + digest, Entry(digest, size, kind, repos, mtime))
                    indexed += 1
            sizes = [e.size for e in self.entries()]
            self._cache.set(_TOTAL, sum(sizes))
            self._cache.set(_COUNT, len(sizes))
        return Reconciled(indexed, dropped)

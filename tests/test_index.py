"""The persistent blob index: size counted once, batched access times, start-up reconcile."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from mirror.index import BlobIndex, Reconciled
from mirror.storage.disk import DiskBlobStore
from tests.conftest import FakeClock
from tests.storespy import MetadataOnly, put


def sha(label: str) -> str:
    """A well-formed digest with no file behind it."""
    return "sha256:" + hashlib.sha256(label.encode()).hexdigest()


@pytest.fixture
def index(tmp_path: Path, clock: FakeClock) -> Iterator[BlobIndex]:
    opened = BlobIndex(tmp_path, clock=clock)
    yield opened
    opened.close()


def test_add_counts_a_size_once_and_notes_each_repository(
    index: BlobIndex, clock: FakeClock
) -> None:
    index.add(sha("a"), 100, "blob", "docker.io/library/alpine")
    clock.advance(5)
    index.add(sha("a"), 100, "blob", "docker.io/library/busybox")
    index.add(sha("a"), 100, "blob", "docker.io/library/alpine")
    index.add(sha("m"), 7, "manifest", "docker.io/library/alpine")

    entry = index.get(sha("a"))
    assert entry is not None
    assert entry.size == 100
    assert entry.kind == "blob"
    assert entry.repos == ("docker.io/library/alpine", "docker.io/library/busybox")
    assert entry.last_access == 1005.0
    assert index.total() == 107
    assert index.count() == 2
    assert sorted(e.digest for e in index.entries()) == sorted([sha("a"), sha("m")])


def test_remove_returns_freed_bytes_and_is_idempotent(index: BlobIndex) -> None:
    index.add(sha("a"), 100, "blob", "r")
    index.add(sha("b"), 30, "blob", "r")

    assert index.remove(sha("a")) == 100
    assert index.remove(sha("a")) == 0
    assert index.remove(sha("never")) == 0
    assert index.get(sha("a")) is None
    assert index.total() == 30
    assert index.count() == 1
    assert index.remove(sha("b")) == 30
    assert (index.total(), index.count(), list(index.entries())) == (0, 0, [])


def test_touch_stays_in_memory_until_flush(
    tmp_path: Path, index: BlobIndex, clock: FakeClock
) -> None:
    index.add(sha("a"), 10, "blob", "r")
    other = BlobIndex(tmp_path, clock=clock)  # e.g. `mirror cache` on a running mirror
    try:
        clock.advance(60)
        index.touch(sha("a"))

        mine, theirs = index.get(sha("a")), other.get(sha("a"))
        assert mine is not None and theirs is not None
        assert mine.last_access == 1060.0  # this process sees its own hits
        assert [e.last_access for e in index.entries()] == [1060.0]
        assert theirs.last_access == 1000.0  # nothing was written yet

        assert index.flush() == 1
        assert index.flush() == 0  # the batch is gone once written
        theirs = other.get(sha("a"))
        assert theirs is not None and theirs.last_access == 1060.0
    finally:
        other.close()


def test_flush_ignores_entries_removed_meanwhile(
    tmp_path: Path, index: BlobIndex, clock: FakeClock
) -> None:
    index.add(sha("a"), 10, "blob", "r")
    index.add(sha("b"), 20, "blob", "r")
    clock.advance(1)
    index.touch(sha("a"))
    index.touch(sha("b"))
    index.touch(sha("never-indexed"))
    index.remove(sha("b"))  # removed by this process
    other = BlobIndex(tmp_path, clock=clock)
    try:
        assert other.remove(sha("a")) == 10  # removed by another process (prune)
    finally:
        other.close()

    assert index.flush() == 0
    assert index.get(sha("a")) is None
    assert index.get(sha("b")) is None
    assert index.get(sha("never-indexed")) is None
    assert (index.total(), index.count()) == (0, 0)


def test_status_round_trips_and_is_shared(tmp_path: Path, index: BlobIndex) -> None:
    assert index.status() is None
    status: dict[str, object] = {"pid": 4242, "started": 12.5, "hits": 3, "misses": 1}
    index.set_status(status)
    assert index.status() == status
    other = BlobIndex(tmp_path)
    try:
        assert other.status() == status
    finally:
        other.close()


def test_survives_close_and_reopen(tmp_path: Path, clock: FakeClock) -> None:
    first = BlobIndex(tmp_path, clock=clock)
    first.add(sha("a"), 100, "blob", "r1")
    first.add(sha("a"), 100, "blob", "r2")
    first.add(sha("m"), 5, "manifest", "r1")
    clock.advance(30)
    first.touch(sha("m"))
    first.close()  # flushes the pending touch

    again = BlobIndex(tmp_path, clock=clock)
    try:
        assert (again.total(), again.count()) == (105, 2)
        a, m = again.get(sha("a")), again.get(sha("m"))
        assert a is not None and m is not None
        assert a.repos == ("r1", "r2")
        assert (m.kind, m.last_access) == ("manifest", 1030.0)
    finally:
        again.close()


def test_reconcile_indexes_orphans_drops_missing_and_fixes_totals(
    tmp_path: Path, index: BlobIndex
) -> None:
    store = DiskBlobStore(tmp_path)
    kept = put(store, b"k" * 300)
    orphan = put(store, b"o" * 1234)
    resized = put(store, b"r" * 50)
    os.utime(store.root / "blobs" / "sha256" / orphan[7:9] / orphan[7:], (5000.0, 4321.0))
    index.add(kept, 300, "manifest", "docker.io/library/alpine")
    index.add(resized, 999, "blob", "docker.io/library/alpine")  # the index is wrong
    index.add(sha("gone"), 700, "blob", "docker.io/library/alpine")  # no file
    index.add(sha("gone-too"), 1, "blob", "docker.io/library/alpine")

    found = index.reconcile(MetadataOnly(store))

    assert found == Reconciled(indexed=2, dropped=2)  # the orphan and the resized one
    assert index.get(sha("gone")) is None
    assert index.get(sha("gone-too")) is None
    new = index.get(orphan)
    assert new is not None
    assert (new.size, new.kind, new.repos, new.last_access) == (1234, "blob", (), 4321.0)
    fixed = index.get(resized)
    assert fixed is not None
    assert (fixed.size, fixed.kind) == (50, "blob")
    old = index.get(kept)
    assert old is not None
    assert (old.kind, old.repos, old.last_access) == (
        "manifest",
        ("docker.io/library/alpine",),
        1000.0,  # an indexed entry keeps its last access, not the file's mtime
    )
    assert index.total() == 300 + 1234 + 50 == sum(store.size(d) or 0 for d in store.digests())
    assert index.count() == 3
    assert index.reconcile(MetadataOnly(store)) == Reconciled(indexed=0, dropped=0)


def test_reconcile_of_an_empty_store_empties_the_index(tmp_path: Path, index: BlobIndex) -> None:
    index.add(sha("a"), 10, "blob", "r")
    index.touch(sha("a"))
    assert index.reconcile(MetadataOnly(DiskBlobStore(tmp_path))) == Reconciled(0, 1)
    assert (index.total(), index.count(), list(index.entries())) == (0, 0, [])
    assert index.flush() == 0


class VanishesAfterListing(MetadataOnly):
    """Lists every blob, then one is deleted (by a concurrent prune) before it is stat'ed."""

    def __init__(self, store: DiskBlobStore, victim: str) -> None:
        super().__init__(store)
        self._real = store
        self._victim = victim

    def digests(self) -> Iterator[str]:
        listed = list(self._real.digests())
        self._real.delete(self._victim)
        return iter(listed)


def test_reconcile_drops_an_entry_whose_file_vanishes_while_listing(
    tmp_path: Path, index: BlobIndex
) -> None:
    store = DiskBlobStore(tmp_path)
    digest = put(store, b"x" * 10)
    index.add(digest, 10, "blob", "r")
    index.reconcile(VanishesAfterListing(store, digest))
    assert index.get(digest) is None
    assert (index.total(), index.count()) == (0, 0)

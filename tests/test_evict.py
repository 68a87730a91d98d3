"""The storage quota: LRU victims, watermarks, reservations, pins and the metrics."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mirror.evict import Evicted, Quota, choose_victims, older_than, remove
from mirror.fetch import FillPolicy
from mirror.index import BlobIndex, Entry
from mirror.metrics import Metrics
from mirror.storage.disk import DiskBlobStore
from tests.conftest import FakeClock
from tests.storespy import put

MAX = 1000  # high watermark 900, low watermark 500


def entry(name: str, size: int, last_access: float) -> Entry:
    return Entry(name, size, "blob", ("r",), last_access)


def names(entries: list[Entry]) -> list[str]:
    return [e.digest for e in entries]


def test_choose_victims_takes_least_recently_used_until_the_excess_is_covered() -> None:
    entries = [entry("c", 100, 3), entry("a", 100, 1), entry("d", 100, 4), entry("b", 300, 2)]
    assert names(choose_victims(entries, set(), 350)) == ["a", "b"]
    assert names(choose_victims(entries, set(), 400)) == ["a", "b"]
    assert names(choose_victims(entries, set(), 401)) == ["a", "b", "c"]
    assert names(choose_victims(entries, {"b"}, 150)) == ["a", "c"]
    assert names(choose_victims(entries, {"a", "d"}, 10_000)) == ["b", "c"]
    assert choose_victims(entries, set(), 0) == []
    assert choose_victims(entries, set(), -5) == []
    assert choose_victims([], set(), 100) == []


def test_older_than_skips_kept_and_recent_entries() -> None:
    entries = [entry("a", 1, 10), entry("b", 1, 20), entry("c", 1, 30), entry("d", 1, 5)]
    assert sorted(names(older_than(entries, set(), 20))) == ["a", "d"]
    assert names(older_than(entries, {"d"}, 20)) == ["a"]
    assert older_than(entries, set(), 5) == []


class Cache:
    """A real disk store and index on a temp folder, with a quota over them."""

    def __init__(self, root: Path, clock: FakeClock) -> None:
        self.clock = clock
        self.store = DiskBlobStore(root)
        self.index = BlobIndex(root, clock=clock)
        self.metrics = Metrics()
        self.pinned: set[str] = set()
        self.quota = Quota(
            self.index,
            self.store,
            self.metrics,
            max_size=MAX,
            high=0.9,
            low=0.5,
            pinned=lambda: set(self.pinned),
        )

    def commit(self, label: str, size: int) -> str:
        """A committed blob of exactly `size` bytes, not yet indexed; returns its digest."""
        return put(self.store, (label.encode() * size)[:size])

    def put(self, label: str, size: int) -> str:
        """A committed and indexed blob, used one second after the previous one."""
        digest = self.commit(label, size)
        self.clock.advance(1)
        self.index.add(digest, size, "blob", "docker.io/library/test")
        return digest

    def on_disk(self) -> set[str]:
        return set(self.store.digests())

    def in_index(self) -> set[str]:
        return {e.digest for e in self.index.entries()}

    def disk_bytes(self) -> int:
        return sum(self.store.size(d) or 0 for d in self.store.digests())

    def sample(self, name: str) -> float | None:
        return self.metrics.registry.get_sample_value(name)


@pytest.fixture
def cache(tmp_path: Path, clock: FakeClock) -> Iterator[Cache]:
    made = Cache(tmp_path, clock)
    yield made
    made.index.close()


def test_remove_deletes_from_disk_and_index(cache: Cache) -> None:
    cache.put("a", 100)
    b, c = cache.put("b", 200), cache.put("c", 50)
    cache.store.delete(b)  # already gone from disk: still dropped from the index
    victims = [e for e in cache.index.entries() if e.digest != c]
    assert remove(cache.index, cache.store, victims) == Evicted(count=2, bytes=300)
    assert cache.on_disk() == {c} == cache.in_index()
    assert (cache.index.total(), cache.index.count()) == (50, 1)
    assert remove(cache.index, cache.store, []) == Evicted(0, 0)


async def test_reserve_refuses_a_blob_larger_than_the_quota_without_evicting(
    cache: Cache,
) -> None:
    held = {cache.put("a", 400), cache.put("b", 400)}
    assert await cache.quota.reserve(MAX + 1) is False
    assert cache.on_disk() == held == cache.in_index()
    assert cache.quota.low_target() == 500  # nothing reserved


async def test_reserve_evicts_least_recently_used_past_the_high_watermark(
    cache: Cache,
) -> None:
    a, b, c = cache.put("a", 300), cache.put("b", 300), cache.put("c", 200)
    assert await cache.quota.reserve(100) is True  # 900: not past the high watermark
    assert cache.on_disk() == {a, b, c}

    # 800 + 100 reserved + 150 > 900: evict to 500 - 100 - 150 = 250, oldest first
    assert await cache.quota.reserve(150) is True
    assert cache.on_disk() == {c} == cache.in_index()
    assert cache.index.total() == 200 == cache.disk_bytes()
    assert cache.quota.low_target() == 500 - 250


async def test_a_touch_not_yet_flushed_protects_from_eviction(cache: Cache) -> None:
    a, b, c = cache.put("a", 300), cache.put("b", 300), cache.put("c", 200)
    cache.clock.advance(10)
    cache.index.touch(a)  # a hit: a is now the most recently used
    assert await cache.quota.reserve(200) is True  # evict to 300: b then c
    assert cache.on_disk() == {a} == cache.in_index()
    assert b not in cache.on_disk() and c not in cache.on_disk()


async def test_reserve_refuses_when_everything_is_pinned(cache: Cache) -> None:
    a, b = cache.put("a", 400), cache.put("b", 400)
    cache.pinned = {a, b}
    assert await cache.quota.reserve(300) is False
    assert cache.on_disk() == {a, b} == cache.in_index()
    assert cache.quota.low_target() == 500
    assert cache.sample("mirror_evictions_total") == 0.0


async def test_pinned_blobs_are_never_evicted(cache: Cache) -> None:
    a, b, c, d = (cache.put(x, 200) for x in "abcd")
    cache.pinned = {a, c}
    assert cache.on_disk() == {a, b, c, d}
    assert await cache.quota.reserve(400) is True  # evict to 100: b and d, not a nor c
    assert cache.on_disk() == {a, c} == cache.in_index()
    assert cache.index.total() == 400
    await cache.quota.evict_to(0)
    assert cache.on_disk() == {a, c} == cache.in_index()


async def test_added_evicts_down_to_the_low_watermark_and_metrics_are_true(
    cache: Cache,
) -> None:
    sizes = {"a": 300, "b": 300, "c": 200, "d": 200}
    digests = {}
    for label, size in sizes.items():
        digests[label] = cache.commit(label, size)
        cache.clock.advance(1)
        await cache.quota.added(digests[label], size, "blob", "docker.io/library/test")
        if label != "d":  # 300, 600, 800: not past the high watermark
            assert cache.sample("mirror_evictions_total") == 0.0
            assert cache.on_disk() == set(digests.values())

    # 1000 > 900: down to 500, least recently used first
    assert cache.on_disk() == {digests["c"], digests["d"]} == cache.in_index()
    assert cache.sample("mirror_evictions_total") == 2.0
    assert cache.sample("mirror_evicted_bytes_total") == 600.0
    assert cache.sample("mirror_cache_size_bytes") == 400.0 == cache.disk_bytes()
    assert cache.sample("mirror_cache_blobs") == 2.0 == len(cache.on_disk())
    assert cache.sample("mirror_cache_max_bytes") == float(MAX)

    await cache.quota.evict_to(0)
    assert cache.on_disk() == set()
    assert cache.sample("mirror_evictions_total") == 4.0
    assert cache.sample("mirror_evicted_bytes_total") == 1000.0
    assert cache.sample("mirror_cache_size_bytes") == 0.0
    assert cache.sample("mirror_cache_blobs") == 0.0


async def test_enforce_counts_reservations(cache: Cache) -> None:
    a, b = cache.put("a", 300), cache.put("b", 300)
    assert await cache.quota.reserve(250) is True  # 850: no eviction
    await cache.quota.enforce()
    assert cache.on_disk() == {a, b}
    assert await cache.quota.reserve(100) is True  # 950: evict to 500 - 350 = 150
    assert cache.on_disk() == set()
    cache.quota.release(350)
    assert cache.quota.low_target() == 500


async def test_fill_admits_an_unknown_size_without_reserving(cache: Cache) -> None:
    policy: FillPolicy = cache.quota.fill(cache.commit("x", 10), "blob", "r")
    assert await policy.admit(None) is True
    assert cache.quota.low_target() == 500
    policy.finished()
    assert cache.quota.low_target() == 500


async def test_fill_passes_through_what_cannot_fit(cache: Cache) -> None:
    policy = cache.quota.fill(cache.commit("x", 10), "blob", "r")
    assert await policy.admit(MAX + 1) is False
    policy.finished()
    assert cache.quota.low_target() == 500


async def test_fill_reserves_indexes_on_commit_and_releases_once(cache: Cache) -> None:
    digest = cache.commit("x", 400)
    policy: FillPolicy = cache.quota.fill(digest, "manifest", "docker.io/library/x")
    assert await policy.admit(400) is True
    assert cache.quota.low_target() == 100
    assert cache.index.get(digest) is None

    await policy.committed(400)
    policy.finished()  # always called after the download, whatever its outcome
    policy.finished()

    indexed = cache.index.get(digest)
    assert indexed is not None
    assert (indexed.size, indexed.kind, indexed.repos) == (
        400,
        "manifest",
        ("docker.io/library/x",),
    )
    assert cache.index.total() == 400
    cache.pinned = {digest}  # so later reservations cannot make room by evicting it
    # Released more than once, 400 + 700 would look like 700 and fit.
    assert await cache.quota.reserve(700) is False
    # Never released, 400 + 400 + 600 would not fit; released once, 400 + 600 does.
    assert await cache.quota.reserve(600) is True
    assert cache.on_disk() == {digest}


async def test_a_failed_fill_gives_its_reservation_back_once(cache: Cache) -> None:
    policy = cache.quota.fill(cache.commit("x", 10), "blob", "r")
    assert await policy.admit(300) is True
    assert cache.quota.low_target() == 200
    policy.finished()
    policy.finished()
    assert cache.quota.low_target() == 500


async def test_make_room_evicts_beyond_the_low_watermark(cache: Cache) -> None:
    a, b, c = cache.put("a", 200), cache.put("b", 200), cache.put("c", 100)
    policy = cache.quota.fill(cache.commit("x", 10), "blob", "r")
    assert await policy.admit(100) is True  # 600 of 900: nothing evicted
    assert cache.on_disk() >= {a, b, c}

    # Disk full: evict to 500 - 100 reserved - 250 needed = 150
    assert await policy.make_room(250) is True
    assert {a, b, c} & cache.on_disk() == {c}
    assert cache.in_index() == {c}
    assert cache.sample("mirror_evictions_total") == 2.0

    cache.pinned = {c}
    assert await policy.make_room(1000) is False  # nothing left to free
    assert cache.in_index() == {c}


async def test_a_blob_between_the_high_watermark_and_the_quota_is_kept_or_passed_through(
    cache: Cache,
) -> None:
    old = cache.put("old", 100)
    digest = cache.commit("big", 950)
    policy = cache.quota.fill(digest, "blob", "r")
    admitted = await policy.admit(950)
    if admitted:
        await policy.committed(950)
    policy.finished()
    if admitted:
        assert cache.index.get(digest) is not None, "admitted, cached, then evicted at once"
    else:
        assert cache.on_disk() >= {old}, "refused, yet the rest of the cache was evicted"

"""One download per digest: readers follow the partial file; nothing unverified is kept."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from mirror.errors import DigestMismatch, InsufficientStorage, MirrorError, UpstreamUnavailable
from mirror.fetch import Download, Downloads, Opener, UpstreamBody
from mirror.metrics import Metrics
from mirror.storage.disk import DiskBlobStore, DiskBlobWriter

DATA = os.urandom(3 * 1024 * 1024 + 17)
DIGEST = "sha256:" + hashlib.sha256(DATA).hexdigest()


class Source:
    """A scripted upstream body: chunks, an optional gate after the first, an optional fault."""

    def __init__(self, data: bytes, *, gate: bool = False, fail_after: int | None = None) -> None:
        self.data = data
        self.opened = 0
        self.gate = asyncio.Event() if gate else None
        self.fail_after = fail_after

    async def _chunks(self) -> AsyncIterator[bytes]:
        for index, start in enumerate(range(0, len(self.data), 256 * 1024)):
            if self.fail_after is not None and start >= self.fail_after:
                raise ConnectionResetError("upstream dropped the connection")
            yield self.data[start : start + 256 * 1024]
            if index == 0 and self.gate is not None:
                await self.gate.wait()

    @asynccontextmanager
    async def open(self) -> AsyncIterator[UpstreamBody]:
        self.opened += 1
        yield UpstreamBody(len(self.data), self._chunks())

    @property
    def opener(self) -> Opener:
        return self.open


class Policy:
    """A FillPolicy that records what the download asked of it."""

    def __init__(self, admit: bool = True, room: bool = True) -> None:
        self.admit_answer = admit
        self.room = room
        self.admitted: list[int | None] = []
        self.room_asked: list[int] = []
        self.committed_sizes: list[int] = []
        self.finished_count = 0

    async def admit(self, size: int | None) -> bool:
        self.admitted.append(size)
        return self.admit_answer

    async def make_room(self, needed: int) -> bool:
        self.room_asked.append(needed)
        return self.room

    async def committed(self, size: int) -> None:
        self.committed_sizes.append(size)

    def finished(self) -> None:
        self.finished_count += 1


async def read_chunks(
    download: Download, start: int = 0, end: int | None = None
) -> AsyncIterator[bytes]:
    """What a sender does: read each window as the download makes it readable."""
    with download.open_reader() as file:
        async for begin, stop in download.windows(start, end):
            yield os.pread(file.fileno(), stop - begin, begin)


async def read_all(download: Download, start: int = 0, end: int | None = None) -> bytes:
    return b"".join([chunk async for chunk in read_chunks(download, start, end)])


@pytest.fixture
def store(tmp_path: Path) -> DiskBlobStore:
    return DiskBlobStore(tmp_path)


async def test_readers_share_one_download(store: DiskBlobStore) -> None:
    source = Source(DATA)
    downloads = Downloads(store, Metrics())
    download = downloads.join_or_start(DIGEST, source.opener, Policy())[0]
    other = Source(DATA)
    joined = [downloads.join_or_start(DIGEST, other.opener, Policy()) for _ in range(19)]
    assert all(j == (download, True) for j in joined)
    assert other.opened == 0
    bodies = await asyncio.gather(*(read_all(download) for _ in range(20)))
    assert source.opened == 1
    assert all(body == DATA for body in bodies)
    assert store.read(DIGEST) == DATA
    assert downloads.get(DIGEST) is None


async def test_a_reader_gets_bytes_before_the_download_ends(store: DiskBlobStore) -> None:
    source = Source(DATA, gate=True)
    downloads = Downloads(store, Metrics())
    download = downloads.join_or_start(DIGEST, source.opener, Policy())[0]
    chunks = read_chunks(download)
    first = await chunks.__anext__()
    assert first == DATA[: len(first)]
    assert store.size(DIGEST) is None  # still downloading
    assert source.gate is not None
    source.gate.set()
    rest = b"".join([chunk async for chunk in chunks])
    assert first + rest == DATA


async def test_wrong_bytes_never_reach_a_reader_whole(store: DiskBlobStore) -> None:
    corrupt = bytearray(DATA)
    corrupt[-1] ^= 0xFF
    metrics = Metrics()
    downloads = Downloads(store, metrics)
    download = downloads.join_or_start(DIGEST, Source(bytes(corrupt)).opener, Policy())[0]
    received = bytearray()
    with pytest.raises(DigestMismatch):
        async for chunk in read_chunks(download):
            received += chunk
    assert len(received) < len(DATA)
    assert store.size(DIGEST) is None
    assert list((store.root / "partial").iterdir()) == []
    assert metrics.registry.get_sample_value("mirror_digest_mismatches_total") == 1


async def test_a_dropped_upstream_leaves_nothing(store: DiskBlobStore) -> None:
    downloads = Downloads(store, Metrics())
    download = downloads.join_or_start(
        DIGEST, Source(DATA, fail_after=1024 * 1024).opener, Policy()
    )[0]
    with pytest.raises(UpstreamUnavailable, match="dropped"):
        await read_all(download)
    assert store.size(DIGEST) is None
    assert list((store.root / "partial").iterdir()) == []
    retry = downloads.join_or_start(DIGEST, Source(DATA).opener, Policy())[0]
    assert await read_all(retry) == DATA


async def test_download_finishes_when_its_first_reader_leaves(store: DiskBlobStore) -> None:
    source = Source(DATA, gate=True)
    downloads = Downloads(store, Metrics())
    download = downloads.join_or_start(DIGEST, source.opener, Policy())[0]
    reader = asyncio.create_task(read_all(download))
    await download.wait_ready()
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    assert source.gate is not None
    source.gate.set()
    # Another reader follows the same download to its end.
    assert await read_all(download) == DATA
    assert store.read(DIGEST) == DATA


async def test_range_of_a_growing_blob(store: DiskBlobStore) -> None:
    downloads = Downloads(store, Metrics())
    download = downloads.join_or_start(DIGEST, Source(DATA, gate=True).opener, Policy())[0]
    # The window lies in the first chunk: it is served while the rest is still to come.
    assert await read_all(download, 100, 5000) == DATA[100:5000]
    assert store.size(DIGEST) is None
    await downloads.close()
    assert list((store.root / "partial").iterdir()) == []


async def test_open_failure_reaches_every_reader(store: DiskBlobStore) -> None:
    @asynccontextmanager
    async def refused() -> AsyncIterator[UpstreamBody]:
        raise UpstreamUnavailable("upstream test unreachable", 503)
        yield  # pragma: no cover

    downloads = Downloads(store, Metrics())
    download = downloads.join_or_start(DIGEST, refused, Policy())[0]
    for _ in range(2):
        with pytest.raises(MirrorError, match="unreachable"):
            await download.wait_ready()


async def test_a_blob_not_admitted_is_served_but_not_kept(store: DiskBlobStore) -> None:
    policy = Policy(admit=False)
    downloads = Downloads(store, Metrics())
    download = downloads.join_or_start(DIGEST, Source(DATA).opener, policy)[0]
    assert await read_all(download) == DATA
    assert policy.admitted == [len(DATA)]
    assert policy.committed_sizes == []
    assert policy.finished_count == 1
    assert store.size(DIGEST) is None
    assert list((store.root / "partial").iterdir()) == []


class FullOnce(DiskBlobStore):
    """A store whose first write of each blob finds the disk full."""

    def writer(self, digest: str) -> DiskBlobWriter:
        writer = super().writer(digest)
        write = writer.write
        calls = 0

        def full_once(data: bytes) -> None:
            nonlocal calls
            calls += 1
            if calls == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
            write(data)

        writer.write = full_once  # type: ignore[method-assign]
        return writer


async def test_a_full_disk_makes_room_and_retries(tmp_path: Path) -> None:
    store = FullOnce(tmp_path)
    policy = Policy()
    downloads = Downloads(store, Metrics())
    download = downloads.join_or_start(DIGEST, Source(DATA).opener, policy)[0]
    assert await read_all(download) == DATA
    assert policy.room_asked == [256 * 1024]
    assert policy.committed_sizes == [len(DATA)]
    assert store.read(DIGEST) == DATA


async def test_a_full_disk_with_nothing_to_evict_fails_cleanly(tmp_path: Path) -> None:
    store = FullOnce(tmp_path)
    downloads = Downloads(store, Metrics())
    download = downloads.join_or_start(DIGEST, Source(DATA).opener, Policy(room=False))[0]
    with pytest.raises(InsufficientStorage, match="disk full"):
        await read_all(download)
    assert store.size(DIGEST) is None
    assert list((tmp_path / "partial").iterdir()) == []


async def test_a_slow_upstream_still_trickles_out(store: DiskBlobStore) -> None:
    """Later windows wait for a megabyte, but not forever: a few kilobytes go out too."""
    step, trickle = asyncio.Event(), asyncio.Event()

    @asynccontextmanager
    async def slow() -> AsyncIterator[UpstreamBody]:
        async def chunks() -> AsyncIterator[bytes]:
            yield DATA[:1000]
            await step.wait()
            yield DATA[1000:5000]
            await trickle.wait()
            yield DATA[5000:]

        yield UpstreamBody(len(DATA), chunks())

    downloads = Downloads(store, Metrics())
    download = downloads.join_or_start(DIGEST, slow, Policy())[0]
    windows = download.windows()
    assert await windows.__anext__() == (0, 999)  # the last byte so far is held back
    step.set()
    # 4 KB more, far from a megabyte, while the upstream is held: they go out anyway.
    assert await asyncio.wait_for(windows.__anext__(), 10) == (999, 4999)
    trickle.set()
    rest = [window async for window in windows]
    assert rest[-1][1] == len(DATA)

"""One upstream download per digest, followed by any number of readers as it grows.

A `Download` owns its upstream fetch as a background task, so it finishes and is
committed even if the request that started it goes away. Readers (the first client
included) read the partial file up to what has been written, except the last byte,
which is released only once the digest is verified. This module must not know the
HTTP server.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import BinaryIO, Protocol

from mirror.errors import DigestMismatch, InsufficientStorage, MirrorError, UpstreamUnavailable
from mirror.metrics import Metrics
from mirror.storage import BlobStore, BlobWriter

log = logging.getLogger(__name__)

MIN_WINDOW = 1 << 20
WINDOW_WAIT = 0.05  # seconds a reader waits to gather MIN_WINDOW before sending less

class UpstreamBody:
    """What an opener hands a download: the body's length (if known) and its chunks."""

    def __init__(self, size: int | None, chunks: AsyncIterator[bytes]) -> None:
        self.size = size
        self.chunks = chunks


Opener = Callable[[], AbstractAsyncContextManager[UpstreamBody]]


class FillPolicy(Protocol):
    """What a download asks of the cache around it (the quota)."""

    async def admit(self, size: int | None) -> bool:
        """The upstream answered with `size` (if known): True to keep the blob, False to
        pass it through (readers are served, then the bytes are discarded)."""
        ...

    async def make_room(self, needed: int) -> bool:
        """The disk is full: free space; True if anything was freed."""
        ...

    async def committed(self, size: int) -> None:
        """The blob is verified and visible in the store."""
        ...

    def finished(self) -> None:
        """The download is over, whatever its outcome (always called, once)."""
        ...


class Download:
    """A blob being fetched into the store; readers follow it with `read_range`."""

    def __init__(self, writer: BlobWriter) -> None:
        self.digest = writer.digest
        self.size: int | None = None
        self._writer = writer
        self._fd = writer.open_partial()
        # Readers may dup the descriptor after the download ends; it closes with the object.
        weakref.finalize(self, os.close, self._fd)
        self._written = 0
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._changed = asyncio.Event()
        self._verified = False
        self._error: BaseException | None = None

    async def wait_ready(self) -> int | None:
        """Wait until the upstream answered; return the blob size if it said.

        Raises the upstream's error (BlobUnknown, UpstreamUnavailable, ...).
        """
        await asyncio.shield(self._ready)
        return self.size

    def _available(self) -> int:
        if self._verified:
            return self._written
        return max(0, self._written - 1)

    async def _wait_past(self, offset: int) -> int:
        while True:
            if self._error is not None:
                raise self._error
            available = self._available()
            if available > offset or self._verified:
                return available
            self._changed.clear()
            await self._changed.wait()

    async def windows(
        self, start: int = 0, end: int | None = None
    ) -> AsyncGenerator[tuple[int, int], None]:
        """Yield byte windows [begin, stop) of [start, end) as they become readable
        (to the end of the blob if end is None); read them from `open_reader()`.

        Raises the download's error, after the windows already yielded, if it fails;
        the caller must then cut its client's connection.
        """
        position, least = start, 1
        while end is None or position < end:
            want = least if end is None else min(least, end - position)
            available = await self._wait_for_window(position, want)
            if available <= position:
                return  # verified and nothing more to read
            stop = available if end is None else min(available, end)
            yield position, stop
            # The first window goes out at once; later ones gather a megabyte or so,
            # so a reader that keeps up does not pay a sendfile per small write.
            position, least = stop, MIN_WINDOW

    async def _wait_for_window(self, position: int, want: int) -> int:
        """Bytes readable once `want` are past `position`, or whatever is there after
        WINDOW_WAIT (so a slow upstream still trickles out), at least one."""
        if want > 1:
            try:
                return await asyncio.wait_for(self._wait_past(position + want - 1), WINDOW_WAIT)
            except TimeoutError:
                pass
        return await self._wait_past(position)

    def open_reader(self) -> BinaryIO:
        """A new read-only file on the blob's bytes (the caller closes it); it keeps
        them after the download commits or discards."""
        return os.fdopen(os.dup(self._fd), "rb", buffering=0)

    async def run(self, opener: Opener, metrics: Metrics, policy: FillPolicy) -> None:
        """Fetch, write, verify and commit (or only verify, if not admitted).

        Never raises but CancelledError: readers see the outcome.
        """
        try:
            async with opener() as body:
                self.size = body.size
                keep = await policy.admit(body.size)
                self._ready.set_result(None)
                async for chunk in body.chunks:
                    await self._write(chunk, policy)
                if self.size is not None and self._written != self.size:
                    raise UpstreamUnavailable(
                        f"upstream sent {self._written} of {self.size} bytes of {self.digest}"
                    )
            # A kept blob is visible before its last byte goes out, so whoever asks
            # next finds it in the store.
            await asyncio.to_thread(self._writer.commit if keep else self._writer.verify)
            self.size = self._written
            self._verified = True
            if keep:
                await policy.committed(self._written)
            else:
                self._writer.discard()
        except DigestMismatch as error:
            metrics.digest_mismatches.inc()
            log.warning("digest mismatch: %s", error.message)
            self._fail(error)
        except MirrorError as error:
            self._fail(error)
        except asyncio.CancelledError:
            self._fail(UpstreamUnavailable("download cancelled: the mirror is shutting down", 503))
            raise
        except Exception as error:  # a broken connection must reach every reader
            self._fail(UpstreamUnavailable(f"download of {self.digest} failed: {error!r}"))
        finally:
            self._changed.set()
            policy.finished()

    async def _write(self, chunk: bytes, policy: FillPolicy) -> None:
        try:
            await asyncio.to_thread(self._writer.write, chunk)
        except OSError as error:
            if error.errno != errno.ENOSPC or not await policy.make_room(len(chunk)):
                raise InsufficientStorage(f"disk full while caching {self.digest}") from error
            await asyncio.to_thread(self._writer.write, chunk)
        self._written += len(chunk)
        self._changed.set()

    def _fail(self, error: BaseException) -> None:
        self._error = error
        self._writer.discard()
        if not self._ready.done():
            self._ready.set_exception(error)
            self._ready.exception()  # retrieved here so an unjoined failure is not logged


class Downloads:
    """The downloads under way, by digest; at most one per digest."""

    def __init__(self, store: BlobStore, metrics: Metrics) -> None:
        self._store = store
        self._metrics = metrics
        self._active: dict[str, Download] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def get(self, digest: str) -> Download | None:
        """The download of `digest` under way, if any."""
        return self._active.get(digest)

    def join_or_start(
        self, digest: str, opener: Opener, policy: FillPolicy
    ) -> tuple[Download, bool]:
        """The download of `digest` under way (joined: True), or a new one started with
        `opener` under `policy` (joined: False). Never yields to the loop, so at most one
        starts."""
        download = self._active.get(digest)
        if download is not None:
            return download, True
        download = Download(self._store.writer(digest))
        self._active[digest] = download
        self._metrics.downloads_in_flight.inc()
        task = asyncio.create_task(self._run(download, opener, policy), name=f"download {digest}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return download, False

    async def _run(self, download: Download, opener: Opener, policy: FillPolicy) -> None:
        try:
            await download.run(opener, self._metrics, policy)
        finally:
            del self._active[download.digest]
            self._metrics.downloads_in_flight.dec()

    async def close(self) -> None:
        """Cancel every download under way and wait for them to clean up."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task

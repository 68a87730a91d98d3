"""Pull-through policy for blobs: a hit is a file, a miss joins or starts one download.

Digests are immutable, so a cached blob never goes upstream again. Upstream 404s
are remembered for `negative_ttl`. Must not know the HTTP server.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import BinaryIO

from mirror.errors import BlobUnknown
from mirror.evict import Quota
from mirror.fetch import Download, Downloads, UpstreamBody
from mirror.index import BlobIndex
from mirror.memo import Memo
from mirror.metrics import Metrics
from mirror.storage import BlobStore
from mirror.upstream import UpstreamClient


@dataclass(frozen=True, slots=True)
class CachedBlob:
    """A committed blob, opened: the caller sends and closes `file`."""

    file: BinaryIO
    size: int


class BlobCache:
    """Answers blob requests from the store or from a shared upstream download."""

    def __init__(
        self,
        upstreams: Mapping[str, UpstreamClient],
        store: BlobStore,
        downloads: Downloads,
        memo: Memo,
        metrics: Metrics,
        index: BlobIndex,
        quota: Quota,
    ) -> None:
        self._upstreams = upstreams
        self._store = store
        self._downloads = downloads
        self._memo = memo
        self._metrics = metrics
        self._index = index
        self._quota = quota

    async def get(self, upstream: str, repo: str, digest: str) -> CachedBlob | Download:
        """A cached blob, or a download under way whose upstream has answered.

        Raises BlobUnknown (the upstream has no such blob) or the upstream's error.
        """
        cached = self._cached(digest)
        if cached is not None:
            self._metrics.cache_requests.labels("blob", "hit").inc()
            return cached
        self._metrics.cache_requests.labels("blob", "miss").inc()
        if self._downloads.get(digest) is None:
            await self._check_not_found(upstream, repo, digest)
        download, joined = self._downloads.join_or_start(
            digest,
            lambda: self._open(upstream, repo, digest),
            self._quota.fill(digest, "blob", f"{upstream}/{repo}"),
        )
        if joined:
            self._metrics.download_joins.inc()
        try:
            await download.wait_ready()
        except BlobUnknown as error:
            await self._memo.remember_not_found(upstream, repo, "blob", digest, error)
            raise
        return download

    async def size(self, upstream: str, repo: str, digest: str) -> tuple[int, str]:
        """The size of a blob for HEAD, and hit or miss: from the cache, a download under
        way, or an upstream HEAD (which does not start a download)."""
        size = self._store.size(digest)
        if size is not None:
            self._metrics.cache_requests.labels("blob", "hit").inc()
            self._index.touch(digest)
            return size, "hit"
        self._metrics.cache_requests.labels("blob", "miss").inc()
        download = self._downloads.get(digest)
        if download is not None and (size := await download.wait_ready()) is not None:
            return size, "miss"
        await self._check_not_found(upstream, repo, digest)
        try:
            async with self._upstreams[upstream].request(
                "HEAD", f"{repo}/blobs/{digest}", kind="blob", repo=repo
            ) as response:
                length = response.content_length
        except BlobUnknown as error:
            await self._memo.remember_not_found(upstream, repo, "blob", digest, error)
            raise
        if length is None:
            raise BlobUnknown(f"upstream {upstream} gave no size for {repo}@{digest}")
        return length, "miss"

    def _cached(self, digest: str) -> CachedBlob | None:
        file = self._store.open(digest)
        if file is None:
            return None
        self._index.touch(digest)
        return CachedBlob(file, os.fstat(file.fileno()).st_size)

    async def _check_not_found(self, upstream: str, repo: str, digest: str) -> None:
        remembered = await self._memo.not_found(upstream, repo, "blob", digest)
        if remembered is not None:
            raise remembered

    @asynccontextmanager
    async def _open(self, upstream: str, repo: str, digest: str) -> AsyncIterator[UpstreamBody]:
        async with self._upstreams[upstream].request(
            "GET", f"{repo}/blobs/{digest}", kind="blob", repo=repo
        ) as response:
            yield UpstreamBody(
                response.content_length, self._count(upstream, response.content.iter_any())
            )

    async def _count(self, upstream: str, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        counter = self._metrics.upstream_bytes.labels(upstream)
        async for chunk in chunks:
            counter.inc(len(chunk))
            yield chunk

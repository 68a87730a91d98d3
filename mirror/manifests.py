"""Pull-through policy for manifests: digests are cache-first, tags are revalidated.

A tag confirmed within `tag_ttl` is answered without any upstream request; after
that one upstream HEAD tells whether it moved. When the upstream is down (or
rate-limiting) a cached manifest is served stale if `serve_stale` allows.
Upstream 404s are remembered for `negative_ttl`. Must not know the HTTP server.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Callable, Coroutine, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

from aiohttp import ClientResponse

from mirror.errors import (
    DigestMismatch,
    ManifestUnknown,
    MirrorError,
    NameUnknown,
    TooManyRequests,
    UpstreamUnavailable,
)
from mirror.evict import Quota
from mirror.index import BlobIndex
from mirror.memo import Memo
from mirror.metrics import Metrics
from mirror.oci import (
    CONTENT_DIGEST,
    MANIFEST_TYPES,
    MAX_MANIFEST_BYTES,
    UPSTREAM_ACCEPT,
    accepts,
    is_digest,
)
from mirror.refs import Refs, TagRecord
from mirror.singleflight import SingleFlight
from mirror.storage import BlobStore
from mirror.upstream import UpstreamClient
from mirror.upstreamerrors import read_limited

log = logging.getLogger(__name__)

_Work = Callable[[str, str, str], Coroutine[Any, Any, "Manifest"]]
# Upstream failures that a stale manifest may stand in for.
_OUTAGES = (UpstreamUnavailable, TooManyRequests)


@dataclass(frozen=True, slots=True)
class Manifest:
    """A cached manifest, and how the request for it was answered (hit|miss|stale)."""

    digest: str
    media_type: str
    body: bytes
    result: str


def detect_media_type(body: bytes) -> str:
    """The media type a manifest declares, or what its shape says (OCI manifests may omit it)."""
    try:
        document = json.loads(body)
    except ValueError:
        return MANIFEST_TYPES[2]
    declared = document.get("mediaType") if isinstance(document, dict) else None
    if isinstance(declared, str) and declared:
        return declared
    if isinstance(document, dict) and "manifests" in document:
        return MANIFEST_TYPES[0]
    return MANIFEST_TYPES[2]


class ManifestCache:
    """Answers manifest requests from the store, the upstream, or stale records."""

    def __init__(
        self,
        upstreams: Mapping[str, UpstreamClient],
        store: BlobStore,
        refs: Refs,
        memo: Memo,
        metrics: Metrics,
        quota: Quota,
        index: BlobIndex,
        serve_stale: bool,
    ) -> None:
        self._upstreams = upstreams
        self._store = store
        self._refs = refs
        self._memo = memo
        self._metrics = metrics
        self._quota = quota
        self._index = index
        self._serve_stale = serve_stale
        self._flights: SingleFlight[tuple[str, str, str], Manifest] = SingleFlight()

    async def get(
        self, upstream: str, repo: str, reference: str, accept: frozenset[str]
    ) -> Manifest:
        """The manifest for a tag or digest. Raises ManifestUnknown, NameUnknown, Upstream*."""
        if is_digest(reference):
            manifest = self._cached(upstream, repo, reference, "hit")
            if manifest is None:
                manifest = await self._flight(upstream, repo, reference, self._fill_digest)
        else:
            manifest = await self._by_tag(upstream, repo, reference)
        self._metrics.cache_requests.labels("manifest", manifest.result).inc()
        if not accepts(accept, manifest.media_type):
            raise ManifestUnknown(
                f"manifest {repo}:{reference} is {manifest.media_type}, "
                f"which the request's Accept header does not allow"
            )
        return manifest

    async def _flight(self, upstream: str, repo: str, reference: str, work: _Work) -> Manifest:
        remembered = await self._memo.not_found(upstream, repo, "manifest", reference)
        if remembered is not None:
            raise remembered
        try:
            manifest, _ = await self._flights.do(
                (upstream, repo, reference), lambda: work(upstream, repo, reference)
            )
        except (ManifestUnknown, NameUnknown) as error:
            await self._memo.remember_not_found(upstream, repo, "manifest", reference, error)
            raise
        return manifest

    async def _by_tag(self, upstream: str, repo: str, tag: str) -> Manifest:
        check = await self._memo.fresh_tag(upstream, repo, tag)
        if check is not None:
            self._index.touch(check.digest)
            return Manifest(check.digest, check.media_type, check.body, "hit")
        return await self._flight(upstream, repo, tag, self._revalidate_tag)

    def _cached(
        self, upstream: str, repo: str, digest: str, result: str, media_type: str | None = None
    ) -> Manifest | None:
        try:
            body = self._store.read(digest)
        except FileNotFoundError:
            return None
        self._index.touch(digest)
        media_type = (
            media_type
            or self._refs.manifest_type(upstream, repo, digest)
            or detect_media_type(body)
        )
        return Manifest(digest, media_type, body, result)

    async def _revalidate_tag(self, upstream: str, repo: str, tag: str) -> Manifest:
        record = self._refs.tag(upstream, repo, tag)
        cached = None
        if record is not None:
            cached = self._cached(upstream, repo, record.digest, "hit", record.media_type)
        if cached is None:
            return await self._fill_tag(upstream, repo, tag)
        try:
            if await self._head_digest(upstream, repo, tag) != cached.digest:
                return await self._fill_tag(upstream, repo, tag)
        except _OUTAGES as error:
            if not self._serve_stale:
                raise
            log.warning("serving %s:%s stale from cache: %s", repo, tag, error)
            return Manifest(cached.digest, cached.media_type, cached.body, "stale")
        await self._memo.tag_checked(
            upstream, repo, tag, cached.digest, cached.media_type, cached.body
        )
        return cached

    def _ask(
        self, method: str, upstream: str, repo: str, reference: str
    ) -> AbstractAsyncContextManager[ClientResponse]:
        """A manifest request upstream, accepting every manifest type."""
        return self._upstreams[upstream].request(
            method,
            f"{repo}/manifests/{reference}",
            kind="manifest",
            repo=repo,
            headers={"Accept": UPSTREAM_ACCEPT},
        )

    async def _head_digest(self, upstream: str, repo: str, tag: str) -> str | None:
        async with self._ask("HEAD", upstream, repo, tag) as response:
            return response.headers.get(CONTENT_DIGEST)

    async def _fill_tag(self, upstream: str, repo: str, tag: str) -> Manifest:
        manifest = await self._download(upstream, repo, tag)
        await asyncio.to_thread(
            self._refs.set_tag, upstream, repo, tag, TagRecord(manifest.digest, manifest.media_type)
        )
        await self._memo.tag_checked(
            upstream, repo, tag, manifest.digest, manifest.media_type, manifest.body
        )
        return manifest

    async def _fill_digest(self, upstream: str, repo: str, digest: str) -> Manifest:
        manifest = await self._download(upstream, repo, digest)
        if manifest.digest != digest:
            raise self._mismatch(upstream, f"manifest {repo}@{digest} hashed to {manifest.digest}")
        await asyncio.to_thread(
            self._refs.set_manifest, upstream, repo, digest, manifest.media_type
        )
        return manifest

    async def _download(self, upstream: str, repo: str, reference: str) -> Manifest:
        async with self._ask("GET", upstream, repo, reference) as response:
            if (response.content_length or 0) > MAX_MANIFEST_BYTES:
                raise UpstreamUnavailable(f"upstream {upstream}: manifest over 4 MiB refused")
            body = await read_limited(response, MAX_MANIFEST_BYTES + 1)
            claimed = response.headers.get(CONTENT_DIGEST)
            content_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        self._metrics.upstream_bytes.labels(upstream).inc(len(body))
        if len(body) > MAX_MANIFEST_BYTES:
            raise UpstreamUnavailable(f"upstream {upstream}: manifest over 4 MiB refused")
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        if claimed and claimed != digest:
            raise self._mismatch(upstream, f"manifest {repo}:{reference} claimed {claimed}")
        if self._store.size(digest) is None:
            await asyncio.to_thread(self._store_bytes, digest, body)
        await self._quota.added(digest, len(body), "manifest", f"{upstream}/{repo}")
        media_type = content_type if content_type in MANIFEST_TYPES else detect_media_type(body)
        return Manifest(digest, media_type, body, "miss")

    def _store_bytes(self, digest: str, body: bytes) -> None:
        writer = self._store.writer(digest)
        try:
            writer.write(body)
            writer.commit()
        finally:
            writer.discard()

    def _mismatch(self, upstream: str, what: str) -> MirrorError:
        self._metrics.digest_mismatches.inc()
        message = f"upstream {upstream}: {what}, but its bytes hash differently; not cached"
        log.warning("digest mismatch: %s", message)
        return DigestMismatch(message)

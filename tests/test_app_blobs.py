"""Blobs through the whole app against the recording fake upstream."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.fakeregistry import FakeRegistry

Client = TestClient[web.Request, web.Application]
DATA = os.urandom(2 * 1024 * 1024 + 5)


def blob_path(digest: str) -> str:
    return f"/v2/library/app/blobs/{digest}"


def upstream_gets(fake: FakeRegistry, digest: str) -> int:
    return len(fake.calls("GET", blob_path(digest)))


def cached_files(storage: Path) -> list[Path]:
    return [p for p in (storage / "blobs").rglob("*") if p.is_file()]


async def test_concurrent_cold_requests_share_one_upstream_get(
    mirror_client: Client, fake_registry: FakeRegistry
) -> None:
    digest = fake_registry.add_blob(DATA)

    async def fetch() -> bytes:
        async with mirror_client.get(f"/v2/app/blobs/{digest}") as response:
            assert response.status == 200
            assert response.headers["Docker-Content-Digest"] == digest
            return await response.read()

    bodies = await asyncio.gather(*(fetch() for _ in range(20)))
    assert all(body == DATA for body in bodies)
    assert upstream_gets(fake_registry, digest) == 1
    # A later request is a hit: no new upstream request at all.
    before = len(fake_registry.requests)
    assert await fetch() == DATA
    assert len(fake_registry.requests) == before


async def test_a_joiner_gets_bytes_before_the_download_finishes(
    mirror_client: Client, fake_registry: FakeRegistry
) -> None:
    digest = fake_registry.add_blob(DATA)
    fake_registry.gate = asyncio.Event()
    first = await mirror_client.get(f"/v2/app/blobs/{digest}")
    second = await mirror_client.get(f"/v2/app/blobs/{digest}")
    head_first = await first.content.readexactly(512)
    head_second = await second.content.readexactly(512)
    # The upstream is still held at its first chunk: both readers are ahead of the end.
    assert head_first == head_second == DATA[:512]
    assert not fake_registry.gate.is_set()
    fake_registry.release()
    assert head_first + await first.read() == DATA
    assert head_second + await second.read() == DATA
    assert upstream_gets(fake_registry, digest) == 1


async def test_corrupt_upstream_bytes_are_cut_and_not_cached(
    mirror_client: Client, fake_registry: FakeRegistry, tmp_path: Path
) -> None:
    digest = fake_registry.add_blob(DATA)
    fake_registry.corrupt.add(digest)
    response = await mirror_client.get(f"/v2/app/blobs/{digest}")
    with pytest.raises(aiohttp.ClientPayloadError):
        await response.read()
    assert cached_files(tmp_path) == []
    fake_registry.corrupt.clear()
    async with mirror_client.get(f"/v2/app/blobs/{digest}") as again:
        assert await again.read() == DATA
    assert upstream_gets(fake_registry, digest) == 2
    metrics = await (await mirror_client.get("/metrics")).text()
    assert "mirror_digest_mismatches_total 1.0" in metrics


async def test_an_upstream_drop_mid_blob_leaves_no_partial(
    mirror_client: Client, fake_registry: FakeRegistry, tmp_path: Path
) -> None:
    digest = fake_registry.add_blob(DATA)
    fake_registry.drop_after[digest] = 300_000
    response = await mirror_client.get(f"/v2/app/blobs/{digest}")
    with pytest.raises(aiohttp.ClientPayloadError):
        await response.read()
    assert cached_files(tmp_path) == []
    assert list((tmp_path / "partial").iterdir()) == []


async def test_download_completes_after_its_client_leaves(
    mirror_client: Client, fake_registry: FakeRegistry, tmp_path: Path
) -> None:
    digest = fake_registry.add_blob(DATA)
    fake_registry.gate = asyncio.Event()
    response = await mirror_client.get(f"/v2/app/blobs/{digest}")
    assert await response.content.readexactly(100) == DATA[:100]
    response.close()
    fake_registry.release()
    # Whoever asks next is served from the same download or, once it is done, the cache.
    async with mirror_client.get(f"/v2/app/blobs/{digest}") as again:
        assert await again.read() == DATA
    assert upstream_gets(fake_registry, digest) == 1
    assert [p.name for p in cached_files(tmp_path)] == [digest.split(":")[1]]


async def test_range_on_cold_and_warm_blobs(
    mirror_client: Client, fake_registry: FakeRegistry
) -> None:
    digest = fake_registry.add_blob(DATA)
    headers = {"Range": "bytes=1000-1999"}
    async with mirror_client.get(f"/v2/app/blobs/{digest}", headers=headers) as cold:
        assert cold.status == 206
        assert cold.headers["Content-Range"] == f"bytes 1000-1999/{len(DATA)}"
        assert await cold.read() == DATA[1000:2000]
    # The whole blob is fetched once and cached: the warm range comes from disk.
    async with mirror_client.get(f"/v2/app/blobs/{digest}", headers={"Range": "bytes=-10"}) as warm:
        assert warm.status == 206
        assert await warm.read() == DATA[-10:]
    assert upstream_gets(fake_registry, digest) == 1
    async with mirror_client.get(
        f"/v2/app/blobs/{digest}", headers={"Range": f"bytes={len(DATA)}-"}
    ) as past:
        assert past.status == 416


async def test_head_and_conditional_requests(
    mirror_client: Client, fake_registry: FakeRegistry
) -> None:
    digest = fake_registry.add_blob(DATA)
    async with mirror_client.head(f"/v2/app/blobs/{digest}") as cold:
        assert cold.status == 200
        assert cold.headers["Content-Length"] == str(len(DATA))
        assert cold.headers["Docker-Content-Digest"] == digest
    assert upstream_gets(fake_registry, digest) == 0  # a HEAD does not start a download
    await (await mirror_client.get(f"/v2/app/blobs/{digest}")).read()
    before = len(fake_registry.requests)
    async with mirror_client.head(f"/v2/app/blobs/{digest}") as warm:
        assert warm.headers["Content-Length"] == str(len(DATA))
    async with mirror_client.get(
        f"/v2/app/blobs/{digest}", headers={"If-None-Match": f'"{digest}"'}
    ) as unchanged:
        assert unchanged.status == 304
    assert len(fake_registry.requests) == before


async def test_unknown_blob_is_remembered_briefly(
    mirror_client: Client, fake_registry: FakeRegistry
) -> None:
    digest = "sha256:" + "0" * 64
    for _ in range(3):
        async with mirror_client.get(f"/v2/app/blobs/{digest}") as response:
            assert response.status == 404
            body = await response.json()
            assert body["errors"][0]["code"] == "BLOB_UNKNOWN"
    assert upstream_gets(fake_registry, digest) == 1

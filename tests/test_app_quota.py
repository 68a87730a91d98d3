"""The storage quota through the whole app: LRU eviction, pins, pass-through, readers."""

from __future__ import annotations

import os
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp.plugin import AiohttpClient

from mirror.app import build_app
from mirror.appkeys import INDEX, QUOTA
from mirror.config import StorageSettings, UpstreamSettings
from tests.conftest import mirror_settings
from tests.fakeregistry import FakeImage, FakeRegistry

Client = TestClient[web.Request, web.Application]
QUOTA_BYTES = 1_000_000
LAYER = 400_000  # each image is ~40% of the quota


def held(storage: Path) -> dict[str, int]:
    """Files under blobs/ by digest hex, with their sizes."""
    return {p.name: p.stat().st_size for p in (storage / "blobs").rglob("*") if p.is_file()}


async def quota_client(
    aiohttp_client: AiohttpClient, fake: FakeRegistry, storage: Path, **options: object
) -> Client:
    quota = StorageSettings(max_size=QUOTA_BYTES, **options)  # type: ignore[arg-type]
    upstream = UpstreamSettings("docker.io", fake.url, retries=0)
    return await aiohttp_client(build_app(mirror_settings(storage, upstream, quota=quota)))


async def pull(client: Client, image: FakeImage) -> None:
    """What a client does: the manifest by tag, then the config and every layer."""
    async with client.get(f"/v2/{image.repo}/manifests/{image.tag}") as manifest:
        assert manifest.status == 200
    for digest in (image.config_digest, *image.layer_digests):
        async with client.get(f"/v2/{image.repo}/blobs/{digest}") as blob:
            assert blob.status == 200
            await blob.read()


def hexes(image: FakeImage) -> set[str]:
    return {d.split(":")[1] for d in (image.digest, image.config_digest, *image.layer_digests)}


def images(fake: FakeRegistry, *names: str) -> list[FakeImage]:
    return [
        fake.add_image(f"library/{name}", "1", [os.urandom(LAYER)], config=name.encode())
        for name in names
    ]


async def test_least_recently_used_image_goes_first(
    aiohttp_client: AiohttpClient, fake_registry: FakeRegistry, tmp_path: Path
) -> None:
    a, b, c = images(fake_registry, "a", "b", "c")
    client = await quota_client(aiohttp_client, fake_registry, tmp_path)
    for image in (a, b, c):
        await pull(client, image)
        assert sum(held(tmp_path).values()) <= QUOTA_BYTES
    assert not hexes(a) & held(tmp_path).keys()
    assert hexes(b) | hexes(c) <= held(tmp_path).keys()
    metrics = await (await client.get("/metrics")).text()
    assert "mirror_evictions_total 3.0" in metrics  # A's manifest, config and layer
    index = client.app[INDEX]
    assert index.total() == sum(held(tmp_path).values())


async def test_a_hit_makes_an_image_recently_used(
    aiohttp_client: AiohttpClient, fake_registry: FakeRegistry, tmp_path: Path
) -> None:
    a, b, c = images(fake_registry, "a", "b", "c")
    client = await quota_client(aiohttp_client, fake_registry, tmp_path)
    await pull(client, a)
    await pull(client, b)
    await pull(client, a)  # all hits: A is now more recent than B
    await pull(client, c)
    assert not hexes(b) & held(tmp_path).keys()
    assert hexes(a) | hexes(c) <= held(tmp_path).keys()


async def test_pinned_images_survive_pressure(
    aiohttp_client: AiohttpClient, fake_registry: FakeRegistry, tmp_path: Path
) -> None:
    a, *others = images(fake_registry, "a", "b", "c", "d", "e")
    client = await quota_client(
        aiohttp_client, fake_registry, tmp_path, pinned=("docker.io/library/a:1",)
    )
    await pull(client, a)
    for image in others:
        await pull(client, image)
        assert sum(held(tmp_path).values()) <= QUOTA_BYTES
    assert hexes(a) <= held(tmp_path).keys()
    assert hexes(others[-1]) <= held(tmp_path).keys()
    assert not hexes(others[0]) & held(tmp_path).keys()


async def test_a_blob_larger_than_the_quota_passes_through(
    aiohttp_client: AiohttpClient, fake_registry: FakeRegistry, tmp_path: Path
) -> None:
    huge = os.urandom(QUOTA_BYTES + 1)
    digest = fake_registry.add_blob(huge)
    client = await quota_client(aiohttp_client, fake_registry, tmp_path)
    for _ in range(2):
        async with client.get(f"/v2/library/x/blobs/{digest}") as response:
            assert response.status == 200
            assert await response.read() == huge
    assert held(tmp_path) == {}
    assert list((tmp_path / "partial").iterdir()) == []
    assert len(fake_registry.calls("GET", f"/v2/library/x/blobs/{digest}")) == 2


async def test_a_reader_keeps_every_byte_of_a_blob_evicted_under_it(
    aiohttp_client: AiohttpClient, fake_registry: FakeRegistry, tmp_path: Path
) -> None:
    data = os.urandom(32 * 1024 * 1024)
    digest = fake_registry.add_blob(data)
    upstream = UpstreamSettings("docker.io", fake_registry.url, retries=0)
    client = await aiohttp_client(build_app(mirror_settings(tmp_path, upstream)))
    await (await client.get(f"/v2/library/x/blobs/{digest}")).read()
    reader = await client.get(f"/v2/library/x/blobs/{digest}")
    first = await reader.content.readexactly(65536)
    evicted = await client.app[QUOTA].evict_to(0)
    assert evicted.count == 1
    assert held(tmp_path) == {}
    assert first + await reader.read() == data

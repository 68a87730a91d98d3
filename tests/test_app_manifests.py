"""Manifests through the whole app: exact bytes, tag TTL, revalidation, stale serving."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp.plugin import AiohttpClient

from mirror.app import build_app
from mirror.config import UpstreamSettings
from mirror.oci import DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST
from tests.conftest import FakeClock, closed_port_url, mirror_settings
from tests.fakeregistry import FakeImage, FakeRegistry

Client = TestClient[web.Request, web.Application]
TAG_PATH = "/v2/library/app/manifests/1"


def image(fake: FakeRegistry, tag: str = "1", layer: bytes = b"layer one") -> FakeImage:
    return fake.add_image("library/app", tag, [layer])


def metric(text: str, sample: str) -> float:
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return 0.0


async def test_get_and_head_by_tag_return_the_upstream_bytes(
    mirror_client: Client, fake_registry: FakeRegistry
) -> None:
    pushed = image(fake_registry)
    async with mirror_client.get("/v2/app/manifests/1") as response:
        assert response.status == 200
        assert await response.read() == pushed.manifest
        assert response.headers["Docker-Content-Digest"] == pushed.digest
        assert response.headers["Content-Type"] == OCI_MANIFEST
        assert response.headers["ETag"] == f'"{pushed.digest}"'
    async with mirror_client.head("/v2/app/manifests/1") as head:
        assert head.status == 200
        assert head.headers["Content-Length"] == str(len(pushed.manifest))
        assert head.headers["Docker-Content-Digest"] == pushed.digest
        assert await head.read() == b""


async def test_tag_within_ttl_causes_no_upstream_request(
    mirror_client: Client, fake_registry: FakeRegistry, clock: FakeClock
) -> None:
    image(fake_registry)
    await (await mirror_client.get("/v2/app/manifests/1")).read()
    before = len(fake_registry.requests)
    clock.advance(299)
    for _ in range(5):
        async with mirror_client.head("/v2/app/manifests/1") as head:
            assert head.status == 200
    assert len(fake_registry.requests) == before


async def test_tag_after_ttl_is_revalidated_with_one_head(
    mirror_client: Client, fake_registry: FakeRegistry, clock: FakeClock
) -> None:
    first = image(fake_registry)
    await (await mirror_client.get("/v2/app/manifests/1")).read()
    clock.advance(301)
    async with mirror_client.get("/v2/app/manifests/1") as unchanged:
        assert unchanged.headers["Docker-Content-Digest"] == first.digest
    assert len(fake_registry.calls("HEAD", TAG_PATH)) == 1
    assert len(fake_registry.calls("GET", TAG_PATH)) == 1
    moved = image(fake_registry, layer=b"layer two")
    clock.advance(301)
    async with mirror_client.get("/v2/app/manifests/1") as response:
        assert response.headers["Docker-Content-Digest"] == moved.digest
        assert await response.read() == moved.manifest
    assert len(fake_registry.calls("GET", TAG_PATH)) == 2


async def test_stale_manifest_served_while_upstream_fails(
    mirror_client: Client, fake_registry: FakeRegistry, clock: FakeClock
) -> None:
    pushed = image(fake_registry)
    await (await mirror_client.get("/v2/app/manifests/1")).read()
    clock.advance(301)
    fake_registry.fail(TAG_PATH, 503, times=10)
    async with mirror_client.get("/v2/app/manifests/1") as response:
        assert response.status == 200
        assert await response.read() == pushed.manifest
    metrics = await (await mirror_client.get("/metrics")).text()
    sample = 'mirror_cache_requests_total{kind="manifest",result="stale"}'
    assert metric(metrics, sample) == 1


async def test_restart_with_upstream_gone_serves_from_disk(
    aiohttp_client: AiohttpClient,
    mirror_client: Client,
    fake_registry: FakeRegistry,
    tmp_path: Path,
) -> None:
    pushed = image(fake_registry)
    await (await mirror_client.get("/v2/app/manifests/1")).read()
    await (await mirror_client.get(f"/v2/app/blobs/{pushed.layer_digests[0]}")).read()
    offline = UpstreamSettings("docker.io", closed_port_url(), retries=0)
    restarted = await aiohttp_client(build_app(mirror_settings(tmp_path, offline)))
    async with restarted.get("/v2/app/manifests/1") as manifest:
        assert manifest.status == 200
        assert await manifest.read() == pushed.manifest
    async with restarted.get(f"/v2/app/manifests/{pushed.digest}") as by_digest:
        assert by_digest.status == 200
    async with restarted.get(f"/v2/app/blobs/{pushed.layer_digests[0]}") as blob:
        assert await blob.read() == b"layer one"
    async with restarted.get("/v2/app/manifests/2") as missing:
        assert missing.status == 503
        error = (await missing.json())["errors"][0]
        assert error["code"] == "UNAVAILABLE"
        assert "docker.io" in error["message"]


async def test_no_stale_serving_when_disabled(
    aiohttp_client: AiohttpClient,
    fake_registry: FakeRegistry,
    tmp_path: Path,
    clock: FakeClock,
) -> None:
    image(fake_registry)
    upstream = UpstreamSettings("docker.io", fake_registry.url, retries=0)
    settings = mirror_settings(tmp_path, upstream, serve_stale=False)
    client = await aiohttp_client(build_app(settings, clock=clock))
    await (await client.get("/v2/app/manifests/1")).read()
    clock.advance(301)
    fake_registry.fail(TAG_PATH, 503, times=5)
    async with client.get("/v2/app/manifests/1") as response:
        assert response.status == 502


async def test_digest_requests_for_cached_manifests_never_go_upstream(
    mirror_client: Client, fake_registry: FakeRegistry, clock: FakeClock
) -> None:
    pushed = image(fake_registry)
    async with mirror_client.get(f"/v2/app/manifests/{pushed.digest}") as first:
        assert await first.read() == pushed.manifest
    before = len(fake_registry.requests)
    clock.advance(10**6)
    async with mirror_client.get(f"/v2/app/manifests/{pushed.digest}") as again:
        assert await again.read() == pushed.manifest
        assert again.headers["Content-Type"] == OCI_MANIFEST
    assert len(fake_registry.requests) == before


async def test_concurrent_tag_requests_share_one_upstream_get(
    mirror_client: Client, fake_registry: FakeRegistry
) -> None:
    pushed = image(fake_registry)

    async def get() -> bytes:
        async with mirror_client.get("/v2/app/manifests/1") as response:
            return await response.read()

    bodies = await asyncio.gather(*(get() for _ in range(20)))
    assert all(body == pushed.manifest for body in bodies)
    assert len(fake_registry.calls("GET", TAG_PATH)) == 1


async def test_accept_lines_are_merged_and_respected(
    mirror_client: Client, fake_registry: FakeRegistry
) -> None:
    amd64, arm64 = image(fake_registry, "a"), image(fake_registry, "b", b"other")
    fake_registry.add_index("library/app", "multi", [amd64, arm64])
    several_lines = [("Accept", DOCKER_MANIFEST), ("Accept", f"{OCI_INDEX}, {OCI_MANIFEST}")]
    async with mirror_client.get("/v2/app/manifests/multi", headers=several_lines) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == OCI_INDEX
        assert len(json.loads(await response.read())["manifests"]) == 2
    narrow = {"Accept": DOCKER_MANIFEST}
    async with mirror_client.get("/v2/app/manifests/multi", headers=narrow) as refused:
        assert refused.status == 404
        assert (await refused.json())["errors"][0]["code"] == "MANIFEST_UNKNOWN"


async def test_upstream_404_is_remembered_briefly(
    mirror_client: Client, fake_registry: FakeRegistry, clock: FakeClock
) -> None:
    image(fake_registry)
    for _ in range(3):
        async with mirror_client.get("/v2/app/manifests/nope") as response:
            assert response.status == 404
            assert (await response.json())["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    assert len(fake_registry.calls("GET", "/v2/library/app/manifests/nope")) == 1
    clock.advance(31)
    await (await mirror_client.get("/v2/app/manifests/nope")).read()
    assert len(fake_registry.calls("GET", "/v2/library/app/manifests/nope")) == 2


async def test_a_manifest_whose_bytes_do_not_match_is_refused(
    mirror_client: Client, fake_registry: FakeRegistry
) -> None:
    pushed = image(fake_registry)
    fake_registry.manifests[("library/app", pushed.digest)] = (b'{"tampered":1}', OCI_MANIFEST)
    async with mirror_client.get(f"/v2/app/manifests/{pushed.digest}") as response:
        assert response.status == 502
        assert "hash" in (await response.json())["errors"][0]["message"]

"""The v2 surface: base endpoint, input validation, writes, listings, routing, metrics."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp.plugin import AiohttpClient, AiohttpServer

from mirror.app import build_app
from mirror.config import UpstreamSettings
from tests.conftest import closed_port_url, mirror_settings
from tests.fakeregistry import FakeRegistry, start

Client = TestClient[web.Request, web.Application]


async def error_of(response: object) -> dict[str, str]:
    body = await response.json()  # type: ignore[attr-defined]
    entry: dict[str, str] = body["errors"][0]
    return entry


async def test_base_endpoint(mirror_client: Client) -> None:
    async with mirror_client.get("/v2/") as response:
        assert response.status == 200
        assert await response.json() == {}
        assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/v2/Upper/manifests/1", "NAME_INVALID"),
        ("/v2/a%2F..%2F..%2Fb/manifests/1", "NAME_INVALID"),
        ("/v2/app/blobs/sha256:..%2F..%2Fetc", "DIGEST_INVALID"),
        ("/v2/ghcr.io/..%2fetc/manifests/1", "NAME_INVALID"),
        ("/v2/app/blobs/sha256:abc", "DIGEST_INVALID"),
        ("/v2/app/blobs/md5:" + "a" * 32, "DIGEST_INVALID"),
        ("/v2/app/manifests/sha256:" + "A" * 64, "DIGEST_INVALID"),
        ("/v2/app/manifests/-bad", "MANIFEST_INVALID"),
    ],
)
async def test_malformed_input_is_refused_before_upstream(
    mirror_client: Client, fake_registry: FakeRegistry, path: str, code: str
) -> None:
    raw = mirror_client.make_url("").with_path(path, encoded=True)
    async with mirror_client.session.get(raw) as response:
        assert response.status == 400
        error = await error_of(response)
        assert error["code"] == code
        assert error["message"]
    assert fake_registry.requests == []


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
async def test_writes_are_unsupported(mirror_client: Client, method: str) -> None:
    async with mirror_client.request(method, "/v2/app/blobs/uploads/") as response:
        assert response.status == 405
        assert (await error_of(response))["code"] == "UNSUPPORTED"


async def test_unknown_endpoint(mirror_client: Client) -> None:
    async with mirror_client.get("/v2/app/nothing") as response:
        assert response.status == 404
        assert (await error_of(response))["code"] == "UNSUPPORTED"


async def test_tags_pass_through_and_fall_back_to_the_cache(
    mirror_client: Client,
    fake_registry: FakeRegistry,
    aiohttp_client: AiohttpClient,
    tmp_path: Path,
) -> None:
    for tag in ("1", "2", "3"):
        fake_registry.add_image("library/app", tag, [tag.encode()])
    async with mirror_client.get("/v2/app/tags/list", params={"n": "2"}) as page:
        assert await page.json() == {"name": "app", "tags": ["1", "2"]}
        assert page.headers["Link"] == '</v2/app/tags/list?last=2&n=2>; rel="next"'
    assert fake_registry.calls("GET", "/v2/library/app/tags/list")[0].query == {"n": "2"}
    await (await mirror_client.get("/v2/app/manifests/2")).read()
    offline = UpstreamSettings("docker.io", closed_port_url(), retries=0)
    restarted = await aiohttp_client(build_app(mirror_settings(tmp_path, offline)))
    async with restarted.get("/v2/app/tags/list") as cached:
        assert await cached.json() == {"name": "app", "tags": ["2"]}


async def test_catalog_lists_what_the_cache_holds(
    aiohttp_client: AiohttpClient,
    aiohttp_server: AiohttpServer,
    fake_registry: FakeRegistry,
    tmp_path: Path,
) -> None:
    other = FakeRegistry()
    await start(other, aiohttp_server)
    fake_registry.add_image("library/app", "1", [b"a"])
    other.add_image("org/tool", "1", [b"b"])
    settings = mirror_settings(
        tmp_path,
        UpstreamSettings("docker.io", fake_registry.url),
        UpstreamSettings("ghcr.io", other.url),
    )
    client = await aiohttp_client(build_app(settings))
    async with client.get("/v2/_catalog") as empty:
        assert await empty.json() == {"repositories": []}
    # Three routes: the default, a path prefix, and containerd's ?ns=.
    assert (await client.get("/v2/app/manifests/1")).status == 200
    assert (await client.get("/v2/ghcr.io/org/tool/manifests/1")).status == 200
    assert (await client.get("/v2/org/tool/manifests/1", params={"ns": "ghcr.io"})).status == 200
    assert len(other.calls("GET", "/v2/org/tool/manifests/1")) == 1
    assert fake_registry.calls("GET", "/v2/org/tool/manifests/1") == []
    async with client.get("/v2/_catalog") as full:
        assert await full.json() == {"repositories": ["ghcr.io/org/tool", "library/app"]}
    async with client.get("/v2/app/manifests/1", params={"ns": "quay.io"}) as unknown:
        assert unknown.status == 404
        assert (await error_of(unknown))["code"] == "NAME_UNKNOWN"


async def test_metrics_count_hits_and_misses(
    mirror_client: Client, fake_registry: FakeRegistry
) -> None:
    pushed = fake_registry.add_image("library/app", "1", [b"layer"])
    for _ in range(2):
        await (await mirror_client.get(f"/v2/app/blobs/{pushed.layer_digests[0]}")).read()
    text = await (await mirror_client.get("/metrics")).text()
    assert 'mirror_cache_requests_total{kind="blob",result="hit"} 1.0' in text
    assert 'mirror_cache_requests_total{kind="blob",result="miss"} 1.0' in text
    assert 'mirror_served_bytes_total{source="cache"} 5.0' in text
    assert 'mirror_served_bytes_total{source="upstream"} 5.0' in text
    assert "process_resident_memory_bytes" in text

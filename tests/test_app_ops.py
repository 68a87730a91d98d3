"""Operating the mirror: access log lines, request ids, health and readiness."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import replace
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp.plugin import AiohttpClient, AiohttpServer

from mirror.accesslog import AccessLogger, access_logger
from mirror.app import build_app
from mirror.config import MetricsSettings, UpstreamSettings
from tests.conftest import closed_port_url, mirror_settings
from tests.fakeregistry import FakeRegistry

Client = TestClient[web.Request, None]


@pytest.fixture
async def logged_client(
    aiohttp_client: AiohttpClient,
    aiohttp_server: AiohttpServer,
    fake_registry: FakeRegistry,
    tmp_path: Path,
) -> TestClient[web.Request, None]:
    """The mirror with the access logger `mirror serve` uses."""
    upstream = UpstreamSettings("docker.io", fake_registry.url, retries=0)
    server = await aiohttp_server(
        build_app(mirror_settings(tmp_path, upstream)),
        access_log=access_logger(),
        access_log_class=AccessLogger,
    )
    return await aiohttp_client(server)


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [r.fields for r in caplog.records if r.name == "mirror.access"]  # type: ignore[attr-defined]


async def test_one_access_line_per_request_with_cache_result_and_bytes(
    logged_client: Client, fake_registry: FakeRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mirror.access")
    data = os.urandom(300_000)
    digest = fake_registry.add_blob(data)
    for _ in range(2):
        async with logged_client.get(
            f"/v2/app/blobs/{digest}", headers={"X-Request-Id": "pull-42"}
        ) as response:
            assert await response.read() == data
            assert response.headers["X-Request-Id"] == "pull-42"
            assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    miss, hit = access_lines(caplog)
    for line, result in ((miss, "miss"), (hit, "hit")):
        assert line["method"] == "GET"
        assert line["path"] == f"/v2/app/blobs/{digest}"
        assert line["status"] == 200
        assert line["bytes"] == len(data)
        assert line["cache"] == result
        assert line["upstream"] == "docker.io"
        assert line["client"] == "127.0.0.1"
        assert line["request_id"] == "pull-42"


async def test_access_lines_never_carry_secrets(
    logged_client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mirror.access")
    await logged_client.get("/v2/", headers={"Authorization": "Bearer s3cret-token"})
    assert "s3cret-token" not in caplog.text
    assert json.dumps(access_lines(caplog)).count("s3cret") == 0


async def test_request_ids_are_made_up_when_missing_or_odd(logged_client: Client) -> None:
    ids = set()
    for sent in (None, "x" * 100, "bad id"):
        headers = {} if sent is None else {"X-Request-Id": sent}
        async with logged_client.get("/v2/", headers=headers) as response:
            ids.add(response.headers["X-Request-Id"])
    assert len(ids) == 3
    assert all(len(i) == 16 for i in ids)


async def test_health_and_readiness(logged_client: Client, tmp_path: Path) -> None:
    async with logged_client.get("/healthz") as alive:
        assert alive.status == 200
    async with logged_client.get("/readyz") as ready:
        assert ready.status == 200
    os.chmod(tmp_path / "partial", 0o500)
    try:
        if os.access(tmp_path / "partial", os.W_OK):
            pytest.skip("running as root: a read-only folder is still writable")
        async with logged_client.get("/readyz") as unready:
            assert unready.status == 503
            assert "not writable" in (await unready.json())["reason"]
    finally:
        os.chmod(tmp_path / "partial", 0o700)


async def test_metrics_on_their_own_listener(
    aiohttp_client: AiohttpClient, fake_registry: FakeRegistry, tmp_path: Path
) -> None:
    port = int(closed_port_url().rsplit(":", 1)[1])
    upstream = UpstreamSettings("docker.io", fake_registry.url, retries=0)
    settings = replace(
        mirror_settings(tmp_path, upstream),
        metrics=MetricsSettings(enabled=False, listen=("127.0.0.1", port)),
    )
    client = await aiohttp_client(build_app(settings))
    async with client.get("/metrics") as main_port:
        assert main_port.status == 404
    async with client.session.get(f"http://127.0.0.1:{port}/metrics") as scrape:
        assert scrape.status == 200
        assert "mirror_cache_max_bytes" in await scrape.text()

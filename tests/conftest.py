"""Shared fixtures: the recording fake upstream registry, its blob host, and the mirror."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp.plugin import AiohttpClient, AiohttpServer

from mirror.app import build_app
from mirror.config import ManifestSettings, Settings, StorageSettings, UpstreamSettings
from tests.fakeregistry import FakeBlobHost, FakeRegistry, start


@pytest.fixture
async def fake_registry(aiohttp_server: AiohttpServer) -> AsyncIterator[FakeRegistry]:
    """A FakeRegistry served on 127.0.0.1 (no auth, no faults); its gate opens on teardown."""
    registry = FakeRegistry()
    await start(registry, aiohttp_server)
    yield registry
    registry.release()


@pytest.fixture
async def fake_blob_host(
    aiohttp_server: AiohttpServer, fake_registry: FakeRegistry
) -> FakeBlobHost:
    """A second host serving `fake_registry`'s blobs; set `fake_registry.redirect_blobs` to
    its `url` to send blob requests there."""
    host = FakeBlobHost(fake_registry.blobs)
    await start(host, aiohttp_server)
    return host


class FakeClock:
    """A monotonic clock that moves only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def mirror_settings(
    storage: Path,
    *upstreams: UpstreamSettings,
    quota: StorageSettings | None = None,
    **manifests: Any,
) -> Settings:
    """Settings on a temp storage folder (`quota` gives the other storage settings);
    the first upstream is the default."""
    return Settings(
        host="127.0.0.1",
        storage=replace(quota or StorageSettings(), path=storage),
        upstreams={up.name: up for up in upstreams},
        default_upstream=upstreams[0].name,
        manifests=ManifestSettings(**manifests),
    )


def closed_port_url() -> str:
    """An http:// URL on loopback where nothing listens."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def mirror_client(
    aiohttp_client: AiohttpClient, fake_registry: FakeRegistry, tmp_path: Path, clock: FakeClock
) -> TestClient[web.Request, web.Application]:
    """A test client of the mirror whose default upstream `docker.io` is `fake_registry`."""
    upstream = UpstreamSettings("docker.io", fake_registry.url, retries=1)
    return await aiohttp_client(build_app(mirror_settings(tmp_path, upstream), clock=clock))

"""Shared fixtures: the recording fake upstream registry and its blob host."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from pytest_aiohttp.plugin import AiohttpServer

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

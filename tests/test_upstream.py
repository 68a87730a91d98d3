"""The upstream client against the fake registry: auth, redirects, retries, error mapping."""

from __future__ import annotations

import asyncio
import gzip
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

import aiohttp
import pytest

from mirror.auth import TokenCache
from mirror.config import UpstreamSettings
from mirror.errors import (
    BlobUnknown,
    Denied,
    ManifestUnknown,
    MirrorError,
    NameUnknown,
    TooManyRequests,
    Unauthorized,
    UpstreamUnavailable,
)
from mirror.metrics import Metrics
from mirror.upstream import UpstreamClient, new_session
from mirror.upstreamerrors import read_limited
from tests.conftest import closed_port_url
from tests.fakeregistry import FakeBlobHost, FakeRegistry

REPO = "library/alpine"


class Clock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Harness:
    client: UpstreamClient
    metrics: Metrics
    clock: Clock
    sleeps: list[float] = field(default_factory=list)

    async def get(
        self,
        path: str,
        *,
        kind: str = "manifest",
        repo: str = REPO,
        method: str = "GET",
        **kwargs: Any,
    ) -> bytes:
        async with self.client.request(method, path, kind=kind, repo=repo, **kwargs) as response:
            return await response.read()

    def count(self, kind: str, code: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "mirror_upstream_requests_total", {"upstream": "fake.io", "kind": kind, "code": code}
        )
        return value or 0.0


Connect = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    """Build a client for a URL with `UpstreamSettings` overrides; sessions close on teardown."""
    sessions = []

    async def build(url: str, **overrides: Any) -> Harness:
        settings = UpstreamSettings(**{"name": "fake.io", "url": url, "retries": 2, **overrides})
        session = new_session(settings)
        sessions.append(session)
        clock, metrics = Clock(), Metrics()
        harness = Harness(None, metrics, clock)  # type: ignore[arg-type]

        async def sleep(delay: float) -> None:
            harness.sleeps.append(delay)

        harness.client = UpstreamClient(
            settings, session, TokenCache(clock=clock), metrics, clock=clock, sleep=sleep
        )
        return harness

    yield build
    for session in sessions:
        await session.close()


@pytest.fixture
def alpine(fake_registry: FakeRegistry) -> FakeRegistry:
    fake_registry.add_image(REPO, "3", [b"layer one", b"layer two"])
    return fake_registry


def statuses(registry: FakeRegistry) -> list[tuple[str, str, bool]]:
    """(method, path, sent Authorization) for every request, in order."""
    return [(r.method, r.path, "Authorization" in r.headers) for r in registry.requests]


# -- plain requests --------------------------------------------------------------------------


async def test_manifest_passes_through_with_headers(alpine: FakeRegistry, connect: Connect) -> None:
    up = await connect(alpine.url)
    body, media_type = alpine.manifests[(REPO, "3")]
    async with up.client.request(
        "HEAD", f"{REPO}/manifests/3", kind="manifest", repo=REPO
    ) as response:
        assert response.status == 200
        assert response.headers["Content-Length"] == str(len(body))
        assert response.headers["Content-Type"] == media_type
        digest = response.headers["Docker-Content-Digest"]
    assert await up.get(f"{REPO}/manifests/{digest}") == body
    assert statuses(alpine) == [
        ("HEAD", f"/v2/{REPO}/manifests/3", False),
        ("GET", f"/v2/{REPO}/manifests/{digest}", False),
    ]


async def test_bodies_are_not_decompressed(fake_registry: FakeRegistry, connect: Connect) -> None:
    data = gzip.compress(b"a tar stream" * 1000)
    digest = fake_registry.add_blob(data)
    fake_registry.extra_headers["Content-Encoding"] = "gzip"
    up = await connect(fake_registry.url)
    assert await up.get(f"{REPO}/blobs/{digest}", kind="blob") == data
    assert fake_registry.requests[0].headers["Accept-Encoding"] == "identity"


async def test_query_parameters_pass_through(alpine: FakeRegistry, connect: Connect) -> None:
    alpine.add_image(REPO, "4", [b"x"])
    up = await connect(alpine.url)
    body = await up.get(f"{REPO}/tags/list", kind="tags", params={"n": "1", "last": "3"})
    assert body == b'{"name": "library/alpine", "tags": ["4"]}'
    assert alpine.requests[0].query == {"n": "1", "last": "3"}


# -- auth ------------------------------------------------------------------------------------


async def test_anonymous_bearer_flow(alpine: FakeRegistry, connect: Connect) -> None:
    alpine.auth = "bearer"
    up = await connect(alpine.url)
    assert await up.get(f"{REPO}/manifests/3") == alpine.manifests[(REPO, "3")][0]
    assert statuses(alpine) == [
        ("GET", f"/v2/{REPO}/manifests/3", False),
        ("GET", "/token", False),
        ("GET", f"/v2/{REPO}/manifests/3", True),
    ]
    assert alpine.requests[1].query == {
        "service": "fake-registry",
        "scope": f"repository:{REPO}:pull",
    }
    assert up.count("manifest", "401") == 1
    assert up.count("token", "200") == 1


async def test_bearer_with_credentials_sends_basic_to_the_token_endpoint(
    alpine: FakeRegistry, connect: Connect
) -> None:
    alpine.auth, alpine.username, alpine.password = "bearer", "alice", "s3cret"
    up = await connect(alpine.url, username="alice", password="s3cret")
    await up.get(f"{REPO}/manifests/3")
    token_request = alpine.calls("GET", "/token")[0]
    assert token_request.headers["Authorization"] == "Basic YWxpY2U6czNjcmV0"


async def test_wrong_credentials_are_unauthorized(alpine: FakeRegistry, connect: Connect) -> None:
    alpine.auth, alpine.username, alpine.password = "bearer", "alice", "s3cret"
    up = await connect(alpine.url, username="alice", password="wrong-password")
    with pytest.raises(Unauthorized) as caught:
        await up.get(f"{REPO}/manifests/3")
    message = caught.value.message
    assert f"upstream fake.io ({alpine.url})" in message
    assert REPO in message
    assert "wrong-password" not in message
    assert len(alpine.calls("GET", f"/v2/{REPO}/manifests/3")) == 1


async def test_token_rejected_after_retry_is_unauthorized(
    alpine: FakeRegistry, connect: Connect
) -> None:
    challenge = f'Bearer realm="{alpine.url}/token",service="fake-registry",error="denied"'
    alpine.fail(f"/v2/{REPO}/manifests/3", 401, times=2, headers={"WWW-Authenticate": challenge})
    up = await connect(alpine.url)
    with pytest.raises(Unauthorized) as caught:
        await up.get(f"{REPO}/manifests/3")
    assert caught.value.message == (
        f"upstream fake.io ({alpine.url}) refused anonymous access for repository '{REPO}' (denied)"
    )
    assert [r.path for r in alpine.requests] == [
        f"/v2/{REPO}/manifests/3",
        "/token",
        f"/v2/{REPO}/manifests/3",
    ]


async def test_later_requests_send_the_token_up_front(
    alpine: FakeRegistry, connect: Connect
) -> None:
    alpine.auth = "bearer"
    up = await connect(alpine.url)
    image_digests = [d for d in alpine.blobs]
    await up.get(f"{REPO}/manifests/3")
    for digest in image_digests:
        await up.get(f"{REPO}/blobs/{digest}", kind="blob")
    assert up.count("manifest", "401") == 1
    assert up.count("blob", "401") == 0
    assert up.count("blob", "200") == len(image_digests)
    assert len(alpine.calls("GET", "/token")) == 1


async def test_concurrent_first_requests_share_one_token_fetch(
    alpine: FakeRegistry, connect: Connect
) -> None:
    alpine.auth = "bearer"
    manifest = alpine.manifests[(REPO, "3")][0]
    up = await connect(alpine.url)
    bodies = await asyncio.gather(*(up.get(f"{REPO}/manifests/3") for _ in range(20)))
    assert bodies == [manifest] * 20
    assert len(alpine.calls("GET", "/token")) == 1
    assert up.count("token", "200") == 1
    assert up.count("manifest", "200") == 20


async def test_a_new_scope_gets_its_token_without_a_401(
    alpine: FakeRegistry, connect: Connect
) -> None:
    alpine.auth = "bearer"
    alpine.add_image("library/nginx", "1", [b"nginx layer"])
    up = await connect(alpine.url)
    await up.get(f"{REPO}/manifests/3")
    await up.get("library/nginx/manifests/1", repo="library/nginx")
    token_scopes = [r.query["scope"] for r in alpine.calls("GET", "/token")]
    assert token_scopes == [f"repository:{REPO}:pull", "repository:library/nginx:pull"]
    assert up.count("manifest", "401") == 1


async def test_token_is_refreshed_after_it_expires(alpine: FakeRegistry, connect: Connect) -> None:
    alpine.auth = "bearer"
    alpine.token_expires_in = 300
    up = await connect(alpine.url)
    await up.get(f"{REPO}/manifests/3")
    up.clock.now += 200
    await up.get(f"{REPO}/manifests/3")
    assert len(alpine.calls("GET", "/token")) == 1
    up.clock.now += 100
    await up.get(f"{REPO}/manifests/3")
    assert len(alpine.calls("GET", "/token")) == 2
    assert up.count("manifest", "401") == 1


async def test_a_revoked_token_is_replaced_once(alpine: FakeRegistry, connect: Connect) -> None:
    alpine.auth = "bearer"
    up = await connect(alpine.url)
    await up.get(f"{REPO}/manifests/3")
    alpine.revoke_tokens()
    await up.get(f"{REPO}/manifests/3")
    assert len(alpine.calls("GET", "/token")) == 2
    assert up.count("manifest", "401") == 2
    assert up.count("manifest", "200") == 2


async def test_concurrent_requests_replace_a_revoked_token_once(
    alpine: FakeRegistry, connect: Connect
) -> None:
    alpine.auth = "bearer"
    up = await connect(alpine.url)
    await up.get(f"{REPO}/manifests/3")
    alpine.revoke_tokens()
    await asyncio.gather(*(up.get(f"{REPO}/manifests/3") for _ in range(20)))
    assert len(alpine.calls("GET", "/token")) == 2
    assert up.count("manifest", "200") == 21


async def test_basic_upstream(alpine: FakeRegistry, connect: Connect) -> None:
    alpine.auth, alpine.username, alpine.password = "basic", "bob", "pw"
    up = await connect(alpine.url, username="bob", password="pw")
    await up.get(f"{REPO}/manifests/3")
    await up.get(f"{REPO}/manifests/3")
    assert (
        statuses(alpine)
        == [("GET", f"/v2/{REPO}/manifests/3", False)]
        + [("GET", f"/v2/{REPO}/manifests/3", True)] * 2
    )
    assert alpine.requests[-1].headers["Authorization"] == "Basic Ym9iOnB3"


async def test_basic_upstream_without_credentials(alpine: FakeRegistry, connect: Connect) -> None:
    alpine.auth, alpine.username, alpine.password = "basic", "bob", "pw"
    up = await connect(alpine.url)
    with pytest.raises(Unauthorized, match="no username/password is configured"):
        await up.get(f"{REPO}/manifests/3")


# -- redirects -------------------------------------------------------------------------------


async def test_blob_redirect_to_another_host_drops_authorization(
    alpine: FakeRegistry, fake_blob_host: FakeBlobHost, connect: Connect
) -> None:
    alpine.auth = "bearer"
    alpine.redirect_blobs = fake_blob_host.url
    digest, data = next(iter(alpine.blobs.items()))
    up = await connect(alpine.url)
    await up.get(f"{REPO}/manifests/3")
    assert await up.get(f"{REPO}/blobs/{digest}", kind="blob") == data
    assert alpine.calls("GET", f"/v2/{REPO}/blobs/{digest}")[0].headers["Authorization"]
    [stored] = fake_blob_host.requests
    assert stored.query == {"sig": "fake"}
    assert "Authorization" not in stored.headers
    assert up.count("blob", "307") == 1


async def test_redirects_keep_the_method_and_stop_after_five(
    alpine: FakeRegistry, connect: Connect
) -> None:
    path = f"/v2/{REPO}/manifests/3"
    alpine.fail(path, 307, times=2, headers={"Location": path})
    up = await connect(alpine.url)
    async with up.client.request(
        "HEAD", f"{REPO}/manifests/3", kind="manifest", repo=REPO
    ) as response:
        assert response.status == 200
    assert [r.method for r in alpine.requests] == ["HEAD"] * 3
    alpine.fail(path, 302, times=6, headers={"Location": path})
    with pytest.raises(UpstreamUnavailable, match="more than 5 times"):
        await up.get(f"{REPO}/manifests/3")


# -- retries and failures --------------------------------------------------------------------


async def test_5xx_is_retried_with_backoff(alpine: FakeRegistry, connect: Connect) -> None:
    alpine.fail(f"/v2/{REPO}/manifests/3", 500, times=2)
    up = await connect(alpine.url)
    assert await up.get(f"{REPO}/manifests/3") == alpine.manifests[(REPO, "3")][0]
    assert up.sleeps == [0.2, 0.4]
    assert up.count("manifest", "500") == 2
    assert up.count("manifest", "200") == 1


async def test_5xx_after_all_retries_is_502_naming_the_upstream(
    alpine: FakeRegistry, connect: Connect
) -> None:
    alpine.fail(f"/v2/{REPO}/manifests/3", 503, times=3)
    up = await connect(alpine.url)
    with pytest.raises(UpstreamUnavailable) as caught:
        await up.get(f"{REPO}/manifests/3")
    assert caught.value.http_status() == 502
    assert f"upstream fake.io ({alpine.url}) answered 503" in caught.value.message
    assert "3 attempt(s)" in caught.value.message
    assert len(alpine.requests) == 3


async def test_connection_refused_is_503(connect: Connect) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    up = await connect(url)
    with pytest.raises(UpstreamUnavailable) as caught:
        await up.get(f"{REPO}/manifests/3")
    assert caught.value.http_status() == 503
    assert f"upstream fake.io ({url}) is unreachable" in caught.value.message
    assert up.sleeps == [0.2, 0.4]
    assert up.count("manifest", "error") == 3


async def test_stalled_body_is_504(fake_registry: FakeRegistry, connect: Connect) -> None:
    digest = fake_registry.add_blob(b"x" * 10_000)
    fake_registry.gate = asyncio.Event()
    up = await connect(fake_registry.url, read_timeout=0.2)
    with pytest.raises(UpstreamUnavailable) as caught:
        await up.get(f"{REPO}/blobs/{digest}", kind="blob")
    assert caught.value.http_status() == 504
    assert "timed out" in caught.value.message


async def test_dropped_body_is_an_upstream_error(
    fake_registry: FakeRegistry, connect: Connect
) -> None:
    digest = fake_registry.add_blob(b"y" * 100_000)
    fake_registry.drop_after[digest] = 5000
    up = await connect(fake_registry.url)
    with pytest.raises(UpstreamUnavailable, match=r"upstream fake\.io"):
        await up.get(f"{REPO}/blobs/{digest}", kind="blob")


async def test_429_retry_after_is_honoured(alpine: FakeRegistry, connect: Connect) -> None:
    alpine.fail(f"/v2/{REPO}/manifests/3", 429, headers={"Retry-After": "7"})
    up = await connect(alpine.url)
    assert await up.get(f"{REPO}/manifests/3") == alpine.manifests[(REPO, "3")][0]
    assert up.sleeps == [7.0]


async def test_429_with_a_long_wait_is_passed_on(alpine: FakeRegistry, connect: Connect) -> None:
    alpine.fail(f"/v2/{REPO}/manifests/3", 429, headers={"Retry-After": "120"})
    up = await connect(alpine.url)
    with pytest.raises(TooManyRequests) as caught:
        await up.get(f"{REPO}/manifests/3")
    assert caught.value.retry_after == 120
    assert "upstream fake.io" in caught.value.message
    assert up.sleeps == []


async def test_429_without_retry_after_is_not_retried(
    alpine: FakeRegistry, connect: Connect
) -> None:
    alpine.fail(f"/v2/{REPO}/manifests/3", 429)
    up = await connect(alpine.url)
    with pytest.raises(TooManyRequests):
        await up.get(f"{REPO}/manifests/3")
    assert len(alpine.requests) == 1


async def test_429_when_retries_run_out(alpine: FakeRegistry, connect: Connect) -> None:
    alpine.fail(f"/v2/{REPO}/manifests/3", 429, times=3, headers={"Retry-After": "1"})
    up = await connect(alpine.url)
    with pytest.raises(TooManyRequests) as caught:
        await up.get(f"{REPO}/manifests/3")
    assert caught.value.retry_after == 1
    assert up.sleeps == [1.0, 1.0]


@pytest.mark.parametrize(
    ("method", "path", "kind", "error"),
    [
        ("GET", f"{REPO}/manifests/missing", "manifest", ManifestUnknown),
        ("HEAD", f"{REPO}/manifests/missing", "manifest", ManifestUnknown),
        ("GET", "library/nothing/manifests/3", "manifest", NameUnknown),
        ("GET", f"{REPO}/blobs/sha256:{'0' * 64}", "blob", BlobUnknown),
        ("GET", "library/nothing/tags/list", "tags", NameUnknown),
    ],
)
async def test_404_maps_by_kind_and_body(
    alpine: FakeRegistry,
    connect: Connect,
    method: str,
    path: str,
    kind: str,
    error: type[MirrorError],
) -> None:
    up = await connect(alpine.url)
    with pytest.raises(error) as caught:
        await up.get(path, kind=kind, method=method)
    assert f"upstream fake.io ({alpine.url}) answered 404" in caught.value.message
    assert up.sleeps == []


async def test_403_is_denied(alpine: FakeRegistry, connect: Connect) -> None:
    alpine.fail(f"/v2/{REPO}/manifests/3", 403)
    up = await connect(alpine.url)
    with pytest.raises(Denied, match=r"upstream fake\.io .*403"):
        await up.get(f"{REPO}/manifests/3")


# -- metrics ------------------------------------------------------------------------------------


async def test_ratelimit_headers_reach_the_gauges(alpine: FakeRegistry, connect: Connect) -> None:
    alpine.extra_headers.update(
        {"ratelimit-limit": "100;w=21600", "ratelimit-remaining": "76;w=21600"}
    )
    up = await connect(alpine.url)
    await up.get(f"{REPO}/manifests/3")
    sample = up.metrics.registry.get_sample_value
    assert sample("mirror_upstream_ratelimit_limit", {"upstream": "fake.io"}) == 100
    assert sample("mirror_upstream_ratelimit_remaining", {"upstream": "fake.io"}) == 76
    assert (
        sample(
            "mirror_upstream_request_duration_seconds_count",
            {"upstream": "fake.io", "kind": "manifest"},
        )
        == 1
    )


async def test_read_limited_reads_a_body_that_arrives_in_parts() -> None:
    stream = aiohttp.StreamReader(
        mock.Mock(_reading_paused=False), 2**16, loop=asyncio.get_running_loop()
    )
    response = mock.Mock(content=stream)
    stream.feed_data(b'{"schemaVersion":')
    loop = asyncio.get_running_loop()

    # The rest arrives only after the reader has taken the first part.
    def rest() -> None:
        stream.feed_data(b" 2}")
        stream.feed_eof()

    loop.call_soon(rest)
    assert await read_limited(response, 1000) == b'{"schemaVersion": 2}'
    stream = aiohttp.StreamReader(mock.Mock(_reading_paused=False), 2**16, loop=loop)
    stream.feed_data(b"x" * 50)
    stream.feed_eof()
    assert await read_limited(mock.Mock(content=stream), 10) == b"x" * 10


async def test_giving_up_is_one_warning_naming_the_upstream(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = UpstreamSettings("hub", closed_port_url(), retries=0)
    async with new_session(settings) as session:
        client = UpstreamClient(settings, session, TokenCache(), Metrics())
        with pytest.raises(UpstreamUnavailable):
            async with client.request(
                "GET", "library/x/manifests/1", kind="manifest", repo="library/x"
            ):
                pass
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert warnings[0].startswith("upstream hub (")

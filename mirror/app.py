"""Wiring only: build the aiohttp application from Settings, and run it.

Every long-lived resource (storage, upstream sessions, downloads, in-memory
answers) is one cleanup context, torn down in reverse order. No policy here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import astuple

from aiohttp import web

from mirror.accesslog import AccessLogger, access_logger
from mirror.appkeys import (
    BLOBS,
    CLIENTS,
    INDEX,
    LISTINGS,
    MANIFESTS,
    METRICS,
    QUOTA,
    REFS,
    SENDERS,
    SETTINGS,
    STORE,
)
from mirror.auth import TokenCache
from mirror.blobs import BlobCache
from mirror.config import Settings
from mirror.evict import Quota
from mirror.fetch import Downloads
from mirror.index import BlobIndex
from mirror.listings import Listings
from mirror.manifests import ManifestCache
from mirror.memo import Memo
from mirror.metrics import Metrics
from mirror.pins import parse_pin, pinned_digests
from mirror.refs import Refs
from mirror.routes import add_routes, on_prepare, v2_middleware
from mirror.routes import metrics as metrics_handler
from mirror.sendfile import Senders
from mirror.storage.disk import DiskBlobStore
from mirror.units import format_size
from mirror.upstream import UpstreamClient, new_session

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_SECONDS = 5.0
INDEX_FLUSH_SECONDS = 5.0


def build_app(
    settings: Settings,
    metrics: Metrics | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> web.Application:
    """The mirror as an aiohttp Application; resources open on start-up."""
    app = web.Application(middlewares=[v2_middleware])
    app.on_response_prepare.append(on_prepare)
    app[SETTINGS] = settings
    app[METRICS] = metrics or Metrics()
    app.cleanup_ctx.append(_storage)
    app.cleanup_ctx.append(_index_keeper)
    app.cleanup_ctx.append(_upstreams(clock))
    app.cleanup_ctx.append(_caches(clock))
    app.cleanup_ctx.append(_senders)
    if settings.metrics.listen is not None:
        app.cleanup_ctx.append(_metrics_listener)
    add_routes(app, with_metrics=settings.metrics.enabled)
    return app


async def _senders(app: web.Application) -> AsyncIterator[None]:
    """The threads that send cached and downloading blobs with sendfile."""
    app[SENDERS] = Senders()
    try:
        yield
    finally:
        await asyncio.to_thread(app[SENDERS].close)


async def _metrics_listener(app: web.Application) -> AsyncIterator[None]:
    """`/metrics` alone on `metrics.listen`, for a scraper kept off the main port."""
    host, port = app[SETTINGS].metrics.listen or ("", 0)
    metrics_app = web.Application()
    metrics_app[METRICS] = app[METRICS]
    metrics_app.router.add_get("/metrics", metrics_handler)
    runner = web.AppRunner(metrics_app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("metrics on http://%s:%d/metrics", host, port)
    try:
        yield
    finally:
        await runner.cleanup()


async def _storage(app: web.Application) -> AsyncIterator[None]:
    """The blob store, repository records, index and quota; reconciled at start-up."""
    settings, storage = app[SETTINGS], app[SETTINGS].storage
    store = DiskBlobStore(storage.path)
    if removed := store.clean_partials():
        log.info("removed %d partial downloads left by an earlier run", removed)
    refs = Refs(storage.path)
    index = BlobIndex(storage.path)
    found = await asyncio.to_thread(index.reconcile, store)
    if found.indexed or found.dropped:
        log.info("index reconciled: %d files indexed, %d entries dropped", *astuple(found))
    pins = [parse_pin(reference, settings.upstreams) for reference in storage.pinned]
    quota = Quota(
        index,
        store,
        app[METRICS],
        max_size=storage.max_size,
        high=storage.high_watermark,
        low=storage.low_watermark,
        pinned=lambda: pinned_digests(pins, refs, store),
    )
    await quota.enforce()
    app[STORE], app[REFS], app[INDEX], app[QUOTA] = store, refs, index, quota
    try:
        yield
    finally:
        await asyncio.to_thread(index.close)


async def _index_keeper(app: web.Application) -> AsyncIterator[None]:
    """Write batched access times and the mirror's status every few seconds."""
    index, metrics = app[INDEX], app[METRICS]
    started = time.time()

    async def keep() -> None:
        while True:
            await asyncio.sleep(INDEX_FLUSH_SECONDS)
            await asyncio.to_thread(_publish, index, metrics, started)

    task = asyncio.create_task(keep(), name="index keeper")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await asyncio.to_thread(_publish, index, metrics, started)


def _publish(index: BlobIndex, metrics: Metrics, started: float) -> None:
    index.flush()
    index.set_status(
        {
            "pid": os.getpid(),
            "started": started,
            "hits": _requests(metrics, "hit") + _requests(metrics, "stale"),
            "misses": _requests(metrics, "miss"),
        }
    )


def _requests(metrics: Metrics, result: str) -> float:
    return sum(
        metrics.registry.get_sample_value(
            "mirror_cache_requests_total", {"kind": kind, "result": result}
        )
        or 0.0
        for kind in ("manifest", "blob")
    )


def _upstreams(
    clock: Callable[[], float],
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        settings, metrics = app[SETTINGS], app[METRICS]
        sessions = {name: new_session(up) for name, up in settings.upstreams.items()}
        # One token cache per upstream: tokens belong to that upstream's credentials.
        app[CLIENTS] = {
            name: UpstreamClient(up, sessions[name], TokenCache(clock=clock), metrics, clock=clock)
            for name, up in settings.upstreams.items()
        }
        try:
            yield
        finally:
            for session in sessions.values():
                await session.close()

    return context


def _caches(
    clock: Callable[[], float],
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        settings, metrics, clients = app[SETTINGS], app[METRICS], app[CLIENTS]
        store, refs, index, quota = app[STORE], app[REFS], app[INDEX], app[QUOTA]
        memo = Memo(settings.manifests.tag_ttl, settings.manifests.negative_ttl, clock)
        downloads = Downloads(store, metrics)
        app[MANIFESTS] = ManifestCache(
            clients, store, refs, memo, metrics, quota, index, settings.manifests.serve_stale
        )
        app[BLOBS] = BlobCache(clients, store, downloads, memo, metrics, index, quota)
        app[LISTINGS] = Listings(settings.upstreams, clients, settings.default_upstream, refs)
        try:
            yield
        finally:
            await downloads.close()
            await memo.close()

    return context


def run(settings: Settings) -> None:
    """Serve until SIGINT/SIGTERM; in-flight responses get a few seconds to finish."""
    scheme = "https" if settings.tls else "http"
    log.info(
        "mirror listening on %s://%s:%d, caching to %s (quota %s), upstreams: %s",
        scheme,
        settings.host,
        settings.port,
        settings.storage.path.resolve(),
        format_size(settings.storage.max_size),
        ", ".join(f"{name}={up.url}" for name, up in settings.upstreams.items()),
    )
    web.run_app(
        build_app(settings),
        host=settings.host,
        port=settings.port,
        ssl_context=_ssl_context(settings),
        shutdown_timeout=SHUTDOWN_GRACE_SECONDS,
        print=None,
        access_log=access_logger(),
        access_log_class=AccessLogger,
    )


def _ssl_context(settings: Settings) -> ssl.SSLContext | None:
    if settings.tls is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.tls.cert, settings.tls.key)
    return context

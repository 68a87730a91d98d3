"""Wiring only: build the aiohttp application from Settings, and run it.

Every long-lived resource (storage, upstream sessions, downloads, in-memory
answers) is one cleanup context, torn down in reverse order. No policy here.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from mirror.appkeys import BLOBS, LISTINGS, MANIFESTS, METRICS, SETTINGS
from mirror.auth import TokenCache
from mirror.blobs import BlobCache
from mirror.config import Settings
from mirror.fetch import Downloads
from mirror.listings import Listings
from mirror.manifests import ManifestCache
from mirror.memo import Memo
from mirror.metrics import Metrics
from mirror.refs import Refs
from mirror.routes import add_routes, v2_middleware
from mirror.storage.disk import DiskBlobStore
from mirror.units import format_size
from mirror.upstream import UpstreamClient, new_session

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_SECONDS = 5.0


def build_app(
    settings: Settings,
    metrics: Metrics | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> web.Application:
    """The mirror as an aiohttp Application; resources open on start-up."""
    app = web.Application(middlewares=[v2_middleware])
    app[SETTINGS] = settings
    app[METRICS] = metrics or Metrics()
    app[METRICS].cache_max.set(settings.storage.max_size)
    app.cleanup_ctx.append(_caches(clock))
    add_routes(app, with_metrics=settings.metrics.enabled)
    return app


def _caches(
    clock: Callable[[], float],
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        settings, metrics = app[SETTINGS], app[METRICS]
        store = DiskBlobStore(settings.storage.path)
        if removed := store.clean_partials():
            log.info("removed %d partial downloads left by an earlier run", removed)
        refs = Refs(settings.storage.path)
        sessions = {name: new_session(up) for name, up in settings.upstreams.items()}
        tokens = TokenCache(clock=clock)
        clients = {
            name: UpstreamClient(up, sessions[name], tokens, metrics, clock=clock)
            for name, up in settings.upstreams.items()
        }
        memo = Memo(settings.manifests.tag_ttl, settings.manifests.negative_ttl, clock)
        downloads = Downloads(store, metrics)
        app[MANIFESTS] = ManifestCache(
            clients, store, refs, memo, metrics, settings.manifests.serve_stale
        )
        app[BLOBS] = BlobCache(clients, store, downloads, memo, metrics)
        app[LISTINGS] = Listings(settings.upstreams, clients, settings.default_upstream, refs)
        try:
            yield
        finally:
            await downloads.close()
            await memo.close()
            for session in sessions.values():
                await session.close()

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
        access_log=logging.getLogger("mirror.access"),
    )


def _ssl_context(settings: Settings) -> ssl.SSLContext | None:
    if settings.tls is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.tls.cert, settings.tls.key)
    return context

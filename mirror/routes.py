"""The read side of the v2 API: thin handlers over the caches, plus the middleware
that turns errors into spec bodies, refuses writes, and times requests.
Handlers never format error JSON and never touch the disk layout.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from urllib.parse import urlencode

from aiohttp import web

from mirror.appkeys import BLOBS, LISTINGS, MANIFESTS, METRICS, SETTINGS
from mirror.blobs import CachedBlob
from mirror.errors import (
    EndpointUnknown,
    MirrorError,
    RangeNotSatisfiable,
    Unsupported,
    error_body,
)
from mirror.fetch import Download
from mirror.listings import Page
from mirror.oci import (
    API_VERSION,
    API_VERSION_VALUE,
    CONTENT_DIGEST,
    merge_accept,
    validate_digest,
    validate_reference,
)
from mirror.routing import Target, resolve

log = logging.getLogger(__name__)

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_READ_METHODS = frozenset({"GET", "HEAD"})
_BLOB_TYPE = "application/octet-stream"


def _error_response(error: MirrorError) -> web.Response:
    response = web.Response(
        status=error.http_status(), body=error_body(error), content_type="application/json"
    )
    if isinstance(error, RangeNotSatisfiable):
        response.headers["Content-Range"] = f"bytes */{error.detail}"
    return response


@web.middleware
async def v2_middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """Spec error bodies, 405 for writes, the API version header, request timing."""
    started = time.perf_counter()
    try:
        if request.method not in _READ_METHODS and request.path.startswith("/v2"):
            raise Unsupported(f"{request.method} is not supported: this mirror is read-only")
        response = await handler(request)
    except MirrorError as error:
        response = _error_response(error)
    except web.HTTPNotFound:
        if not request.path.startswith("/v2"):
            raise
        response = _error_response(EndpointUnknown(f"no such endpoint: {request.path}"))
    if request.path.startswith("/v2"):
        response.headers[API_VERSION] = API_VERSION_VALUE
    kind = request.match_info.route.name or "other"
    request.app[METRICS].request_duration.labels(kind).observe(time.perf_counter() - started)
    return response


def _target(request: web.Request) -> Target:
    settings = request.app[SETTINGS]
    return resolve(
        settings.upstreams,
        settings.default_upstream,
        request.match_info["name"],
        request.query.get("ns"),
    )


def _etag_matches(request: web.Request, digest: str) -> bool:
    return any(tag.value == digest for tag in request.if_none_match or ())


async def base(request: web.Request) -> web.Response:
    """`GET /v2/`: the API version check every client starts with."""
    return web.json_response({})


async def manifest(request: web.Request) -> web.Response:
    """`GET|HEAD /v2/<name>/manifests/<reference>`: exact upstream bytes and headers."""
    reference = validate_reference(request.match_info["reference"])
    target = _target(request)
    accept = merge_accept(request.headers.getall("Accept", []))
    found = await request.app[MANIFESTS].get(target.upstream, target.repo, reference, accept)
    headers = {
        CONTENT_DIGEST: found.digest,
        "ETag": f'"{found.digest}"',
        "Content-Type": found.media_type,
    }
    if _etag_matches(request, found.digest):
        return web.Response(status=304, headers=headers)
    if request.method == "GET":
        source = "cache" if found.result != "miss" else "upstream"
        request.app[METRICS].served_bytes.labels(source).inc(len(found.body))
    # aiohttp drops the body of a HEAD answer but keeps its Content-Length.
    return web.Response(body=found.body, headers=headers)


async def blob(request: web.Request) -> web.StreamResponse:
    """`GET|HEAD /v2/<name>/blobs/<digest>`: sendfile on a hit, the shared download on a miss."""
    digest = validate_digest(request.match_info["digest"])
    target = _target(request)
    headers = {CONTENT_DIGEST: digest, "ETag": f'"{digest}"', "Content-Type": _BLOB_TYPE}
    if _etag_matches(request, digest):
        return web.Response(status=304, headers=headers)
    blobs = request.app[BLOBS]
    if request.method == "HEAD":
        size = await blobs.size(target.upstream, target.repo, digest)
        headers["Accept-Ranges"] = "bytes"
        return web.Response(headers={**headers, "Content-Length": str(size)})
    found = await blobs.get(target.upstream, target.repo, digest)
    if isinstance(found, CachedBlob):
        with found.file:
            return await _send_cached(request, found, headers)
    return await _stream(request, found, headers)


def _partial_response(
    request: web.Request, size: int | None, headers: dict[str, str]
) -> tuple[web.StreamResponse, int, int | None]:
    """A response for the Range asked (206) or the whole blob, and its [start, stop)."""
    window = _window(request, size)
    response = web.StreamResponse(headers={**headers, "Accept-Ranges": "bytes"})
    start, stop = window or (0, size)
    if window is not None:
        response.set_status(206)
        response.headers["Content-Range"] = f"bytes {start}-{(stop or 0) - 1}/{size}"
    if stop is not None:
        response.content_length = stop - start
    return response, start, stop


async def _send_cached(
    request: web.Request, blob: CachedBlob, headers: dict[str, str]
) -> web.StreamResponse:
    """Send an open cached blob (or the Range asked of it) with sendfile."""
    response, start, stop = _partial_response(request, blob.size, headers)
    count = (stop or blob.size) - start
    await response.prepare(request)
    if request.transport is None:
        raise ConnectionResetError("client went away")
    await asyncio.get_running_loop().sendfile(request.transport, blob.file, start, count)
    request.app[METRICS].served_bytes.labels("cache").inc(count)
    await response.write_eof()
    return response


def _window(request: web.Request, size: int | None) -> tuple[int, int | None] | None:
    """The byte window [start, end) a Range header asks for, or None for the whole blob."""
    if "Range" not in request.headers or size is None:
        return None
    try:
        asked = request.http_range
    except ValueError as error:
        raise RangeNotSatisfiable(f"unparseable Range header: {error}", size) from error
    start, stop = asked.start, asked.stop
    if start is None:
        return None
    if start < 0:
        start = max(0, size + start)
    stop = size if stop is None else min(stop, size)
    if start >= size or stop <= start:
        raise RangeNotSatisfiable(f"range starts at or past the blob's {size} bytes", size)
    return start, stop


async def _stream(
    request: web.Request, download: Download, headers: dict[str, str]
) -> web.StreamResponse:
    """Stream a blob from its download; cut the connection if the download fails."""
    response, start, stop = _partial_response(request, download.size, headers)
    await response.prepare(request)
    counter = request.app[METRICS].served_bytes.labels("upstream")
    try:
        async with aclosing(download.read_range(start, stop)) as chunks:
            async for chunk in chunks:
                await response.write(chunk)
                counter.inc(len(chunk))
    except MirrorError as error:
        log.warning("cut %s %s: %s", request.method, request.path, error.message)
        if request.transport is not None:
            request.transport.abort()
        return response
    await response.write_eof()
    return response


async def tags_list(request: web.Request) -> web.Response:
    """`GET /v2/<name>/tags/list`: the upstream's tags (`n`/`last` passed through)."""
    page = await request.app[LISTINGS].tags(
        _target(request), request.match_info["name"], dict(request.query)
    )
    return _page(request, page)


async def catalog(request: web.Request) -> web.Response:
    """`GET /v2/_catalog`: the repositories the cache holds."""
    return _page(request, request.app[LISTINGS].catalog(dict(request.query)))


def _page(request: web.Request, page: Page) -> web.Response:
    response = web.json_response(page.document)
    if page.next_query is not None:
        response.headers["Link"] = f'<{request.path}?{urlencode(page.next_query)}>; rel="next"'
    return response


async def metrics(request: web.Request) -> web.Response:
    """`GET /metrics`: Prometheus text exposition."""
    return web.Response(
        body=request.app[METRICS].render(),
        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
    )


async def healthz(request: web.Request) -> web.Response:
    """`GET /healthz`: the process is up."""
    return web.json_response({"status": "ok"})


def add_routes(app: web.Application, with_metrics: bool) -> None:
    """Register the v2 surface (and /metrics, /healthz) on `app`."""
    name = r"{name:[^?#]+?}"
    app.router.add_get("/v2/", base, name="base")
    app.router.add_get("/v2/_catalog", catalog, name="catalog")
    app.router.add_get(f"/v2/{name}/tags/list", tags_list, name="tags")
    app.router.add_get(f"/v2/{name}/manifests/{{reference}}", manifest, name="manifest")
    app.router.add_get(f"/v2/{name}/blobs/{{digest}}", blob, name="blob")
    app.router.add_get("/healthz", healthz, name="healthz")
    if with_metrics:
        app.router.add_get("/metrics", metrics, name="metrics")

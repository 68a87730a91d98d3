"""The read side of the v2 API: thin handlers over the caches, plus the middleware
that turns errors into spec bodies, refuses writes, and times requests.
Handlers never format error JSON and never touch the disk layout.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlencode

from aiohttp import web

from mirror.accesslog import (
    CACHE_RESULT,
    REQUEST_ID,
    REQUEST_ID_HEADER,
    UPSTREAM,
    request_id,
)
from mirror.appkeys import BLOBS, INDEX, LISTINGS, MANIFESTS, METRICS, SETTINGS, STORE
from mirror.blobs import CachedBlob
from mirror.errors import (
    EndpointUnknown,
    MirrorError,
    RangeNotSatisfiable,
    Unsupported,
    error_body,
)
from mirror.health import readiness_problem
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
from mirror.send import send_file, stream_download

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


async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """Headers every answer carries, set just before they are sent: the request id, and
    on the v2 surface the API version."""
    response.headers[REQUEST_ID_HEADER] = request.get(REQUEST_ID) or request_id(request)
    if request.path.startswith("/v2"):
        response.headers[API_VERSION] = API_VERSION_VALUE


@web.middleware
async def v2_middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """Spec error bodies, 405 for writes, request ids and timing."""
    started = time.perf_counter()
    request[REQUEST_ID] = request_id(request)
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
    kind = request.match_info.route.name or "other"
    request.app[METRICS].request_duration.labels(kind).observe(time.perf_counter() - started)
    return response


def _target(request: web.Request) -> Target:
    settings = request.app[SETTINGS]
    target = resolve(
        settings.upstreams,
        settings.default_upstream,
        request.match_info["name"],
        request.query.get("ns"),
    )
    request[UPSTREAM] = target.upstream
    return target


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
    request[CACHE_RESULT] = found.result
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
    blobs, served = request.app[BLOBS], request.app[METRICS].served_bytes
    if request.method == "HEAD":
        size, request[CACHE_RESULT] = await blobs.size(target.upstream, target.repo, digest)
        headers["Accept-Ranges"] = "bytes"
        return web.Response(headers={**headers, "Content-Length": str(size)})
    found = await blobs.get(target.upstream, target.repo, digest)
    if isinstance(found, CachedBlob):
        request[CACHE_RESULT] = "hit"
        with found.file:
            return await send_file(request, found, headers, served.labels("cache"))
    request[CACHE_RESULT] = "miss"
    return await stream_download(request, found, headers, served.labels("upstream"))


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


async def readyz(request: web.Request) -> web.Response:
    """`GET /readyz`: 200 when the storage folder is writable and the index answers,
    else 503 with the reason."""
    problem = await asyncio.to_thread(readiness_problem, request.app[STORE], request.app[INDEX])
    if problem is not None:
        return web.json_response({"status": "not ready", "reason": problem}, status=503)
    return web.json_response({"status": "ready"})


def add_routes(app: web.Application, with_metrics: bool) -> None:
    """Register the v2 surface (and /metrics, /healthz) on `app`."""
    name = r"{name:[^?#]+?}"
    app.router.add_get("/v2/", base, name="base")
    app.router.add_get("/v2/_catalog", catalog, name="catalog")
    app.router.add_get(f"/v2/{name}/tags/list", tags_list, name="tags")
    app.router.add_get(f"/v2/{name}/manifests/{{reference}}", manifest, name="manifest")
    app.router.add_get(f"/v2/{name}/blobs/{{digest}}", blob, name="blob")
    app.router.add_get("/healthz", healthz, name="healthz")
    app.router.add_get("/readyz", readyz, name="readyz")
    if with_metrics:
        app.router.add_get("/metrics", metrics, name="metrics")

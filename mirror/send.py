"""How blob bytes leave: sendfile from an open cached file, or a stream that follows a
download. Both honour `Range` and count bytes as they go (metrics and access log).
A download that fails mid-stream cuts the connection, so no client mistakes a short
or wrong body for a whole one.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import aclosing
from typing import BinaryIO

from aiohttp import web
from prometheus_client import Counter

from mirror.accesslog import BYTES_SENT
from mirror.appkeys import SENDERS
from mirror.blobs import CachedBlob
from mirror.errors import MirrorError, RangeNotSatisfiable, UpstreamUnavailable
from mirror.fetch import Download
from mirror.sendfile import Channel

log = logging.getLogger(__name__)

# sendfile in slices so the byte counters move while a large blob goes out.
SENDFILE_SLICE = 16 * 1024 * 1024


def window(request: web.Request, size: int | None) -> tuple[int, int | None] | None:
    """The byte window [start, stop) a Range header asks for, or None for the whole blob.

    Raises RangeNotSatisfiable for a range that starts past the end or does not parse.
    """
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


def _response(
    request: web.Request, size: int | None, headers: dict[str, str]
) -> tuple[web.StreamResponse, int, int | None]:
    """A response for the Range asked (206) or the whole blob, and its [start, stop)."""
    asked = window(request, size)
    response = web.StreamResponse(headers={**headers, "Accept-Ranges": "bytes"})
    start, stop = asked or (0, size)
    if asked is not None:
        response.set_status(206)
        response.headers["Content-Range"] = f"bytes {start}-{(stop or 0) - 1}/{size}"
    if stop is not None:
        response.content_length = stop - start
    return response, start, stop


def _count(request: web.Request, counter: Counter, sent: int) -> None:
    counter.inc(sent)
    request[BYTES_SENT] = request.get(BYTES_SENT, 0) + sent


async def _sendfile(
    request: web.Request,
    channel: Channel,
    file: BinaryIO,
    start: int,
    end: int,
    counter: Counter,
) -> bool:
    """sendfile bytes [start, end) of `file`; False if the file ended before `end`."""
    position = start
    while position < end:
        if request.transport is None or request.transport.is_closing():
            raise ConnectionResetError("the client went away")
        sent = await channel.send(file, position, min(SENDFILE_SLICE, end - position))
        if not sent:
            return False
        position += sent
        _count(request, counter, sent)
    return True


def _transport(request: web.Request) -> asyncio.BaseTransport:
    if request.transport is None:
        raise ConnectionResetError("the client went away")
    return request.transport


def _cut(request: web.Request, why: str) -> None:
    log.warning("cut %s %s: %s", request.method, request.path, why)
    if request.transport is not None:
        request.transport.abort()


def _left(request: web.Request, error: OSError) -> None:
    """A client that hangs up (or stops reading) mid-body is routine: one line, no trace."""
    log.info("client left during %s %s: %s", request.method, request.path, error)
    if request.transport is not None:
        request.transport.abort()


async def send_file(
    request: web.Request, blob: CachedBlob, headers: dict[str, str], counter: Counter
) -> web.StreamResponse:
    """Send an open cached blob (or the Range asked of it) with sendfile."""
    response, start, stop = _response(request, blob.size, headers)
    await response.prepare(request)
    try:
        async with request.app[SENDERS].channel(_transport(request)) as channel:
            whole = await _sendfile(request, channel, blob.file, start, stop or blob.size, counter)
    except (ConnectionError, TimeoutError) as error:
        _left(request, error)
        return response
    if not whole:
        _cut(request, "the cached file was cut short")
        return response
    await response.write_eof()
    return response


async def stream_download(
    request: web.Request, download: Download, headers: dict[str, str], counter: Counter
) -> web.StreamResponse:
    """Send a blob (or the Range asked of it) with sendfile from its partial file, window
    by window as its download writes it."""
    response, start, stop = _response(request, download.size, headers)
    await response.prepare(request)
    try:
        async with (
            request.app[SENDERS].channel(_transport(request)) as channel,
            aclosing(download.windows(start, stop)) as windows,
        ):
            with download.open_reader() as file:
                async for begin, end in windows:
                    if not await _sendfile(request, channel, file, begin, end, counter):
                        raise UpstreamUnavailable(f"partial file of {download.digest} shrank")
    except MirrorError as error:
        _cut(request, error.message)
        return response
    except (ConnectionError, TimeoutError) as error:
        _left(request, error)
        return response
    await response.write_eof()
    return response

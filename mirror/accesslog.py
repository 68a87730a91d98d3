"""One access-log line per request: what was asked, how it was answered, from where.

Handlers note what only they know on the request (`CACHE_RESULT`, `UPSTREAM`,
`BYTES_SENT` for bodies sent with sendfile or streamed); `AccessLogger` writes the
line, as text or, through the JSON formatter, as fields. No header values are
logged, so neither tokens nor passwords can appear.
"""

from __future__ import annotations

import itertools
import logging
import re
import secrets

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

CACHE_RESULT = web.RequestKey("cache_result", str)
UPSTREAM = web.RequestKey("upstream", str)
BYTES_SENT = web.RequestKey("bytes_sent", int)
REQUEST_ID = web.RequestKey("request_id", str)
REQUEST_ID_HEADER = "X-Request-Id"
_SANE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
# Unique per process start and cheap per request: no random syscall on the hot path.
_ID_PREFIX = secrets.token_hex(4)
_ID_COUNTER = itertools.count()


def request_id(request: web.Request) -> str:
    """The request's id: the client's `X-Request-Id` if it is up to 64 of [A-Za-z0-9._-],
    else a new one."""
    given = request.headers.get(REQUEST_ID_HEADER, "")
    return given if _SANE_ID.fullmatch(given) else f"{_ID_PREFIX}{next(_ID_COUNTER):08x}"


class AccessLogger(AbstractAccessLogger):
    """Writes `method path status bytes duration cache upstream client id` per request."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        """Emit the line (aiohttp calls this once the response is finished)."""
        sent = request.get(BYTES_SENT)
        fields = {
            "method": request.method,
            "path": request.path_qs,
            "status": response.status,
            "bytes": sent if sent is not None else response.body_length,
            "duration_ms": round(time * 1000, 1),
            "cache": request.get(CACHE_RESULT, "-"),
            "upstream": request.get(UPSTREAM, "-"),
            "client": request.remote or "-",
            "request_id": request.get(REQUEST_ID, "-"),
        }
        self.logger.info(
            "%(method)s %(path)s %(status)s %(bytes)sB %(duration_ms)sms cache=%(cache)s "
            "upstream=%(upstream)s client=%(client)s id=%(request_id)s",
            fields,
            extra={"fields": fields},
        )


def access_logger() -> logging.Logger:
    """The logger access lines go to."""
    return logging.getLogger("mirror.access")

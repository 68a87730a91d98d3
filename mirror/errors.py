"""The exception tree of the mirror, each error carrying its wire code and status.

    MirrorError                     code, status, message, detail
    ├── NameInvalid                 NAME_INVALID        400
    ├── DigestInvalid               DIGEST_INVALID      400
    ├── ReferenceInvalid            MANIFEST_INVALID    400  (a tag outside the grammar)
    ├── NameUnknown                 NAME_UNKNOWN        404
    ├── ManifestUnknown             MANIFEST_UNKNOWN    404
    ├── BlobUnknown                 BLOB_UNKNOWN        404
    ├── RangeNotSatisfiable         RANGE_INVALID       416
    ├── Unauthorized                UNAUTHORIZED        401
    ├── Denied                      DENIED              403
    ├── Unsupported                 UNSUPPORTED         405
    │   └── EndpointUnknown         UNSUPPORTED         404  (no such v2 endpoint)
    ├── TooManyRequests             TOOMANYREQUESTS     429
    ├── InsufficientStorage         UNAVAILABLE         507  (disk full, nothing to evict)
    └── UpstreamUnavailable         UNAVAILABLE         502 / 503 / 504
        └── DigestMismatch          UNAVAILABLE         502  (bytes hashed to another digest)

Only `error_body` renders the `{"errors": [...]}` JSON; handlers raise, never format.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar


class MirrorError(Exception):
    """An error with a distribution-spec code and the HTTP status it is answered with."""

    code: ClassVar[str] = "UNKNOWN"
    status: ClassVar[int] = 500

    def __init__(self, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail

    def http_status(self) -> int:
        """The HTTP status this error is answered with."""
        return self.status


class NameInvalid(MirrorError):
    code = "NAME_INVALID"
    status = 400


class DigestInvalid(MirrorError):
    code = "DIGEST_INVALID"
    status = 400


class ReferenceInvalid(MirrorError):
    code = "MANIFEST_INVALID"
    status = 400


class NameUnknown(MirrorError):
    code = "NAME_UNKNOWN"
    status = 404


class ManifestUnknown(MirrorError):
    code = "MANIFEST_UNKNOWN"
    status = 404


class BlobUnknown(MirrorError):
    code = "BLOB_UNKNOWN"
    status = 404


class RangeNotSatisfiable(MirrorError):
    code = "RANGE_INVALID"
    status = 416


class Unauthorized(MirrorError):
    code = "UNAUTHORIZED"
    status = 401


class Denied(MirrorError):
    code = "DENIED"
    status = 403


class Unsupported(MirrorError):
    code = "UNSUPPORTED"
    status = 405


class EndpointUnknown(Unsupported):
    status = 404


class TooManyRequests(MirrorError):
    code = "TOOMANYREQUESTS"
    status = 429

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class InsufficientStorage(MirrorError):
    code = "UNAVAILABLE"
    status = 507


class UpstreamUnavailable(MirrorError):
    """The upstream could not give an answer: unreachable (503), broken (502) or slow (504)."""

    code = "UNAVAILABLE"
    status = 502

    def __init__(self, message: str, status: int = 502) -> None:
        super().__init__(message)
        self._status = status

    def http_status(self) -> int:
        return self._status


class DigestMismatch(UpstreamUnavailable):
    """Bytes from the upstream did not hash to the digest they were asked for."""


def error_body(error: MirrorError) -> bytes:
    """Render one error as the distribution-spec JSON body."""
    entry: dict[str, Any] = {"code": error.code, "message": error.message}
    if error.detail is not None:
        entry["detail"] = error.detail
    return json.dumps({"errors": [entry]}).encode()

"""Readiness: can the mirror cache right now? The storage folder takes a write and the
index answers. Blocking (one small file, one SQLite read): call it from a thread.
"""

from __future__ import annotations

import os
import secrets

from mirror.index import BlobIndex
from mirror.storage.disk import DiskBlobStore


def readiness_problem(store: DiskBlobStore, index: BlobIndex) -> str | None:
    """None when ready, else one line saying what is wrong."""
    probe = store.root / "partial" / f".ready-{secrets.token_hex(4)}"
    try:
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as error:
        return f"storage folder {store.root} is not writable: {os.strerror(error.errno or 0)}"
    try:
        index.total()
    except Exception as error:  # any database failure means not ready
        return f"the cache index does not answer: {error}"
    return None

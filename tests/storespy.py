"""Blob-store helpers for tests: committing bytes, and a spy proving code never reads them."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import BinaryIO

from mirror.storage.disk import DiskBlobStore, DiskBlobWriter


def put(store: DiskBlobStore, data: bytes) -> str:
    """Commit `data` to the store; return its digest."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    writer = store.writer(digest)
    writer.write(data)
    writer.commit()
    return digest


class MetadataOnly:
    """A blob store that lists and stats blobs but fails the test on anything else."""

    def __init__(self, store: DiskBlobStore) -> None:
        self._store = store

    def digests(self) -> Iterator[str]:
        return self._store.digests()

    def stat(self, digest: str) -> tuple[int, float] | None:
        return self._store.stat(digest)

    def size(self, digest: str) -> int | None:
        return self._store.size(digest)

    def open(self, digest: str) -> BinaryIO | None:
        raise AssertionError(f"opened {digest}")

    def read(self, digest: str) -> bytes:
        raise AssertionError(f"read {digest}")

    def writer(self, digest: str) -> DiskBlobWriter:
        raise AssertionError(f"wrote {digest}")

    def delete(self, digest: str) -> bool:
        raise AssertionError(f"deleted {digest}")

    def clean_partials(self) -> int:
        raise AssertionError("cleaned partials")

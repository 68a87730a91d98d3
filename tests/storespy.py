"""Blob-store wrappers for tests that prove a piece of code never touches blob bytes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from mirror.storage.disk import DiskBlobStore, DiskBlobWriter


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

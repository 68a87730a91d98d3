"""The local-disk blob store: `blobs/sha256/<2 hex>/<64 hex>` under the storage root.

Writes go to `partial/<hex>.<random>` in the same file system, are hashed as they
are written, and are renamed into place only when the sha256 matches.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from mirror.errors import DigestMismatch
from mirror.oci import hex_part


class DiskBlobWriter:
    """A partial file that becomes a blob on `commit`; see storage.BlobWriter."""

    def __init__(self, digest: str, partial: Path, final: Path) -> None:
        self._digest = digest
        self._partial = partial
        self._final = final
        self._hash = hashlib.sha256()
        self._written = 0
        self._fd: int | None = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)

    @property
    def digest(self) -> str:
        return self._digest

    @property
    def written(self) -> int:
        return self._written

    def write(self, data: bytes) -> None:
        """Append and hash `data`; on an OSError the file is cut back to before it."""
        assert self._fd is not None, "write after commit or discard"
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError:
            os.ftruncate(self._fd, self._written)
            os.lseek(self._fd, self._written, os.SEEK_SET)
            raise
        self._hash.update(data)
        self._written += len(data)

    def open_partial(self) -> int:
        """A read-only descriptor on the partial file; valid after rename or unlink."""
        return os.open(self._partial, os.O_RDONLY)

    def verify(self) -> None:
        """Raise DigestMismatch, discarding the bytes, unless they hash to the digest."""
        actual = "sha256:" + self._hash.hexdigest()
        if actual != self._digest:
            self.discard()
            raise DigestMismatch(
                f"upstream sent bytes hashing to {actual} for {self._digest}; discarded"
            )

    def commit(self) -> None:
        """Verify the sha256, fsync, rename into place; DigestMismatch discards."""
        assert self._fd is not None, "commit after commit or discard"
        self.verify()
        assert self._fd is not None
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = None
        self._final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self._partial, self._final)

    def discard(self) -> None:
        """Close and unlink the partial file; idempotent."""
        if self._fd is None:
            return
        os.close(self._fd)
        self._fd = None
        self._partial.unlink(missing_ok=True)


class DiskBlobStore:
    """Blobs as files under `root`; see storage.BlobStore."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._blobs = root / "blobs" / "sha256"
        self._partials = root / "partial"
        self._blobs.mkdir(parents=True, exist_ok=True)
        self._partials.mkdir(parents=True, exist_ok=True)

    def _path(self, digest: str) -> Path:
        hex_digest = hex_part(digest)
        return self._blobs / hex_digest[:2] / hex_digest

    def open(self, digest: str) -> BinaryIO | None:
        try:
            return self._path(digest).open("rb")
        except FileNotFoundError:
            return None

    def size(self, digest: str) -> int | None:
        try:
            return self._path(digest).stat().st_size
        except FileNotFoundError:
            return None

    def stat(self, digest: str) -> tuple[int, float] | None:
        try:
            result = self._path(digest).stat()
        except FileNotFoundError:
            return None
        return result.st_size, result.st_mtime

    def read(self, digest: str) -> bytes:
        return self._path(digest).read_bytes()

    def writer(self, digest: str) -> DiskBlobWriter:
        partial = self._partials / f"{hex_part(digest)}.{secrets.token_hex(4)}"
        return DiskBlobWriter(digest, partial, self._path(digest))

    def delete(self, digest: str) -> bool:
        try:
            self._path(digest).unlink()
        except FileNotFoundError:
            return False
        return True

    def digests(self) -> Iterator[str]:
        for shard in sorted(self._blobs.iterdir()):
            for blob in sorted(shard.iterdir()):
                yield "sha256:" + blob.name

    def clean_partials(self) -> int:
        removed = 0
        for leftover in self._partials.iterdir():
            leftover.unlink(missing_ok=True)
            removed += 1
        return removed

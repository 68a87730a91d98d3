"""The blob-store seam: what the cache needs from wherever blobs live.

Blobs are content-addressed by a validated `sha256:` digest. A writer hashes as it
writes and makes a blob visible only through `commit`, which verifies the digest.
This package must not know about HTTP, upstreams or eviction policy.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO, Protocol


class BlobWriter(Protocol):
    """A blob being written; nothing is visible to readers of the store until `commit`."""

    @property
    def digest(self) -> str:
        """The digest the bytes must hash to."""
        ...

    @property
    def written(self) -> int:
        """Bytes written so far."""
        ...

    def write(self, data: bytes) -> None:
        """Append and hash `data`. Blocking: call it off the event loop for large data.

        On an OSError (a full disk) nothing of `data` is kept, so it can be retried.
        """
        ...

    def open_partial(self) -> int:
        """A new read-only file descriptor on the bytes written so far (the caller closes it).

        It stays valid after `commit` or `discard`, so readers can finish what they read.
        """
        ...

    def verify(self) -> None:
        """Raise DigestMismatch (and discard the bytes) if they do not hash to the digest."""
        ...

    def commit(self) -> None:
        """Verify the digest and make the blob visible atomically.

        Raises DigestMismatch (and discards the bytes) when the hash differs.
        """
        ...

    def discard(self) -> None:
        """Drop the partial bytes. Safe to call twice, and after `commit` (then a no-op)."""
        ...


class BlobStore(Protocol):
    """Committed blobs by digest, plus writers for new ones."""

    def open(self, digest: str) -> BinaryIO | None:
        """The committed blob opened for reading (the caller closes it), or None if absent.

        A real file on local disk, so it can be sent with sendfile; it keeps every byte
        even if the blob is deleted while it is open.
        """
        ...

    def size(self, digest: str) -> int | None:
        """The blob's size in bytes, or None if absent."""
        ...

    def stat(self, digest: str) -> tuple[int, float] | None:
        """The blob's size in bytes and modification time, or None if absent."""
        ...

    def read(self, digest: str) -> bytes:
        """The whole blob (for small ones: manifests). Raises FileNotFoundError if absent."""
        ...

    def writer(self, digest: str) -> BlobWriter:
        """Start writing a blob; see BlobWriter."""
        ...

    def delete(self, digest: str) -> bool:
        """Remove a blob; True if it was there. Open readers keep their bytes."""
        ...

    def digests(self) -> Iterator[str]:
        """Every committed blob's digest."""
        ...

    def clean_partials(self) -> int:
        """Remove leftovers of interrupted writes (call at start-up); returns how many."""
        ...

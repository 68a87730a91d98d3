"""The local-disk blob store: nothing is visible until a verified commit."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from mirror.errors import DigestMismatch
from mirror.storage.disk import DiskBlobStore


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_commit_makes_a_verified_blob_visible(tmp_path: Path) -> None:
    store = DiskBlobStore(tmp_path)
    data = os.urandom(100_000)
    digest = digest_of(data)
    writer = store.writer(digest)
    writer.write(data[:40_000])
    assert store.size(digest) is None
    writer.write(data[40_000:])
    writer.commit()
    writer.discard()  # a no-op after commit
    assert store.read(digest) == data
    assert store.size(digest) == len(data)
    assert list(store.digests()) == [digest]
    assert list((tmp_path / "partial").iterdir()) == []


def test_mismatch_is_discarded(tmp_path: Path) -> None:
    store = DiskBlobStore(tmp_path)
    digest = digest_of(b"right")
    writer = store.writer(digest)
    writer.write(b"wrong")
    with pytest.raises(DigestMismatch):
        writer.commit()
    assert store.size(digest) is None
    assert list((tmp_path / "partial").iterdir()) == []


def test_partial_reader_survives_commit(tmp_path: Path) -> None:
    store = DiskBlobStore(tmp_path)
    data = b"x" * 1000
    writer = store.writer(digest_of(data))
    writer.write(data)
    fd = writer.open_partial()
    try:
        writer.commit()
        assert os.pread(fd, 2000, 0) == data
    finally:
        os.close(fd)


def test_start_up_removes_partials_and_delete_is_idempotent(tmp_path: Path) -> None:
    store = DiskBlobStore(tmp_path)
    data = b"left behind"
    store.writer(digest_of(data)).write(data)
    assert DiskBlobStore(tmp_path).clean_partials() == 1
    assert list((tmp_path / "partial").iterdir()) == []
    writer = store.writer(digest_of(data))
    writer.write(data)
    writer.commit()
    assert store.delete(digest_of(data))
    assert not store.delete(digest_of(data))
    assert store.size(digest_of(data)) is None

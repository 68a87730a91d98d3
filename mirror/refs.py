"""Persistent records of what each repository holds: tags and manifest media types.

Layout under `<storage>/refs/<upstream>/<repository>/`: `_tags/<tag>` holds
`<digest> <media type>`, `_manifests/<hex>` holds the media type of a manifest
pulled for that repository. Manifest bytes live in the blob store. These records
let a restarted mirror answer tags and `_catalog` with the upstream gone. Small
synchronous file operations: each is one read or one atomic rename.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from mirror.oci import hex_part


@dataclass(frozen=True, slots=True)
class TagRecord:
    """What a tag pointed at when last seen."""

    digest: str
    media_type: str


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    temp.write_text(text)
    os.replace(temp, path)


class Refs:
    """Tag and manifest records by (upstream, repository)."""

    def __init__(self, root: Path) -> None:
        self._root = root / "refs"
        self._root.mkdir(parents=True, exist_ok=True)

    def _repo(self, upstream: str, repo: str) -> Path:
        return self._root / upstream / repo

    def tag(self, upstream: str, repo: str, tag: str) -> TagRecord | None:
        """The record of a tag, or None if it was never pulled."""
        try:
            digest, media_type = (self._repo(upstream, repo) / "_tags" / tag).read_text().split()
        except (FileNotFoundError, ValueError):
            return None
        return TagRecord(digest, media_type)

    def set_tag(self, upstream: str, repo: str, tag: str, record: TagRecord) -> None:
        """Record where a tag points (and that the repository holds the manifest)."""
        _write_atomic(
            self._repo(upstream, repo) / "_tags" / tag, f"{record.digest} {record.media_type}\n"
        )
        self.set_manifest(upstream, repo, record.digest, record.media_type)

    def manifest_type(self, upstream: str, repo: str, digest: str) -> str | None:
        """The media type of a manifest pulled for this repository, or None."""
        path = self._repo(upstream, repo) / "_manifests" / hex_part(digest)
        try:
            return path.read_text().strip() or None
        except FileNotFoundError:
            return None

    def set_manifest(self, upstream: str, repo: str, digest: str, media_type: str) -> None:
        """Record that this repository holds a manifest of this media type."""
        path = self._repo(upstream, repo) / "_manifests" / hex_part(digest)
        if not path.exists():
            _write_atomic(path, media_type + "\n")

    def tags(self, upstream: str, repo: str) -> list[str]:
        """The tags held for a repository, sorted."""
        folder = self._repo(upstream, repo) / "_tags"
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))

    def repositories(self, upstream: str) -> list[str]:
        """Every repository of an upstream that holds a manifest, sorted."""
        base = self._root / upstream
        if not base.is_dir():
            return []
        found = [
            folder.parent.relative_to(base).as_posix()
            for folder in base.rglob("_manifests")
            if folder.is_dir()
        ]
        return sorted(found)

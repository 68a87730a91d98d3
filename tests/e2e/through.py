"""skopeo pulling through a mirror process, checked against what was pushed upstream.

Owns: `Through` (a mirror, skopeo, the upstream registry and a folder for copies), the
`appended` helper that turns a mark/since snapshot into "what a `with` body added", and
the "fetched once" check of a cold pull. Test modules share these through conftest's
`start_through` and `through` fixtures.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from .images import Image, ImageIndex
from .mirrorproc import MirrorProcess
from .registry import AccessRecord, Registry, blob_fetches
from .skopeo import Skopeo, assert_dir_image, assert_dir_index, docker_ref

T = TypeVar("T")


@contextmanager
def appended(snapshot: Callable[[], list[T]]) -> Iterator[list[T]]:
    """What a `with` body adds to `snapshot()` (a mark/since pair), filled in at its end."""
    added: list[T] = []
    before = len(snapshot())
    yield added
    added.extend(snapshot()[before:])


@dataclass(frozen=True, slots=True)
class Through:
    """skopeo pulling anonymously through `mirror`, each copy into its own `dir:` under `out`."""

    mirror: MirrorProcess
    skopeo: Skopeo
    upstream: Registry
    out: Path

    def ref(
        self, item: Image | ImageIndex, reference: str | None = None, repository: str | None = None
    ) -> str:
        """The item's reference on the mirror: its tag unless `reference` is given, its
        repository unless `repository` is."""
        return docker_ref(
            self.mirror.host,
            repository or item.repository,
            reference or item.tag or item.digest,
        )

    def dest(self, name: str) -> Path:
        """A fresh destination directory under `out` (reusing one would hide a failed copy)."""
        path = self.out / name
        assert not path.exists(), f"{path} already holds an earlier copy"
        return path

    def pull(
        self,
        item: Image | ImageIndex,
        name: str = "out",
        reference: str | None = None,
        *,
        repository: str | None = None,
    ) -> Path:
        """Copy `item` (every platform of an index) into `dir:out/name`, then check the copy
        byte for byte against what was pushed. Returns the copy's directory."""
        source = self.ref(item, reference, repository)
        dest = self.dest(name)
        if isinstance(item, ImageIndex):
            self.skopeo.copy(source, f"dir:{dest}", all_images=True)
            assert_dir_index(dest, item)
        else:
            self.skopeo.copy(source, f"dir:{dest}")
            assert_dir_image(dest, item)
        return dest

    def cold_pull(
        self, item: Image | ImageIndex, name: str = "out", *, repository: str | None = None
    ) -> None:
        """`pull` by tag, and check that the upstream served each of the item's blobs exactly
        once (from the item's repository only)."""
        with self.upstream_requests() as records:
            self.pull(item, name, repository=repository)
        for image in item.images if isinstance(item, ImageIndex) else (item,):
            assert_fetched_once(records, image)

    def upstream_requests(self) -> AbstractContextManager[list[AccessRecord]]:
        """The requests the upstream answered during a `with` body, filled in at its end."""
        return appended(self.upstream.requests_since)


StartThrough = Callable[..., Through]
"""The `start_through` fixture: `start_mirror(**kwargs)`, with skopeo pulling through it."""


def assert_fetched_once(records: list[AccessRecord], image: Image) -> None:
    """A cold pull downloaded each of the image's blobs from the upstream exactly once."""
    fetched = Counter(r.reference for r in blob_fetches(records) if r.status == 200)
    wanted = {blob.digest: 1 for blob in image.blobs}
    assert {d: fetched[d] for d in wanted} == wanted, f"upstream blob GETs: {dict(fetched)}"
    repositories = {r.repository for r in blob_fetches(records)}
    assert repositories == {image.repository}, f"blobs fetched from {repositories}"

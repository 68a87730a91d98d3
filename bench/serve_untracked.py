"""`mirror` with hits not recorded in the index: the baseline of bench/index_overhead.py."""

from __future__ import annotations

import sys

from mirror.cli import main
from mirror.index import BlobIndex


def _untracked(self: BlobIndex, digest: str) -> None:
    """A hit that records nothing."""


BlobIndex.touch = _untracked  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(main())

"""Benchmark the mirror against the reference registry's proxy mode and nginx (issue 6).

Everything on loopback: an upstream reference registry behind token auth, seeded with
generated images; the mirror and the reference proxy on empty caches; nginx serving
the same bytes. Prints a table of medians, min-max and ratios and writes it, with a
description of the machine, to BENCHMARKS.md. See bench/README.md.

    python bench/run.py [--rounds 3] [--small] [--output PATH] [--profile DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    # `python bench/run.py` puts bench/ on the path, not the checkout: bench.* and
    # tests.e2e.* (the e2e helpers this benchmark reuses) need the checkout.
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from bench.harness import main as run

    return run(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())

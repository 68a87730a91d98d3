"""Smoke test of the benchmark (bench/run.py): with tiny images it runs end to end
against the real reference registry, nginx, curl, ab and skopeo, and writes a table
with every workload and numeric mirror/reference ratios. No timings are asserted:
this only keeps the script from rotting.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.mirrorproc import find_mirror_executable
from tests.e2e.support import child_env, require_binary, unavailable

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
WORKLOADS = ("fan-out", "warm throughput", "cold pull", "warm pull", "manifest HEAD by tag")
NUMBER = re.compile(r"^\d+(\.\d+)?$")


def _rows(text: str) -> list[list[str]]:
    rows = []
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("| ---"):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_small_benchmark_writes_every_workload_with_ratios(tmp_path: Path) -> None:
    for binary in ("docker-registry", "nginx", "curl", "ab", "skopeo"):
        if binary == "nginx" and Path("/usr/sbin/nginx").exists():
            continue  # root's PATH may lack /usr/sbin; the benchmark looks there too
        require_binary(binary)
    if find_mirror_executable() is None:
        unavailable("the `mirror` console script is not installed (pip install -e '.[test]')")
    output = tmp_path / "BENCHMARKS.md"
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--small", "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=child_env(),
        stdin=subprocess.DEVNULL,
    )
    assert run.returncode == 0, f"bench/run.py failed:\n{run.stdout}\n{run.stderr[-5000:]}"
    rows = _rows(output.read_text())
    start = next((i for i, row in enumerate(rows) if row[:2] == ["workload", "metric"]), None)
    assert start is not None, f"no results table in {output.read_text()}"
    header, table = rows[start], rows[start + 1 :]
    ratio = header.index("mirror/reference")
    for workload in WORKLOADS:
        rows_of = [row for row in table if row[0] == workload]
        assert rows_of, f"no {workload!r} row in the table"
        # A ratio over a median of 0 (e.g. CPU ticks on a tiny blob) is "n/a"; one per
        # workload must be a number.
        assert any(NUMBER.match(row[ratio]) for row in rows_of), rows_of
    nginx = header.index("mirror/nginx")
    warm = [row for row in table if row[0] == "warm throughput"]
    assert any(NUMBER.match(row[nginx]) for row in warm), warm
    assert "CPU" in output.read_text() and "kernel" in output.read_text()

"""Turning per-round numbers into the table: the rows, medians, min-max and ratios,
the machine description, and writing both into a section of BENCHMARKS.md between
marker comments (text outside the markers, such as notes on the results, survives
a rerun). Knows nothing about how the numbers were measured.
"""

from __future__ import annotations

import os
import platform
import re
import statistics
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

SYSTEMS = ("mirror", "reference", "nginx")
HEADINGS = {"mirror": "mirror", "reference": "reference proxy", "nginx": "nginx"}


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the table: a workload's metric, how to print it, and whether nginx runs it."""

    key: str
    workload: str
    metric: str
    digits: int
    nginx: bool = False


ROWS = (
    Row("fanout.upstream_bytes", "fan-out", "upstream bytes (x blob size)", 2),
    Row("fanout.upstream_gets", "fan-out", "upstream blob GETs", 0),
    Row("fanout.ttfb_max", "fan-out", "slowest client time to first byte (s)", 3),
    Row("fanout.ttfb_median", "fan-out", "median client time to first byte (s)", 3),
    Row("fanout.total_max", "fan-out", "slowest client total time (s)", 2),
    Row("fanout.total_median", "fan-out", "median client total time (s)", 2),
    Row("fanout.rss", "fan-out", "server peak RSS (MiB)", 0),
    Row("fanout.cpu_per_gb", "fan-out", "server CPU s per GB served", 2),
    Row("warm.mb_per_s", "warm throughput", "aggregate MB/s", 0, nginx=True),
    Row("warm.rss", "warm throughput", "server peak RSS (MiB)", 0, nginx=True),
    Row("warm.cpu_per_gb", "warm throughput", "server CPU s per GB served", 2, nginx=True),
    Row("pull.cold", "cold pull", "skopeo copy to dir: (s)", 2),
    Row("pull.warm", "warm pull", "skopeo copy to dir: (s)", 2),
    Row("head.per_second", "manifest HEAD by tag", "requests/s", 0),
    Row("head.p50_ms", "manifest HEAD by tag", "p50 latency (ms)", 1),
    Row("head.p99_ms", "manifest HEAD by tag", "p99 latency (ms)", 1),
    Row("head.upstream_requests", "manifest HEAD by tag", "upstream requests", 0),
)
WORKLOADS = tuple(dict.fromkeys(row.workload for row in ROWS))

Results = dict[str, dict[str, list[float]]]
"""Row key → system → one number per round."""


def record(results: Results, system: str, numbers: dict[str, float]) -> None:
    """Add one round's numbers for `system`."""
    for key, value in numbers.items():
        results.setdefault(key, {}).setdefault(system, []).append(value)


def _cell(values: list[float] | None, digits: int) -> str:
    if not values:
        return "n/a"
    median = statistics.median(values)
    return f"{median:.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def _ratio(results: dict[str, list[float]], over: str) -> str:
    mine, theirs = results.get("mirror"), results.get(over)
    if not mine or not theirs or statistics.median(theirs) == 0:
        return "n/a"
    return f"{statistics.median(mine) / statistics.median(theirs):.2f}"


def table(results: Results) -> str:
    """The Markdown table: median (min-max) per system, then mirror/reference and
    mirror/nginx ratios of the medians ("n/a" where a system does not run the workload)."""
    header = ["workload", "metric", *(HEADINGS[s] for s in SYSTEMS)]
    header += ["mirror/reference", "mirror/nginx"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for row in ROWS:
        found = results.get(row.key, {})
        cells = [row.workload, row.metric]
        cells += [_cell(found.get(system), row.digits) for system in SYSTEMS]
        cells += [_ratio(found, "reference"), _ratio(found, "nginx") if row.nginx else "n/a"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _first_line(argv: list[str]) -> str:
    try:
        run = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (run.stdout or run.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def _meminfo_gib() -> str:
    text = Path("/proc/meminfo").read_text()
    match = re.search(r"^MemTotal:\s+(\d+) kB", text, re.M)
    return f"{int(match[1]) / (1 << 20):.1f} GiB" if match else "unknown"


def _cpu_model() -> str:
    text = Path("/proc/cpuinfo").read_text()
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    return match[1].strip() if match else platform.processor() or "unknown"


def _revision(checkout: Path) -> str:
    """The commit measured, and whether mirror/ had uncommitted changes."""
    commit = _first_line(["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"])
    changed = _first_line(["git", "-C", str(checkout), "status", "--porcelain", "--", "mirror"])
    return f"{commit}, with uncommitted changes in mirror/" if changed != "unknown" else commit


def machine(binaries: dict[str, str], checkout: Path) -> list[tuple[str, str]]:
    """What the numbers were measured on: hardware, kernel, every program's version and
    the commit of the mirror's checkout."""
    load = " ".join(f"{n:.2f}" for n in os.getloadavg())
    return [
        ("CPU", f"{_cpu_model()}, {os.cpu_count()} cores"),
        ("memory", _meminfo_gib()),
        ("kernel", f"{platform.system()} {platform.release()}"),
        ("Python", sys.version.split()[0]),
        ("aiohttp", metadata.version("aiohttp")),
        ("mirror", f"{metadata.version('mirror')} ({_revision(checkout)})"),
        ("reference registry", _first_line([binaries["docker-registry"], "--version"])),
        ("nginx", _first_line([binaries["nginx"], "-v"])),
        ("curl", " ".join(_first_line([binaries["curl"], "--version"]).split()[:2])),
        ("ab", _first_line([binaries["ab"], "-V"]).removeprefix("This is ").split(" <")[0]),
        ("skopeo", _first_line([binaries["skopeo"], "--version"])),
        ("load average at the end (1, 5, 15 min)", load),
    ]


def markers(section: str) -> tuple[str, str]:
    return f"<!-- bench:{section}:begin -->", f"<!-- bench:{section}:end -->"


def write_section(path: Path, section: str, body: str) -> None:
    """Put `body` between the `section` markers of `path`: replaced if they are there,
    appended otherwise (a missing file starts with a title)."""
    begin, end = markers(section)
    block = f"{begin}\n{body.strip()}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if begin in text and end in text:
        head, _, rest = text.partition(begin)
        _, _, tail = rest.partition(end)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)

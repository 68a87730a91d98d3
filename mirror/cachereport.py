"""What `mirror cache` reports, as values, and their two renderings: text for people, JSON.

Pure apart from `Progress`, which writes a progress bar to a stream it is given.
Must not know argparse, the index or the disk: `mirror.cachecli` gathers the values.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

_MAX_TAGS_SHOWN = 6


@dataclass(frozen=True, slots=True)
class Running:
    """The counters a running mirror last published."""

    pid: int
    started: float
    hits: int
    misses: int

    @property
    def hit_ratio(self) -> float | None:
        served = self.hits + self.misses
        return self.hits / served if served else None


@dataclass(frozen=True, slots=True)
class Stats:
    storage: str
    size: int
    max_size: int
    high_watermark: float
    low_watermark: float
    blobs: int
    manifests: int
    pinned_references: int
    pinned_bytes: int
    running: Running | None


@dataclass(frozen=True, slots=True)
class Repository:
    """One repository the cache holds, named as clients name it."""

    name: str
    upstream: str
    repository: str
    tags: tuple[str, ...]
    size: int  # every entry pulled for it; a layer shared by two repositories counts in both
    entries: int
    last_pull: float | None


@dataclass(frozen=True, slots=True)
class Pruned:
    count: int
    freed: int
    digests: tuple[str, ...]
    size: int  # what the index holds afterwards
    target: int | None
    older_than: float | None
    pinned_bytes: int


@dataclass(frozen=True, slots=True)
class Corrupt:
    digest: str
    size: int
    actual: str  # the digest its bytes hash to


@dataclass(frozen=True, slots=True)
class Verified:
    indexed: int  # files the reconcile found without an index entry
    dropped: int  # index entries whose file was gone
    blobs: int
    bytes: int
    corrupt: tuple[Corrupt, ...]


def human_size(size: int) -> str:
    """`512 B`, `1.5 KiB`, `3.4 GiB`: approximate, for reading (JSON carries exact bytes)."""
    value = float(size)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            return f"{size} B" if size < 1024 else f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def _count(count: int, noun: str, nouns: str = "") -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {nouns or noun + 's'}"


def _bytes(size: int) -> str:
    return f"{human_size(size)} ({size} bytes)"


def iso(when: float | None) -> str | None:
    """ISO-8601 UTC to the second (`2024-06-01T12:00:00Z`), or None."""
    if when is None:
        return None
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def human_duration(seconds: float) -> str:
    """The two largest units: `3d4h`, `5h12m`, `42s`."""
    left = int(seconds)
    parts: list[str] = []
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if left >= length or (unit == "s" and not parts):
            parts.append(f"{left // length}{unit}")
            left %= length
    return "".join(parts[:2])


def _percent(fraction: float) -> str:
    return f"{fraction * 100:.1f}%"


def stats_text(stats: Stats, now: float) -> str:
    used = stats.size / stats.max_size if stats.max_size else 0.0
    high, low = stats.high_watermark, stats.low_watermark
    lines = [
        ("storage", stats.storage),
        ("size", f"{_bytes(stats.size)}, {_percent(used)} of the {_bytes(stats.max_size)} quota"),
        (
            "watermarks",
            f"eviction starts at {high:.0%} ({human_size(int(stats.max_size * high))})"
            f" and goes down to {low:.0%} ({human_size(int(stats.max_size * low))})",
        ),
        ("held", f"{_count(stats.blobs, 'blob')}, {_count(stats.manifests, 'manifest')}"),
        ("pinned", f"{_count(stats.pinned_references, 'reference')}, {_bytes(stats.pinned_bytes)}"),
        ("mirror", _running_text(stats.running, now)),
    ]
    return "".join(f"{key:<11} {value}\n" for key, value in lines)


def _running_text(running: Running | None, now: float) -> str:
    if running is None:
        return "not running"
    ratio = "-" if running.hit_ratio is None else _percent(running.hit_ratio)
    hits, misses = _count(running.hits, "hit"), _count(running.misses, "miss", "misses")
    uptime = human_duration(now - running.started)
    return f"running (pid {running.pid}, up {uptime}): {hits}, {misses}, hit ratio {ratio}"


def stats_json(stats: Stats, now: float) -> dict[str, Any]:
    running = stats.running
    return {
        "storage": stats.storage,
        "size_bytes": stats.size,
        "max_size_bytes": stats.max_size,
        "used_percent": round(100 * stats.size / stats.max_size, 2) if stats.max_size else 0.0,
        "high_watermark": stats.high_watermark,
        "low_watermark": stats.low_watermark,
        "blobs": stats.blobs,
        "manifests": stats.manifests,
        "pinned_references": stats.pinned_references,
        "pinned_bytes": stats.pinned_bytes,
        "running": running is not None,
        "mirror": None
        if running is None
        else {
            "pid": running.pid,
            "started": iso(running.started),
            "uptime_seconds": round(now - running.started),
            "hits": running.hits,
            "misses": running.misses,
            "hit_ratio": running.hit_ratio,
        },
    }


def ls_text(repositories: list[Repository]) -> str:
    if not repositories:
        return "no repositories held\n"
    rows = [("REPOSITORY", "TAGS", "SIZE", "LAST PULL")]
    for repo in repositories:
        tags = ", ".join(repo.tags[:_MAX_TAGS_SHOWN]) or "-"
        if len(repo.tags) > _MAX_TAGS_SHOWN:
            tags += f" (+{len(repo.tags) - _MAX_TAGS_SHOWN} more)"
        rows.append((repo.name, tags, human_size(repo.size), iso(repo.last_pull) or "-"))
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    return "".join(
        f"{name:<{widths[0]}}  {tags:<{widths[1]}}  {size:>{widths[2]}}  {last}\n"
        for name, tags, size, last in rows
    )


def ls_json(repositories: list[Repository]) -> dict[str, Any]:
    return {
        "repositories": [
            {
                "name": repo.name,
                "upstream": repo.upstream,
                "repository": repo.repository,
                "tags": list(repo.tags),
                "size_bytes": repo.size,
                "entries": repo.entries,
                "last_pull": iso(repo.last_pull),
            }
            for repo in repositories
        ]
    }


def prune_text(pruned: Pruned) -> str:
    removed = _count(pruned.count, "blob or manifest", "blobs and manifests")
    text = (
        f"removed {removed}, freed {_bytes(pruned.freed)}; the cache holds {_bytes(pruned.size)}\n"
    )
    if pruned.target is not None and pruned.size > pruned.target:
        text += (
            f"still above the {human_size(pruned.target)} target:"
            f" {_bytes(pruned.pinned_bytes)} of it is pinned\n"
        )
    return text


def prune_json(pruned: Pruned) -> dict[str, Any]:
    return {
        "removed": pruned.count,
        "freed_bytes": pruned.freed,
        "digests": list(pruned.digests),
        "size_bytes": pruned.size,
        "target_bytes": pruned.target,
        "older_than_seconds": pruned.older_than,
        "pinned_bytes": pruned.pinned_bytes,
    }


def verify_text(verified: Verified) -> str:
    lines = []
    if verified.indexed or verified.dropped:
        lines.append(
            f"index reconciled with the disk: {_count(verified.indexed, 'file')} indexed,"
            f" {_count(verified.dropped, 'entry', 'entries')} without a file dropped"
        )
    checked = f"verified {_count(verified.blobs, 'blob')}, {_bytes(verified.bytes)}"
    if not verified.corrupt:
        lines.append(f"{checked}: all intact")
    else:
        lines.append(f"{checked}: {len(verified.corrupt)} corrupt, removed:")
        lines += [
            f"  {bad.digest} ({human_size(bad.size)}) hashes to {bad.actual}"
            for bad in verified.corrupt
        ]
    return "".join(line + "\n" for line in lines)


def verify_json(verified: Verified) -> dict[str, Any]:
    return {
        "reconciled": {"indexed": verified.indexed, "dropped": verified.dropped},
        "blobs": verified.blobs,
        "bytes": verified.bytes,
        "corrupt": [
            {"digest": bad.digest, "size_bytes": bad.size, "actual": bad.actual}
            for bad in verified.corrupt
        ],
    }


class Progress:
    """A progress bar of bytes done out of `total` on `stream`.

    On a terminal one line redrawn in place with `\\r`; otherwise (a log, a pipe) one
    line each time another tenth is done. Writes nothing when `total` is 0.
    """

    def __init__(self, stream: TextIO, total: int, label: str) -> None:
        self._stream = stream
        self._total = total
        self._label = label
        self._done = 0
        self._tty = stream.isatty()
        self._shown = -1 if self._tty else 0  # percent on a terminal, tenths otherwise

    def advance(self, count: int) -> None:
        self._done = min(self._total, self._done + count)
        if not self._total:
            return
        percent = 100 * self._done // self._total
        step = percent if self._tty else percent // 10
        if step == self._shown:
            return
        self._shown = step
        figures = f"{percent:3d}% {human_size(self._done)} / {human_size(self._total)}"
        if self._tty:
            bar = "#" * (percent // 4)
            self._stream.write(f"\r{self._label} [{bar:<25}] {figures}  ")
        else:
            self._stream.write(f"{self._label}: {figures}\n")
        self._stream.flush()

    def finish(self) -> None:
        """End the bar's line on a terminal (call once, after the last `advance`)."""
        if self._tty and self._shown >= 0:
            self._stream.write("\n")
            self._stream.flush()

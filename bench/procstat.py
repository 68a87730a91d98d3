"""What a server process tree costs while a workload runs: peak RSS and CPU seconds.

Reads /proc only: utime+stime from `stat`, VmRSS/VmHWM from `status`. The peak is
VmHWM after resetting it through `clear_refs` (root or the process's owner), and a
VmRSS sample every 20 ms as well, so a failed reset still gives a lower bound.
Knows nothing about what the processes are.
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Usage:
    """Peak resident memory (bytes) and CPU seconds (user + system) over an interval."""

    peak_rss: int
    cpu_seconds: float


def process_tree(pid: int) -> list[int]:
    """`pid` and every descendant alive now (nginx: master and workers)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(parents.get(current, []))
    return found


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of `pids`, in seconds (a process that is gone counts 0)."""
    ticks = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            ticks += int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)
    return ticks / CLOCK_TICKS


def _status_kib(pid: int, key: str) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak(pid: int) -> bool:
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class Meter:
    """`with Meter(pid) as meter: ...` then `meter.usage`: what the tree of `pid` used.

    The tree is taken when the `with` starts. Not reentrant; one Meter per interval.
    """

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid = pid
        self.interval = interval
        self._pids: list[int] = []
        self._reset = False
        self._sampled = 0
        self._cpu_before = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="bench-meter", daemon=True)
        self._usage: Usage | None = None

    @property
    def usage(self) -> Usage:
        if self._usage is None:
            raise RuntimeError("the meter's interval has not ended")
        return self._usage

    def _rss(self) -> int:
        return sum(_status_kib(pid, "VmRSS") for pid in self._pids) * 1024

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._sampled = max(self._sampled, self._rss())

    def __enter__(self) -> Meter:
        self._pids = process_tree(self.pid)
        self._reset = all([_reset_peak(pid) for pid in self._pids])
        self._sampled = self._rss()
        self._cpu_before = cpu_seconds(self._pids)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        cpu = cpu_seconds(self._pids) - self._cpu_before
        peak = max(self._sampled, self._rss())
        if self._reset:
            peak = max(peak, sum(_status_kib(pid, "VmHWM") for pid in self._pids) * 1024)
        self._usage = Usage(peak, cpu)

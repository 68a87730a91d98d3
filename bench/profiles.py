"""Profiling the mirror with py-spy while a workload runs, and summarising a profile.

`PySpy` attaches `py-spy record --format raw` (collapsed stacks, which speedscope and
flamegraph.pl both open) to a running process by pid for the body of a `with`, and
stops it with SIGINT so it writes its file. `summarise` turns that file into the
functions that take the most samples, by self and by total time, and the share of
each thread (the event loop's, and asyncio's `to_thread` workers). Total time is
counted for the mirror's own functions only: the loop's scaffolding would top it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from tests.e2e.support import wait_until

_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^():]+)(?::\d+)?\)$")


class PySpy:
    """`with PySpy(py_spy, pid, out):` samples `pid` (100 Hz, idle stacks left out, one
    root frame per thread) into `out`; the profiler is stopped by pid at the end."""

    def __init__(self, py_spy: str, pid: int, out: Path) -> None:
        self.argv = [py_spy, "record", "--pid", str(pid), "--format", "raw", "--threads"]
        self.argv += ["--full-filenames", "--rate", "100", "--output", str(out)]
        self.out = out
        self.log = out.with_suffix(".log")
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> PySpy:
        with self.log.open("wb") as log:
            self._process = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        process = self._process
        try:
            wait_until(
                lambda: True if b"Sampling process" in self.log.read_bytes() else None,
                timeout=20,
                what=f"py-spy to attach ({self.log})",
                abort=lambda: None if process.poll() is None else self.log.read_text(),
            )
        except BaseException:
            self._stop()
            raise
        return self

    def _stop(self) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop()


@dataclass(frozen=True, slots=True)
class Summary:
    samples: int  # samples of a thread at work
    waiting: int  # samples py-spy took as busy though the thread waited (see WAITING)
    threads: list[tuple[str, float]]  # thread name, share of samples
    by_self: list[tuple[str, float]]  # function (module), share of samples on top
    by_total: list[tuple[str, float]]  # the mirror's own functions, share of samples under it
    packages: list[tuple[str, float]]  # package or stdlib module of the top frame, share


# Leaves that mean waiting, not work: the loop in epoll_wait, a pool thread waiting for
# a job. py-spy's idle filter misses some of them (the thread was runnable when sampled).
WAITING = frozenset(
    {
        "EpollSelector.select (selectors.py)",
        "select (selectors.py)",
        "_worker (concurrent/futures/thread.py)",
    }
)


def _module(file: str) -> str:
    """`mirror/fetch.py`, `aiohttp/web_protocol.py`, `asyncio/events.py`: the path from
    the package (or the standard library) down."""
    parts = Path(file).parts
    for index in range(len(parts) - 1, -1, -1):
        if parts[index] == "site-packages" or re.fullmatch(r"python3\.\d+", parts[index]):
            return "/".join(parts[index + 1 :])
    if "mirror" in parts:
        return "/".join(parts[len(parts) - 1 - parts[::-1].index("mirror") :])
    return parts[-1] if parts else file


def _function(frame: str) -> str:
    match = _FRAME.match(frame)
    if match is None:
        return frame
    return f"{match['function']} ({_module(match['file'])})"


def _package(function: str) -> str:
    """`aiohttp` for `f (aiohttp/web.py)`, `pathlib` for `f (pathlib.py)`."""
    module = function.rpartition(" (")[2].removesuffix(")")
    if module.startswith("<frozen "):
        return module.removeprefix("<frozen ").removesuffix(">")
    return module.partition("/")[0].removesuffix(".py")


def _thread(frame: str) -> str:
    name = frame.partition(": ")[2] or frame
    return re.sub(r"_\d+$", "_N", name)  # asyncio_0, asyncio_1 … are one pool


def summarise(path: Path, top: int = 12) -> Summary:
    """Read a py-spy raw profile. Shares are of the samples at work (WAITING left out).
    Total time counts the mirror's own functions, except those under which every
    sample of their thread falls (`main`, the serve loop): they say nothing."""
    by_self: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    by_total: Counter[tuple[str, str]] = Counter()
    threads: Counter[str] = Counter()
    waiting = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread = _thread(frames.pop(0)) if frames[0].startswith("thread (") else "thread"
        functions = [_function(f) for f in frames] or ["(no Python frame)"]
        if functions[-1] in WAITING:
            waiting += count
            continue
        threads[thread] += count
        by_self[functions[-1]] += count
        packages[_package(functions[-1])] += count
        for function in set(functions):
            if "(mirror/" in function:
                by_total[(thread, function)] += count
    samples = sum(threads.values())
    if samples == 0:
        return Summary(0, waiting, [], [], [], [])
    informative: Counter[str] = Counter()
    for (thread, function), count in by_total.items():
        if count < threads[thread]:
            informative[function] += count

    def shares(counter: Counter[str], n: int) -> list[tuple[str, float]]:
        return [(name, count / samples) for name, count in counter.most_common(n)]

    return Summary(
        samples,
        waiting,
        shares(threads, 5),
        shares(by_self, top),
        shares(informative, top),
        shares(packages, 8),
    )


def markdown(title: str, summary: Summary) -> str:
    """A short Markdown account of one profile."""
    lines = [
        f"#### {title}",
        "",
        f"{summary.samples} samples at work (100 Hz; idle time and {summary.waiting} samples"
        " of waiting left out).",
    ]
    if summary.threads:
        parts = ", ".join(f"{name} {share:.0%}" for name, share in summary.threads)
        lines += ["", f"Threads: {parts}."]
    if summary.packages:
        parts = ", ".join(f"{name} {share:.0%}" for name, share in summary.packages)
        lines += ["", f"Self time by package: {parts}."]
    lines += ["", "| self | function | | total | function |", "| ---: | --- | --- | ---: | --- |"]
    for (s_name, s_share), (t_name, t_share) in zip(
        summary.by_self, summary.by_total, strict=False
    ):
        lines.append(f"| {s_share:.1%} | `{s_name}` | | {t_share:.1%} | `{t_name}` |")
    return "\n".join(lines)

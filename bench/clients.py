"""The load generators, all C programs so the client is not what is measured: concurrent
`curl` processes for blob downloads, ApacheBench (`ab -i -k`) for manifest HEADs,
and skopeo for image pulls (through the e2e helper). Each call checks every answer
and raises BenchError when one is wrong, so a broken run never becomes a number.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.skopeo import Skopeo
from tests.e2e.support import child_env


class BenchError(Exception):
    """A workload did not do what it is meant to measure (an error answer, a short body)."""


@dataclass(frozen=True, slots=True)
class Transfer:
    """One curl download: HTTP status, bytes received, time to first byte and in total (s)."""

    status: int
    size: int
    ttfb: float
    total: float


_CURL_FORMAT = "%{http_code} %{size_download} %{time_starttransfer} %{time_total}"


def curl_group(curl: str, url: str, count: int, expected_size: int) -> tuple[list[Transfer], float]:
    """Start `count` curl processes downloading `url` to /dev/null at once.

    Returns each transfer and the wall time from the first start to the last end.
    Raises BenchError unless every transfer is a 200 with `expected_size` bytes.
    Every curl still running when this returns or raises is killed by its pid.
    """
    argv = [curl, "--silent", "--show-error", "--noproxy", "*", "--output", "/dev/null"]
    argv += ["--write-out", _CURL_FORMAT, url]
    processes: list[subprocess.Popen[bytes]] = []
    started = time.monotonic()
    try:
        for _ in range(count):
            processes.append(
                subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
                )
            )
        outputs = [process.communicate(timeout=600) for process in processes]
        wall = time.monotonic() - started
    finally:
        for process in processes:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
    transfers = []
    for (out, err), process in zip(outputs, processes, strict=True):
        fields = out.decode().split()
        if process.returncode != 0 or len(fields) != 4:
            raise BenchError(f"curl {url} failed ({process.returncode}): {err.decode()[-500:]}")
        transfer = Transfer(int(fields[0]), int(fields[1]), float(fields[2]), float(fields[3]))
        if transfer.status != 200 or transfer.size != expected_size:
            raise BenchError(f"curl {url}: {transfer}, expected 200 and {expected_size} bytes")
        transfers.append(transfer)
    return transfers, wall


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What ab measured: completed requests, requests/s and latency percentiles (ms)."""

    requests: int
    per_second: float
    p50_ms: float
    p99_ms: float


def ab_head(
    ab: str,
    url: str,
    *,
    seconds: int,
    concurrency: int,
    headers: Mapping[str, str],
    scratch: Path,
) -> LoadResult:
    """HEAD `url` with `concurrency` keep-alive connections for `seconds` (`ab -i -k`).

    Raises BenchError when ab fails, completes nothing, or any answer is not a 2xx.
    """
    percentiles = scratch / "ab-percentiles.csv"
    argv = [ab, "-i", "-k", "-q", "-c", str(concurrency), "-t", str(seconds)]
    # -t implies -n 50000, which a fast server finishes early; -n after -t lifts it.
    argv += ["-n", "1000000", "-e", str(percentiles)]
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    run = subprocess.run(
        [*argv, url],
        capture_output=True,
        text=True,
        timeout=seconds + 120,
        stdin=subprocess.DEVNULL,
        env=child_env(),
    )
    out = run.stdout
    complete = re.search(r"^Complete requests:\s+(\d+)", out, re.M)
    rate = re.search(r"^Requests per second:\s+([\d.]+)", out, re.M)
    failed = re.search(r"^Failed requests:\s+(\d+)", out, re.M)
    non_2xx = re.search(r"^Non-2xx responses:\s+(\d+)", out, re.M)
    if run.returncode != 0 or complete is None or rate is None or int(complete[1]) == 0:
        raise BenchError(f"ab {url} failed ({run.returncode}):\n{out[-2000:]}{run.stderr[-2000:]}")
    if non_2xx is not None or (failed is not None and int(failed[1]) > 0):
        raise BenchError(f"ab {url}: answers were not all 2xx:\n{out[-2000:]}")
    table = dict(
        line.split(",", 1) for line in percentiles.read_text().splitlines()[1:] if "," in line
    )
    return LoadResult(int(complete[1]), float(rate[1]), float(table["50"]), float(table["99"]))


def timed_copy(skopeo: Skopeo, source: str, destination: Path) -> float:
    """`skopeo copy SOURCE dir:DESTINATION` (plain HTTP, anonymous); returns the seconds.

    Raises BenchError when skopeo fails.
    """
    started = time.monotonic()
    try:
        skopeo.copy(source, f"dir:{destination}")
    except AssertionError as error:
        raise BenchError(str(error)) from error
    return time.monotonic() - started

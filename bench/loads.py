"""The workloads of issue 6, each run against one started system, each returning its
numbers by row key (see `report.ROWS`): fan-out of a cold blob, warm throughput,
cold and warm pulls, and manifest HEAD by tag. Upstream traffic is read from the
upstream registry's access log; CPU and memory from /proc (`procstat`).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from bench.clients import BenchError, ab_head, curl_group, timed_copy
from bench.procstat import Meter
from bench.systems import IMAGE_REPOSITORY, TAG, Upstream
from tests.e2e.skopeo import Skopeo
from tests.e2e.support import http_request

GB = 1e9
MB = 1e6
MIB = 1 << 20


@dataclass(frozen=True, slots=True)
class Tools:
    """Absolute paths of the programs the workloads run."""

    curl: str
    ab: str
    skopeo: str


@dataclass(frozen=True, slots=True)
class Shape:
    """How hard each workload pushes (the sizes of the images are the upstream's)."""

    fanout_clients: int = 16
    warm_clients: int = 8
    head_connections: int = 32
    head_seconds: int = 10


@dataclass(frozen=True, slots=True)
class Target:
    """One system under test: its base URL and the pid whose process tree is measured."""

    url: str
    host: str
    pid: int


def fan_out(target: Target, upstream: Upstream, tools: Tools, shape: Shape) -> dict[str, float]:
    """`fanout_clients` curls at once GET the cold big blob. Upstream bytes are what the
    upstream's access log says it sent for that blob; its GETs are those answered 2xx
    (a 401 asking for a token is not a download)."""
    seeded = upstream.seeded
    mark = upstream.registry.mark()
    with Meter(target.pid) as meter:
        transfers, _ = curl_group(
            tools.curl, target.url + seeded.big_path, shape.fanout_clients, seeded.big_size
        )
    fetched = [
        r
        for r in upstream.registry.requests_since(mark)
        if r.method == "GET" and r.kind == "blob" and r.reference == seeded.big_digest
    ]
    ttfb = [t.ttfb for t in transfers]
    total = [t.total for t in transfers]
    served = sum(t.size for t in transfers)
    return {
        "fanout.upstream_bytes": sum(r.size or 0 for r in fetched) / seeded.big_size,
        "fanout.upstream_gets": float(sum(1 for r in fetched if 200 <= r.status < 300)),
        "fanout.ttfb_max": max(ttfb),
        "fanout.ttfb_median": statistics.median(ttfb),
        "fanout.total_max": max(total),
        "fanout.total_median": statistics.median(total),
        "fanout.rss": meter.usage.peak_rss / MIB,
        "fanout.cpu_per_gb": meter.usage.cpu_seconds / (served / GB),
    }


def _settle(target: Target, upstream: Upstream, timeout: float = 120) -> None:
    """Wait until `target` answers a HEAD of the big blob without asking the upstream:
    the reference proxy commits a filled blob (re-reading it to verify) after its
    client has every byte, and asks the upstream until then."""
    seeded = upstream.seeded
    deadline = time.monotonic() + timeout
    while True:
        mark = upstream.registry.mark()
        status = http_request("HEAD", target.url + seeded.big_path).status
        asked = [r for r in upstream.registry.requests_since(mark) if r.kind == "blob"]
        if status == 200 and not asked:
            return
        if time.monotonic() > deadline:
            raise BenchError(f"{target.url} still asks the upstream for the big blob: {asked}")
        time.sleep(0.2)  # the proxy is committing the blob


def warm_throughput(
    target: Target, upstream: Upstream, tools: Tools, shape: Shape
) -> dict[str, float]:
    """`warm_clients` curls at once each download the big blob, once the target holds it
    (one download first, then `_settle`); raises BenchError if the upstream was asked."""
    seeded = upstream.seeded
    url = target.url + seeded.big_path
    curl_group(tools.curl, url, 1, seeded.big_size)
    _settle(target, upstream)
    mark = upstream.registry.mark()
    with Meter(target.pid) as meter:
        transfers, wall = curl_group(tools.curl, url, shape.warm_clients, seeded.big_size)
    again = [r for r in upstream.registry.requests_since(mark) if r.kind == "blob"]
    if again:
        raise BenchError(f"warm throughput went upstream: {again[:3]}")
    served = sum(t.size for t in transfers)
    return {
        "warm.mb_per_s": served / wall / MB,
        "warm.rss": meter.usage.peak_rss / MIB,
        "warm.cpu_per_gb": meter.usage.cpu_seconds / (served / GB),
    }


def pulls(target: Target, tools: Tools, scratch: Path) -> dict[str, float]:
    """skopeo copies the multi-layer image to `dir:` twice: cold, then warm."""
    skopeo = Skopeo(tools.skopeo, scratch / "skopeo")
    source = f"docker://{target.host}/{IMAGE_REPOSITORY}:{TAG}"
    return {
        "pull.cold": timed_copy(skopeo, source, scratch / "cold-pull"),
        "pull.warm": timed_copy(skopeo, source, scratch / "warm-pull"),
    }


def head_by_tag(
    target: Target, upstream: Upstream, tools: Tools, shape: Shape, scratch: Path
) -> dict[str, float]:
    """ab HEADs the image's manifest by tag on a warm cache (the pulls just fetched it)."""
    seeded = upstream.seeded
    mark = upstream.registry.mark()
    result = ab_head(
        tools.ab,
        target.url + seeded.manifest_path,
        seconds=shape.head_seconds,
        concurrency=shape.head_connections,
        headers={"Accept": seeded.manifest_accept},
        scratch=scratch,
    )
    caused = upstream.registry.requests_since(mark)
    return {
        "head.per_second": result.per_second,
        "head.p50_ms": result.p50_ms,
        "head.p99_ms": result.p99_ms,
        "head.upstream_requests": float(len(caused)),
    }


def registry_round(
    target: Target, upstream: Upstream, tools: Tools, shape: Shape, scratch: Path
) -> dict[str, float]:
    """Every workload, in order, against a system that started on an empty cache."""
    numbers = fan_out(target, upstream, tools, shape)
    numbers |= warm_throughput(target, upstream, tools, shape)
    numbers |= pulls(target, tools, scratch)
    numbers |= head_by_tag(target, upstream, tools, shape, scratch)
    return numbers

"""Prometheus collectors on a per-app registry, named as in DESIGN.md.

No label takes a repository, tag, digest or client address. Callers receive a
`Metrics` through their constructor; nothing here knows who counts what.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    """Every collector the mirror exports, registered on one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        ProcessCollector(registry=self.registry)
        r = self.registry
        self.cache_requests = Counter(
            "mirror_cache_requests",
            "Manifest and blob requests by cache result.",
            ["kind", "result"],
            registry=r,
        )
        self.served_bytes = Counter(
            "mirror_served_bytes",
            "Body bytes sent to clients, by where they came from.",
            ["source"],
            registry=r,
        )
        self.upstream_requests = Counter(
            "mirror_upstream_requests",
            "Requests sent to upstream registries, by answer code.",
            ["upstream", "kind", "code"],
            registry=r,
        )
        self.upstream_duration = Histogram(
            "mirror_upstream_request_duration_seconds",
            "Time until an upstream registry answered with headers.",
            ["upstream", "kind"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_bytes = Counter(
            "mirror_upstream_bytes",
            "Body bytes received from upstream registries.",
            ["upstream"],
            registry=r,
        )
        self.downloads_in_flight = Gauge(
            "mirror_downloads_in_flight",
            "Upstream blob downloads under way.",
            registry=r,
        )
        self.download_joins = Counter(
            "mirror_download_joins",
            "Requests that shared a download another request started.",
            registry=r,
        )
        self.cache_size = Gauge(
            "mirror_cache_size_bytes",
            "Bytes the cache holds on disk.",
            registry=r,
        )
        self.cache_max = Gauge(
            "mirror_cache_max_bytes",
            "The storage quota in bytes.",
            registry=r,
        )
        self.cache_blobs = Gauge(
            "mirror_cache_blobs",
            "Blobs and manifests the cache holds.",
            registry=r,
        )
        self.evictions = Counter(
            "mirror_evictions",
            "Blobs evicted to stay under the quota.",
            registry=r,
        )
        self.evicted_bytes = Counter(
            "mirror_evicted_bytes",
            "Bytes evicted to stay under the quota.",
            registry=r,
        )
        self.digest_mismatches = Counter(
            "mirror_digest_mismatches",
            "Upstream bodies discarded because their digest was wrong.",
            registry=r,
        )
        self.request_duration = Histogram(
            "mirror_request_duration_seconds",
            "Time to answer a client request, by kind.",
            ["kind"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ratelimit_remaining = Gauge(
            "mirror_upstream_ratelimit_remaining",
            "Pulls left in the upstream's rate-limit window (ratelimit-remaining).",
            ["upstream"],
            registry=r,
        )
        self.ratelimit_limit = Gauge(
            "mirror_upstream_ratelimit_limit",
            "Pulls allowed in the upstream's rate-limit window (ratelimit-limit).",
            ["upstream"],
            registry=r,
        )

    def render(self) -> bytes:
        """The Prometheus text exposition of every collector."""
        return generate_latest(self.registry)

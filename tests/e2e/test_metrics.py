"""After real pulls through the mirror, /metrics tells the hit ratio and the bytes saved.

skopeo pulls one image twice through a mirror in front of the real reference
registry; the scrape must show exactly what those pulls did, computed from the
image as it was pushed.
"""

from __future__ import annotations

import re

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .images import SeededImages
from .support import http_request
from .through import Through

pytestmark = pytest.mark.e2e


def scrape(through: Through) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the mirror's /metrics, by name and sorted labels."""
    response = http_request("GET", f"{through.mirror.url}/metrics")
    assert response.status == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.body.decode())
        for sample in family.samples
    }


def test_scrape_after_two_pulls_shows_hits_and_bytes(
    through: Through, seeded_images: SeededImages
) -> None:
    image = seeded_images.docker
    through.pull(image, "cold")
    through.pull(image, "warm")
    samples = scrape(through)

    def requests(kind: str, result: str) -> float:
        labels = (("kind", kind), ("result", result))
        return samples.get(("mirror_cache_requests_total", labels), 0.0)

    def served(source: str) -> float:
        return samples[("mirror_served_bytes_total", (("source", source),))]

    blobs = len(image.blobs)
    blob_bytes = sum(blob.size for blob in image.blobs)
    assert requests("blob", "miss") == blobs
    assert requests("blob", "hit") == blobs
    manifest_hits, manifest_misses = requests("manifest", "hit"), requests("manifest", "miss")
    assert manifest_misses >= 1
    assert manifest_hits >= 1
    manifest = len(image.manifest)
    assert served("upstream") == blob_bytes + manifest * manifest_misses
    assert served("cache") == blob_bytes + manifest * manifest_hits
    # The dashboard's hit ratio agrees with the access log, counted independently.
    results = re.findall(r" cache=(hit|miss|stale) ", through.mirror.log_text())
    hits = requests("blob", "hit") + manifest_hits
    total = hits + requests("blob", "miss") + manifest_misses + requests("manifest", "stale")
    assert len(results) == total
    assert results.count("hit") / len(results) == pytest.approx(hits / total)
    assert samples[("mirror_upstream_bytes_total", (("upstream", "docker.io"),))] == (
        blob_bytes + manifest * manifest_misses
    )
    assert samples[("mirror_downloads_in_flight", ())] == 0
    assert samples[("mirror_cache_blobs", ())] == blobs + 1

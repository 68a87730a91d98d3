"""Pinned images: references whose manifests and blobs eviction never removes.

`parse_pin` turns `docker.io/library/alpine:3.20` or `ghcr.io/org/app@sha256:...`
into an upstream routing name, repository and tag or digest; `pinned_digests`
walks what the cache holds for each pin (index → manifests → config and layers).
Blocking (reads small manifests from disk): call it from a thread.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from mirror.config import DOCKER_HUB, UpstreamSettings
from mirror.errors import MirrorError
from mirror.oci import MAX_MANIFEST_BYTES, is_digest, validate_name, validate_reference
from mirror.refs import Refs
from mirror.storage import BlobStore

_DOCKER_HUB_HOSTS = frozenset({DOCKER_HUB, "registry-1.docker.io", "index.docker.io"})


@dataclass(frozen=True, slots=True)
class Pin:
    """An image reference resolved to an upstream routing name."""

    upstream: str
    repo: str
    reference: str  # tag or digest


def _upstream_for(host: str, upstreams: Mapping[str, UpstreamSettings]) -> str | None:
    if host in upstreams:
        return host
    for name, upstream in upstreams.items():
        url_host = urlsplit(upstream.url).netloc
        if url_host == host or (host in _DOCKER_HUB_HOSTS and url_host in _DOCKER_HUB_HOSTS):
            return name
    if host in _DOCKER_HUB_HOSTS and DOCKER_HUB in upstreams:
        return DOCKER_HUB
    return None


def parse_pin(text: str, upstreams: Mapping[str, UpstreamSettings]) -> Pin:
    """Parse `[host/]repository[:tag][@digest]` (a digest wins over a tag); raises
    ValueError saying what is wrong."""
    rest, at, digest = text.partition("@")
    first, slash, path = rest.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        host = first.lower()
    else:
        host, path = DOCKER_HUB, rest
    head, colon, tag = path.rpartition(":")
    if colon and "/" not in tag:
        path = head
    else:
        tag = "latest"
    reference = digest if at else tag
    upstream = _upstream_for(host, upstreams)
    if upstream is None:
        raise ValueError(f"{text!r}: no configured upstream serves registry {host!r}")
    if upstreams[upstream].library_prefix and "/" not in path:
        path = f"library/{path}"
    try:
        validate_name(path)
        validate_reference(reference)
    except MirrorError as error:
        raise ValueError(f"{text!r}: {error.message}") from error
    return Pin(upstream, path, reference)


def _references(body: bytes) -> tuple[list[str], list[str]]:
    """(child manifests, config and layers) a manifest or index refers to."""
    try:
        document = json.loads(body)
    except ValueError:
        return [], []
    if not isinstance(document, dict):
        return [], []
    config = document.get("config")
    leaves = [config] if isinstance(config, dict) else []
    leaves += list(document.get("layers") or [])
    children = list(document.get("manifests") or [])
    return _digests(children), _digests(leaves)


def _digests(descriptors: Sequence[object]) -> list[str]:
    return [d["digest"] for d in descriptors if isinstance(d, dict) and "digest" in d]


def pinned_digests(pins: Iterable[Pin], refs: Refs, store: BlobStore) -> set[str]:
    """Every digest the cache holds for the pinned images (manifests, configs, layers).

    Reads manifests only, never layers.
    """
    found: set[str] = set()
    for pin in pins:
        if is_digest(pin.reference):
            manifests = [pin.reference]
        else:
            record = refs.tag(pin.upstream, pin.repo, pin.reference)
            manifests = [record.digest] if record else []
        while manifests:
            digest = manifests.pop()
            if digest in found:
                continue
            found.add(digest)
            size = store.size(digest)
            if size is None or size > MAX_MANIFEST_BYTES:
                continue
            children, leaves = _references(store.read(digest))
            manifests.extend(children)
            found.update(leaves)
    return found

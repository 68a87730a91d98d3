"""Pinned images: parsing references, and walking what the cache holds for them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mirror.config import DOCKER_HUB_URL, UpstreamSettings
from mirror.pins import Pin, parse_pin, pinned_digests
from mirror.refs import Refs, TagRecord
from mirror.storage.disk import DiskBlobStore
from tests.storespy import MetadataOnly, put

HEX = "ab" * 32
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"

UPSTREAMS = {
    "docker.io": UpstreamSettings("docker.io", DOCKER_HUB_URL),
    "ghcr.io": UpstreamSettings("ghcr.io", "https://ghcr.io"),
    "local": UpstreamSettings("local", "http://127.0.0.1:5001"),
}


@pytest.mark.parametrize(
    ("text", "pin"),
    [
        ("docker.io/library/alpine:3.20", Pin("docker.io", "library/alpine", "3.20")),
        ("alpine", Pin("docker.io", "library/alpine", "latest")),
        ("alpine:3.20", Pin("docker.io", "library/alpine", "3.20")),
        ("docker.io/alpine", Pin("docker.io", "library/alpine", "latest")),
        ("bitnami/redis:7", Pin("docker.io", "bitnami/redis", "7")),
        ("registry-1.docker.io/library/alpine", Pin("docker.io", "library/alpine", "latest")),
        (f"ghcr.io/org/app@sha256:{HEX}", Pin("ghcr.io", "org/app", f"sha256:{HEX}")),
        ("ghcr.io/org/app", Pin("ghcr.io", "org/app", "latest")),
        ("ghcr.io/app", Pin("ghcr.io", "app", "latest")),  # no library/ outside Docker Hub
        ("127.0.0.1:5001/team/app:1", Pin("local", "team/app", "1")),
        (f"127.0.0.1:5001/team/app@sha256:{HEX}", Pin("local", "team/app", f"sha256:{HEX}")),
        ("local/team/app:1", Pin("docker.io", "local/team/app", "1")),  # not a host
    ],
)
def test_parse_pin(text: str, pin: Pin) -> None:
    assert parse_pin(text, UPSTREAMS) == pin


def test_a_hub_upstream_under_another_name_serves_hub_pins() -> None:
    upstreams = {"hub": UpstreamSettings("hub", DOCKER_HUB_URL)}
    assert parse_pin("alpine", upstreams) == Pin("hub", "library/alpine", "latest")
    assert parse_pin("docker.io/library/alpine:3", upstreams) == Pin("hub", "library/alpine", "3")
    with pytest.raises(ValueError, match=r"no configured upstream serves registry 'docker\.io'"):
        parse_pin("alpine", {"local": UPSTREAMS["local"]})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("quay.io/org/app:1", r"'quay.io/org/app:1': no configured upstream .* 'quay.io'"),
        ("127.0.0.1:5002/team/app", r"no configured upstream serves registry '127.0.0.1:5002'"),
        ("ghcr.io/Org/App:1", r"'ghcr.io/Org/App:1': invalid repository name 'Org/App'"),
        ("ghcr.io/org//app", r"invalid repository name 'org//app'"),
        ("alpine:-bad", r"'alpine:-bad': invalid tag '-bad'"),
        ("alpine:", r"invalid tag ''"),
        ("ghcr.io/org/app:" + "t" * 129, r"invalid tag 'tttt"),
        ("ghcr.io/org/app@sha256:abc", r"invalid digest 'sha256:abc'"),
    ],
)
def test_parse_pin_rejects_with_a_clear_message(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_pin(text, UPSTREAMS)


def test_parse_pin_accepts_a_tag_with_a_digest() -> None:
    assert parse_pin(f"alpine:3.20@sha256:{HEX}", UPSTREAMS) == Pin(
        "docker.io", "library/alpine", f"sha256:{HEX}"
    )


def descriptor(digest: str, media_type: str = "application/octet-stream") -> dict[str, object]:
    return {"mediaType": media_type, "digest": digest, "size": 1}


def manifest(config: str, *layers: str) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": descriptor(config),
            "layers": [descriptor(layer) for layer in layers],
        }
    ).encode()


class ManifestsOnly(MetadataOnly):
    """Also lets manifests be read, recording which; a read of a layer or config fails."""

    def __init__(self, store: DiskBlobStore, layers: set[str]) -> None:
        super().__init__(store)
        self._layers = layers
        self.read_digests: list[str] = []

    def read(self, digest: str) -> bytes:
        if digest in self._layers:
            raise AssertionError(f"read layer or config {digest}")
        self.read_digests.append(digest)
        return self._store.read(digest)


class Image:
    """A multi-platform image in a real store and refs: index -> 2 manifests -> blobs."""

    def __init__(self, root: Path) -> None:
        self.store = DiskBlobStore(root)
        self.refs = Refs(root)
        self.big_layer = put(self.store, os.urandom(1024 * 1024))  # not JSON, under 4 MiB
        shared_layer = put(self.store, b"shared layer, not JSON {")
        amd64_config = put(self.store, b'{"architecture": "amd64"}')
        arm64_config = put(self.store, b'{"architecture": "arm64"}')
        amd64 = put(self.store, manifest(amd64_config, shared_layer, self.big_layer))
        arm64 = put(self.store, manifest(arm64_config, shared_layer))
        never_pulled = "sha256:" + "cd" * 32  # a platform nobody pulled
        self.index = put(
            self.store,
            json.dumps(
                {
                    "schemaVersion": 2,
                    "mediaType": INDEX_TYPE,
                    "manifests": [
                        descriptor(amd64, MANIFEST_TYPE),
                        descriptor(arm64, MANIFEST_TYPE),
                        descriptor(never_pulled, MANIFEST_TYPE),
                    ],
                }
            ).encode(),
        )
        self.refs.set_tag("docker.io", "library/alpine", "3.20", TagRecord(self.index, INDEX_TYPE))
        self.manifests = {self.index, amd64, arm64}
        self.blobs = {amd64_config, arm64_config, shared_layer, self.big_layer}
        self.unrelated = put(self.store, manifest(amd64_config, put(self.store, b"other")))
        self.refs.set_tag("docker.io", "library/busybox", "1", TagRecord(self.unrelated, ""))


def test_pinned_digests_walk_index_manifests_configs_and_layers(tmp_path: Path) -> None:
    image = Image(tmp_path)
    store = ManifestsOnly(image.store, image.blobs)
    pins = [parse_pin("docker.io/library/alpine:3.20", UPSTREAMS)]

    pinned = pinned_digests(pins, image.refs, store)

    held = set(image.store.digests())
    assert pinned & held == image.manifests | image.blobs
    assert image.unrelated not in pinned
    assert sorted(store.read_digests) == sorted(image.manifests)  # each manifest once


def test_a_digest_pin_walks_from_its_manifest(tmp_path: Path) -> None:
    image = Image(tmp_path)
    store = ManifestsOnly(image.store, image.blobs)
    pins = [parse_pin(f"alpine@{image.index}", UPSTREAMS), parse_pin("alpine:3.20", UPSTREAMS)]
    pinned = pinned_digests(pins, image.refs, store)
    assert pinned & set(image.store.digests()) == image.manifests | image.blobs


def test_pins_not_cached_are_ignored(tmp_path: Path) -> None:
    image = Image(tmp_path)
    store = ManifestsOnly(image.store, image.blobs)
    pins = [
        parse_pin("alpine:3.19", UPSTREAMS),  # tag never pulled
        parse_pin("ghcr.io/org/app:1", UPSTREAMS),  # repository never pulled
        parse_pin(f"ghcr.io/org/app@sha256:{HEX}", UPSTREAMS),  # digest not held
    ]
    pinned = pinned_digests(pins, image.refs, store)
    assert pinned & set(image.store.digests()) == set()
    assert store.read_digests == []
    assert pinned_digests([], image.refs, store) == set()

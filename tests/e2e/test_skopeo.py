"""skopeo pulls through the mirror from the real reference registry behind token auth.

skopeo is only ever given the mirror's address, anonymously; the upstream's access log
and the token issuer's records show what the mirror itself fetched.
"""

from __future__ import annotations

import platform
from collections import Counter
from pathlib import Path

import pytest

from .images import Image, ImageIndex, RegistryClient, SeededImages
from .mirrorproc import MirrorProcess, StartMirror
from .registry import AccessRecord, Registry, blob_fetches
from .skopeo import (
    Skopeo,
    assert_dir_image,
    assert_dir_index,
    assert_oci_layout_image,
    docker_ref,
)
from .tokenissuer import MIRROR_USER, Access, TokenIssuer

pytestmark = pytest.mark.e2e


def ref(mirror: MirrorProcess, item: Image | ImageIndex, reference: str | None = None) -> str:
    """The item's reference on the mirror: its tag unless `reference` is given."""
    return docker_ref(mirror.host, item.repository, reference or item.tag or item.digest)


def pull(
    skopeo: Skopeo,
    mirror: MirrorProcess,
    item: Image | ImageIndex,
    dest: Path,
    reference: str | None = None,
) -> None:
    """Copy `item` (every platform of an index) through the mirror into `dir:dest`, then
    check the copy byte for byte against what was pushed."""
    if isinstance(item, ImageIndex):
        skopeo.copy(ref(mirror, item, reference), f"dir:{dest}", all_images=True)
        assert_dir_index(dest, item)
    else:
        skopeo.copy(ref(mirror, item, reference), f"dir:{dest}")
        assert_dir_image(dest, item)


def assert_fetched_once(records: list[AccessRecord], image: Image) -> None:
    """A cold pull downloaded each of the image's blobs from the upstream exactly once."""
    fetched = Counter(r.reference for r in blob_fetches(records) if r.status == 200)
    wanted = {blob.digest: 1 for blob in image.blobs}
    assert {d: fetched[d] for d in wanted} == wanted, f"upstream blob GETs: {dict(fetched)}"
    repositories = {r.repository for r in blob_fetches(records)}
    assert repositories == {image.repository}, f"blobs fetched from {repositories}"


def host_architecture() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        machine, machine
    )


# by tag, by digest, manifest types -------------------------------------------------


def test_pull_by_tag_delivers_pushed_manifest_and_layers(
    mirror: MirrorProcess,
    skopeo: Skopeo,
    upstream: Registry,
    seeded_images: SeededImages,
    tmp_path: Path,
) -> None:
    image = seeded_images.docker
    mark = upstream.mark()
    skopeo.copy(ref(mirror, image), f"dir:{tmp_path / 'out'}")
    assert_dir_image(tmp_path / "out", image)
    assert len(image.layers) == 3
    assert_fetched_once(upstream.requests_since(mark), image)


@pytest.mark.parametrize("which", ["docker", "oci", "namespaced"])
def test_pull_by_digest(
    which: str,
    mirror: MirrorProcess,
    skopeo: Skopeo,
    seeded_images: SeededImages,
    tmp_path: Path,
) -> None:
    image: Image = getattr(seeded_images, which)
    skopeo.copy(ref(mirror, image, image.digest), f"dir:{tmp_path / 'out'}")
    assert_dir_image(tmp_path / "out", image)


def test_oci_image_into_oci_layout(
    mirror: MirrorProcess, skopeo: Skopeo, seeded_images: SeededImages, tmp_path: Path
) -> None:
    image = seeded_images.oci
    skopeo.copy(ref(mirror, image), f"oci:{tmp_path / 'layout'}:e2e")
    assert_oci_layout_image(tmp_path / "layout", image)


def test_namespaced_image_keeps_its_namespace(
    mirror: MirrorProcess,
    skopeo: Skopeo,
    upstream: Registry,
    seeded_images: SeededImages,
    tmp_path: Path,
) -> None:
    image = seeded_images.namespaced
    mark = upstream.mark()
    skopeo.copy(ref(mirror, image), f"dir:{tmp_path / 'out'}")
    assert_dir_image(tmp_path / "out", image)
    assert_fetched_once(upstream.requests_since(mark), image)


def test_one_segment_name_gets_library_prefix(
    mirror: MirrorProcess,
    skopeo: Skopeo,
    upstream: Registry,
    seeded_images: SeededImages,
    tmp_path: Path,
) -> None:
    image = seeded_images.docker
    assert image.repository == f"library/{image.short_name}"
    mark = upstream.mark()
    source = docker_ref(mirror.host, image.short_name, "1")
    skopeo.copy(source, f"dir:{tmp_path / 'out'}")
    assert_dir_image(tmp_path / "out", image)
    assert_fetched_once(upstream.requests_since(mark), image)


@pytest.mark.parametrize(
    "which", ["docker", "oci", "oci_index", "docker_list", "namespaced", "private"]
)
def test_inspect_raw_returns_the_pushed_bytes(
    which: str, mirror: MirrorProcess, skopeo: Skopeo, seeded_images: SeededImages
) -> None:
    item: Image | ImageIndex = getattr(seeded_images, which)
    assert skopeo.inspect_raw(ref(mirror, item)) == item.manifest
    assert skopeo.inspect_raw(ref(mirror, item, item.digest)) == item.manifest


# multi-arch ------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["oci_index", "docker_list"])
def test_multi_arch_all_platforms(
    which: str,
    mirror: MirrorProcess,
    skopeo: Skopeo,
    upstream: Registry,
    seeded_images: SeededImages,
    tmp_path: Path,
) -> None:
    index: ImageIndex = getattr(seeded_images, which)
    mark = upstream.mark()
    skopeo.copy(ref(mirror, index), f"dir:{tmp_path / 'out'}", all_images=True)
    assert_dir_index(tmp_path / "out", index)
    records = upstream.requests_since(mark)
    for image in index.images:
        assert_fetched_once(records, image)


@pytest.mark.parametrize("arch", ["host", "arm64"])
@pytest.mark.parametrize("which", ["oci_index", "docker_list"])
def test_multi_arch_one_platform(
    which: str,
    arch: str,
    mirror: MirrorProcess,
    skopeo: Skopeo,
    seeded_images: SeededImages,
    tmp_path: Path,
) -> None:
    index: ImageIndex = getattr(seeded_images, which)
    wanted = host_architecture() if arch == "host" else arch
    if wanted not in {i.platform.architecture for i in index.images}:
        pytest.skip(f"the test index has no {wanted} image")
    override = None if arch == "host" else arch
    skopeo.copy(ref(mirror, index), f"dir:{tmp_path / 'out'}", arch=override)
    assert_dir_image(tmp_path / "out", index.for_platform(wanted))


@pytest.mark.parametrize("which", ["oci_index", "docker_list"])
def test_multi_arch_by_digest(
    which: str, mirror: MirrorProcess, skopeo: Skopeo, seeded_images: SeededImages, tmp_path: Path
) -> None:
    index: ImageIndex = getattr(seeded_images, which)
    skopeo.copy(ref(mirror, index, index.digest), f"dir:{tmp_path / 'out'}", all_images=True)
    assert_dir_index(tmp_path / "out", index)


# the cache -------------------------------------------------------------------------


def test_second_pull_sends_no_blob_request_upstream(
    mirror: MirrorProcess,
    skopeo: Skopeo,
    upstream: Registry,
    seeded_images: SeededImages,
    tmp_path: Path,
) -> None:
    image = seeded_images.docker
    cold = upstream.mark()
    skopeo.copy(ref(mirror, image), f"dir:{tmp_path / 'first'}")
    assert_fetched_once(upstream.requests_since(cold), image)
    mark = upstream.mark()
    skopeo.copy(ref(mirror, image), f"dir:{tmp_path / 'second'}")
    skopeo.copy(ref(mirror, image, image.digest), f"dir:{tmp_path / 'third'}")
    assert_dir_image(tmp_path / "second", image)
    assert_dir_image(tmp_path / "third", image)
    blob_requests = [r for r in upstream.requests_since(mark) if r.kind == "blob"]
    assert blob_requests == []


def test_second_pull_within_tag_ttl_sends_nothing_upstream(
    mirror: MirrorProcess,
    skopeo: Skopeo,
    upstream: Registry,
    seeded_images: SeededImages,
    tmp_path: Path,
) -> None:
    image = seeded_images.docker_list
    cold = upstream.mark()
    skopeo.copy(ref(mirror, image), f"dir:{tmp_path / 'first'}", all_images=True)
    assert any(r.kind == "manifest" for r in upstream.requests_since(cold)), "first pull unseen"
    mark = upstream.mark()
    skopeo.copy(ref(mirror, image), f"dir:{tmp_path / 'second'}", all_images=True)
    assert_dir_index(tmp_path / "second", image)
    assert [(r.method, r.path) for r in upstream.requests_since(mark)] == []


@pytest.mark.parametrize("which", ["docker", "oci_index"])
def test_pull_after_upstream_stopped_is_served_from_cache(
    which: str,
    mirror: MirrorProcess,
    skopeo: Skopeo,
    upstream: Registry,
    seeded_images: SeededImages,
    tmp_path: Path,
) -> None:
    item: Image | ImageIndex = getattr(seeded_images, which)
    pull(skopeo, mirror, item, tmp_path / "warm")
    with upstream.stopped():
        assert not upstream.running
        pull(skopeo, mirror, item, tmp_path / "by-tag")
        pull(skopeo, mirror, item, tmp_path / "by-digest", item.digest)


def test_stale_tag_served_when_upstream_is_down(
    start_mirror: StartMirror,
    skopeo: Skopeo,
    upstream: Registry,
    seeded_images: SeededImages,
    tmp_path: Path,
) -> None:
    # tag_ttl 0: every tag request revalidates, so only serve_stale can answer it.
    mirror = start_mirror(extra={"manifests": {"tag_ttl": "0s", "serve_stale": True}})
    image = seeded_images.docker
    skopeo.copy(ref(mirror, image), f"dir:{tmp_path / 'warm'}")
    mark = upstream.mark()
    skopeo.copy(ref(mirror, image), f"dir:{tmp_path / 'revalidated'}")
    revalidations = [r for r in upstream.requests_since(mark) if r.kind == "manifest"]
    assert revalidations, "with tag_ttl 0 the second pull should ask upstream about the tag"
    with upstream.stopped():
        skopeo.copy(ref(mirror, image), f"dir:{tmp_path / 'stale'}")
    assert_dir_image(tmp_path / "stale", image)


# upstream credentials --------------------------------------------------------------


def test_private_repository_pulls_with_mirror_credentials(
    mirror: MirrorProcess,
    skopeo: Skopeo,
    upstream: Registry,
    token_issuer: TokenIssuer,
    seeded_images: SeededImages,
    tmp_path: Path,
) -> None:
    image = seeded_images.private
    anonymous = RegistryClient(upstream.url).get_manifest(image.repository, image.tag or "")
    assert anonymous.status == 401, "the private repository must refuse anonymous pulls"
    since = len(token_issuer.requests)
    skopeo.copy(ref(mirror, image), f"dir:{tmp_path / 'out'}")
    assert_dir_image(tmp_path / "out", image)
    pull = Access("repository", image.repository, ("pull",))
    tokens = token_issuer.requests[since:]
    assert any(
        t.username == MIRROR_USER.username and t.authenticated and pull in t.granted for t in tokens
    ), f"token requests: {tokens}"


def test_private_repository_refused_without_mirror_credentials(
    start_mirror: StartMirror,
    skopeo: Skopeo,
    upstream: Registry,
    seeded_images: SeededImages,
    tmp_path: Path,
) -> None:
    mirror = start_mirror(credentials=False)
    image = seeded_images.private
    mark = upstream.mark()
    result = skopeo.copy(ref(mirror, image), f"dir:{tmp_path / 'out'}", check=False)
    assert result.returncode != 0
    assert [r for r in upstream.requests_since(mark) if r.status == 200 and r.kind == "blob"] == []


def test_anonymous_mirror_pulls_public_image_with_anonymous_token(
    start_mirror: StartMirror,
    skopeo: Skopeo,
    token_issuer: TokenIssuer,
    seeded_images: SeededImages,
    tmp_path: Path,
) -> None:
    mirror = start_mirror(credentials=False)
    image = seeded_images.oci
    since = len(token_issuer.requests)
    skopeo.copy(ref(mirror, image), f"dir:{tmp_path / 'out'}")
    assert_dir_image(tmp_path / "out", image)
    tokens = token_issuer.requests[since:]
    assert tokens, "the mirror never asked the token issuer"
    assert all(t.username is None for t in tokens), f"token requests: {tokens}"

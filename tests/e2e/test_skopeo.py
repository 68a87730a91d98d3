"""skopeo pulls through the mirror from the real reference registry behind token auth.

skopeo is only ever given the mirror's address, anonymously; the upstream's access log
and the token issuer's records show what the mirror itself fetched.
"""

from __future__ import annotations

import platform
from contextlib import AbstractContextManager

import pytest

from .images import Image, ImageIndex, RegistryClient, SeededImages
from .skopeo import assert_dir_image, assert_oci_layout_image
from .through import StartThrough, Through, appended
from .tokenissuer import MIRROR_USER, Access, TokenIssuer, TokenRequest

pytestmark = pytest.mark.e2e


def tokens_requested(issuer: TokenIssuer) -> AbstractContextManager[list[TokenRequest]]:
    """The token requests `issuer` answered during a `with` body, filled in at its end."""
    return appended(lambda: issuer.requests)


def host_architecture() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        machine, machine
    )


# by tag, by digest, manifest types -------------------------------------------------


def test_pull_by_tag_delivers_pushed_manifest_and_layers(
    through: Through, seeded_images: SeededImages
) -> None:
    image = seeded_images.docker
    through.cold_pull(image)
    assert len(image.layers) == 3


@pytest.mark.parametrize("which", ["docker", "oci", "namespaced"])
def test_pull_by_digest(which: str, through: Through, seeded_images: SeededImages) -> None:
    image: Image = getattr(seeded_images, which)
    through.pull(image, reference=image.digest)


def test_oci_image_into_oci_layout(through: Through, seeded_images: SeededImages) -> None:
    image = seeded_images.oci
    layout = through.dest("layout")
    through.skopeo.copy(through.ref(image), f"oci:{layout}:e2e")
    assert_oci_layout_image(layout, image)


def test_namespaced_image_keeps_its_namespace(
    through: Through, seeded_images: SeededImages
) -> None:
    through.cold_pull(seeded_images.namespaced)


def test_one_segment_name_gets_library_prefix(
    through: Through, seeded_images: SeededImages
) -> None:
    image = seeded_images.docker
    assert image.repository == f"library/{image.short_name}"
    through.cold_pull(image, repository=image.short_name)


@pytest.mark.parametrize(
    "which", ["docker", "oci", "oci_index", "docker_list", "namespaced", "private"]
)
def test_inspect_raw_returns_the_pushed_bytes(
    which: str, through: Through, seeded_images: SeededImages
) -> None:
    item: Image | ImageIndex = getattr(seeded_images, which)
    assert through.skopeo.inspect_raw(through.ref(item)) == item.manifest
    assert through.skopeo.inspect_raw(through.ref(item, item.digest)) == item.manifest


# multi-arch ------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["oci_index", "docker_list"])
def test_multi_arch_all_platforms(
    which: str, through: Through, seeded_images: SeededImages
) -> None:
    through.cold_pull(getattr(seeded_images, which))


@pytest.mark.parametrize("arch", ["host", "arm64"])
@pytest.mark.parametrize("which", ["oci_index", "docker_list"])
def test_multi_arch_one_platform(
    which: str, arch: str, through: Through, seeded_images: SeededImages
) -> None:
    index: ImageIndex = getattr(seeded_images, which)
    wanted = host_architecture() if arch == "host" else arch
    if wanted not in {i.platform.architecture for i in index.images}:
        pytest.skip(f"the test index has no {wanted} image")
    override = None if arch == "host" else arch
    dest = through.dest("out")
    through.skopeo.copy(through.ref(index), f"dir:{dest}", arch=override)
    assert_dir_image(dest, index.for_platform(wanted))


@pytest.mark.parametrize("which", ["oci_index", "docker_list"])
def test_multi_arch_by_digest(which: str, through: Through, seeded_images: SeededImages) -> None:
    index: ImageIndex = getattr(seeded_images, which)
    through.pull(index, reference=index.digest)


# the cache -------------------------------------------------------------------------


def test_second_pull_sends_no_blob_request_upstream(
    through: Through, seeded_images: SeededImages
) -> None:
    image = seeded_images.docker
    through.cold_pull(image, "first")
    with through.upstream_requests() as requests:
        through.pull(image, "second")
        through.pull(image, "third", image.digest)
    assert [r for r in requests if r.kind == "blob"] == []


def test_second_pull_within_tag_ttl_sends_nothing_upstream(
    through: Through, seeded_images: SeededImages
) -> None:
    index = seeded_images.docker_list
    with through.upstream_requests() as cold:
        through.pull(index, "first")
    assert any(r.kind == "manifest" for r in cold), "first pull unseen"
    with through.upstream_requests() as warm:
        through.pull(index, "second")
    assert [(r.method, r.path) for r in warm] == []


@pytest.mark.parametrize("which", ["docker", "oci_index"])
def test_pull_after_upstream_stopped_is_served_from_cache(
    which: str, through: Through, seeded_images: SeededImages
) -> None:
    item: Image | ImageIndex = getattr(seeded_images, which)
    through.pull(item, "warm")
    with through.upstream.stopped():
        assert not through.upstream.running
        through.pull(item, "by-tag")
        through.pull(item, "by-digest", item.digest)


def test_stale_tag_served_when_upstream_is_down(
    start_through: StartThrough, seeded_images: SeededImages
) -> None:
    # tag_ttl 0: every tag request revalidates, so only serve_stale can answer it.
    through = start_through(extra={"manifests": {"tag_ttl": "0s", "serve_stale": True}})
    image = seeded_images.docker
    through.pull(image, "warm")
    with through.upstream_requests() as requests:
        through.pull(image, "revalidated")
    revalidations = [r for r in requests if r.kind == "manifest"]
    assert revalidations, "with tag_ttl 0 the second pull should ask upstream about the tag"
    with through.upstream.stopped():
        through.pull(image, "stale")


# upstream credentials --------------------------------------------------------------


def test_private_repository_pulls_with_mirror_credentials(
    through: Through, token_issuer: TokenIssuer, seeded_images: SeededImages
) -> None:
    image = seeded_images.private
    anonymous = RegistryClient(through.upstream.url).get_manifest(image.repository, image.tag or "")
    assert anonymous.status == 401, "the private repository must refuse anonymous pulls"
    with tokens_requested(token_issuer) as tokens:
        through.pull(image)
    pull = Access("repository", image.repository, ("pull",))
    assert any(
        t.username == MIRROR_USER.username and t.authenticated and pull in t.granted for t in tokens
    ), f"token requests: {tokens}"


def test_private_repository_refused_without_mirror_credentials(
    start_through: StartThrough, seeded_images: SeededImages
) -> None:
    through = start_through(credentials=False)
    source = through.ref(seeded_images.private)
    with through.upstream_requests() as requests:
        result = through.skopeo.copy(source, f"dir:{through.dest('out')}", check=False)
    assert result.returncode != 0
    assert [r for r in requests if r.status == 200 and r.kind == "blob"] == []


def test_anonymous_mirror_pulls_public_image_with_anonymous_token(
    start_through: StartThrough, token_issuer: TokenIssuer, seeded_images: SeededImages
) -> None:
    through = start_through(credentials=False)
    with tokens_requested(token_issuer) as tokens:
        through.pull(seeded_images.oci)
    assert tokens, "the mirror never asked the token issuer"
    assert all(t.username is None for t in tokens), f"token requests: {tokens}"

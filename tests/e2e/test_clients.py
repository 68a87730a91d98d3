"""Every real client pulls through the mirror: the Docker daemon, containerd (`ctr`),
podman, and skopeo given a registries.conf.

Each client gets the README's configuration for its kind (`clients.py`) with every route
around the mirror at a closed loopback port, so a pass can only come from the mirror.
Each pull is checked three ways: what the client holds (image, config and layer digests),
the mirror's access log (the client's requests reached it) and the upstream's access log
(what the mirror fetched). `MIRROR_E2E_CLIENTS_DOC=docs/clients.md` writes the request
sequences recorded here to that file.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .clients import (
    PodmanClient,
    PullClient,
    SkopeoClient,
    closed_port,
    daemon_json,
    hosts_toml,
    qualified,
    registries_conf,
)
from .clientsdoc import COLD, DOC_ENV, HELD, SequenceBook
from .conftest import attach_log
from .daemons import Containerd, DockerDaemon
from .images import Image, ImageIndex, RegistryClient, SeededImages, build_image
from .mirrorlog import MirrorLog
from .mirrorproc import MirrorProcess, StartMirror, UpstreamConfig
from .pulls import Rig, assert_no_blob_upstream, assert_served, command
from .registry import Registry, blob_fetches
from .skopeo import Skopeo
from .support import require_binary
from .through import assert_fetched_once
from .tokenissuer import MIRROR_USER, SEEDER, TokenIssuer

pytestmark = pytest.mark.e2e

CLIENTS = ("docker", "containerd", "podman", "skopeo")
SECOND = "ghcr.io"  # the second upstream's routing name, as in the README's examples
README = Path(__file__).resolve().parents[2] / "README.md"
README_MIRROR = "mirror.local:5000"  # where the README's examples say the mirror is

Connect = Callable[[str, MirrorProcess], PullClient]


def _version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return out.strip().splitlines()[0] if out.strip() else "?"


# fixtures ------------------------------------------------------------------------------

_DOC_HEADER = """\
# What each client sends the mirror

Generated from a real run of `tests/e2e/test_clients.py`
(`MIRROR_E2E_CLIENTS_DOC=docs/clients.md python -m pytest tests/e2e/test_clients.py`):
each client configured as in the README, every other route pointed at a closed port,
the reference registry behind token auth as the upstream. Each table is the mirror's
access log for one pull (method, path, status, `cache=`). Clients fetch blobs
concurrently, so their order changes from run to run. Digests are shortened; the last
column says what they are.
"""


@pytest.fixture(scope="module")
def book(seeded_images: SeededImages, second_image: Image) -> Iterator[SequenceBook]:
    """Request sequences recorded by the tests; written to `$MIRROR_E2E_CLIENTS_DOC`."""
    sequences = SequenceBook(clients={kind: kind for kind in CLIENTS})
    sequences.name_digests(*seeded_images.all(), second_image)
    yield sequences
    target = os.environ.get(DOC_ENV)
    if target and sequences.scenarios:
        sequences.write(Path(target), _DOC_HEADER)


@pytest.fixture(params=CLIENTS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def connect(
    request: pytest.FixtureRequest, tmp_path: Path, book: SequenceBook
) -> Iterator[Connect]:
    """`connect(kind, mirror)`: a client of that kind configured to pull through `mirror`,
    with Docker Hub (`docker.io`) and `ghcr.io` routed to it; the registries themselves
    are at a closed port. Daemons are stopped by pid and their folders removed at teardown,
    whatever the test's outcome."""
    opened: list[DockerDaemon | Containerd | PodmanClient] = []

    def connect(kind: str, mirror: MirrorProcess) -> PullClient:
        folder = tmp_path / f"{kind}-{len(opened)}"
        folder.mkdir()
        closed = f"127.0.0.1:{closed_port()}"
        if kind == "docker":
            dockerd, docker = require_binary("dockerd"), require_binary("docker")
            book.clients[kind] = f"Docker daemon ({_version([dockerd, '--version'])})"
            daemon = DockerDaemon(
                dockerd, docker, mirror=mirror.host, fallback=closed, logdir=folder
            )
            opened.append(daemon)
            attach_log(request, "dockerd log", daemon.log_text)
            daemon.start()
            return daemon
        if kind == "containerd":
            containerd, ctr = require_binary("containerd"), require_binary("ctr")
            book.clients[kind] = f"containerd with ctr ({_version([containerd, '--version'])})"
            runtime = Containerd(containerd, ctr, fallback=closed, logdir=folder)
            opened.append(runtime)
            attach_log(request, "containerd log", runtime.log_text)
            for registry in ("docker.io", SECOND):
                runtime.add_registry(registry, mirror.host)
            runtime.start()
            return runtime
        registries = registries_conf(
            [("docker.io", closed, mirror.host), (SECOND, closed, f"{mirror.host}/{SECOND}")]
        )
        if kind == "podman":
            binary = require_binary("podman")
            book.clients[kind] = f"podman ({_version([binary, '--version'])})"
            podman = PodmanClient(binary, registries, fallback=closed)
            opened.append(podman)
            return podman
        assert kind == "skopeo", kind
        binary = require_binary("skopeo")
        book.clients[kind] = f"skopeo with --registries-conf ({_version([binary, '--version'])})"
        skopeo = Skopeo(binary, folder / "skopeo")
        return SkopeoClient(skopeo, registries, folder / "copies", fallback=closed)

    yield connect
    errors = []
    for item in reversed(opened):
        try:
            item.close()
        except Exception as exc:  # keep closing the others; report them all
            errors.append(f"{type(item).__name__}: {exc!r}")
    assert not errors, f"clean-up failed: {errors}"


@pytest.fixture
def rig(kind: str, mirror: MirrorProcess, connect: Connect, upstream: Registry) -> Rig:
    """A client of `kind` pulling through a fresh mirror (with upstream credentials)."""
    return Rig(kind, connect(kind, mirror), mirror, MirrorLog(mirror), upstream)


# pulls -----------------------------------------------------------------------------


def test_nothing_but_the_mirror_answers(rig: Rig, seeded_images: SeededImages) -> None:
    """With the mirror stopped the same pull fails, and fast: every route around it is
    closed, so every pass in this module came from the mirror."""
    rig.mirror.stop()
    started = time.monotonic()
    with pytest.raises(AssertionError) as failure:
        rig.client.pull(qualified(seeded_images.docker))
    refused = f"dial tcp {rig.client.fallback}: connect: connection refused"
    assert refused in str(failure.value), "the client's fallback route was not the one tried"
    assert time.monotonic() - started < 30, f"took {time.monotonic() - started:.0f}s: {failure}"


def test_repull(rig: Rig, book: SequenceBook, seeded_images: SeededImages) -> None:
    """A cold pull fetches each blob upstream once; a re-pull, with the image still held
    and after removing it locally, sends no blob request upstream."""
    image = seeded_images.docker
    ref = qualified(image)
    cold = rig.pull(ref, image)
    assert_fetched_once(cold.upstream, image)
    assert_served(cold.mirror, image, cache="miss")
    book.record(rig.kind, COLD, "Pull by tag, nothing cached", command(rig.kind, ref), cold.mirror)

    held = rig.pull(ref, image)
    assert_no_blob_upstream(held.upstream)
    title = "Re-pull, the image still held"
    book.record(rig.kind, HELD, title, command(rig.kind, ref), held.mirror)
    if rig.kind == "docker":
        seen = [(r.method, r.kind, r.status) for r in held.mirror]
        assert seen == [("GET", "base", 200), ("HEAD", "manifest", 200)], held.mirror

    rig.client.forget_all()
    again = rig.pull(ref, image)
    assert_no_blob_upstream(again.upstream)
    assert_served(again.mirror, image, cache="hit")
    if rig.kind != "skopeo":  # it keeps nothing between copies: the same as HELD
        title = "Pull again after removing the image locally"
        book.record(rig.kind, "again", title, command(rig.kind, ref), again.mirror)


@pytest.mark.parametrize("which", ["namespaced", "private"])
def test_pull_by_tag(which: str, rig: Rig, seeded_images: SeededImages) -> None:
    """`team/app` keeps its namespace; `corp/secret` needs the mirror's credentials."""
    image: Image = getattr(seeded_images, which)
    pull = rig.pull(qualified(image), image)
    assert_fetched_once(pull.upstream, image)
    assert_served(pull.mirror, image, cache="miss")


@pytest.mark.parametrize("which", ["oci", "docker_list"])
def test_pull_by_digest(which: str, rig: Rig, seeded_images: SeededImages) -> None:
    item: Image | ImageIndex = getattr(seeded_images, which)
    pull = rig.pull(qualified(item, item.digest), item)
    assert_fetched_once(pull.upstream, pull.image)
    assert_served(pull.mirror, pull.image, cache="miss")


@pytest.mark.parametrize(
    ("which", "arch"), [("oci_index", None), ("docker_list", None), ("oci_index", "arm64")]
)
def test_multi_arch(
    which: str, arch: str | None, rig: Rig, book: SequenceBook, seeded_images: SeededImages
) -> None:
    """The client picks its platform (or the one asked for) from the index the mirror
    serves; only that platform's blobs are fetched, once."""
    index: ImageIndex = getattr(seeded_images, which)
    ref = qualified(index)
    pull = rig.pull(ref, index, arch=arch)
    assert_fetched_once(pull.upstream, pull.image)
    others = {b.digest for i in index.images if i is not pull.image for b in i.blobs}
    assert {r.reference for r in blob_fetches(pull.upstream)} & others == set()
    if which == "oci_index" and arch is None:
        book.record(
            rig.kind,
            "multi-arch",
            "Multi-arch image (OCI index), nothing cached",
            command(rig.kind, ref),
            pull.mirror,
        )


def test_pull_after_upstream_stopped(
    rig: Rig, book: SequenceBook, seeded_images: SeededImages
) -> None:
    """With the upstream stopped, a client that no longer holds the image gets it from the
    mirror's cache, by tag and by digest."""
    image = seeded_images.oci
    ref, by_digest = qualified(image), qualified(image, image.digest)
    rig.pull(ref, image)
    rig.client.forget_all()
    with rig.upstream.stopped():
        assert not rig.upstream.running
        pull = rig.pull(ref, image)
        assert_served(pull.mirror, image, cache="hit")
        assert all(r.status == 200 for r in pull.mirror if not r.tls_probe), pull.mirror
        rig.client.forget_all()
        pull = rig.pull(by_digest, image)
        assert_served(pull.mirror, image, cache="hit")


# a second upstream -----------------------------------------------------------------


@pytest.fixture(scope="module")
def second_image() -> Image:
    return build_image("org/app", "1", seed=90, layer_sizes=[[300, 1200], [64 * 1024]])


@pytest.fixture(scope="module")
def second_upstream(
    registry_binary: str,
    token_issuer: TokenIssuer,
    tmp_path_factory: pytest.TempPathFactory,
    second_image: Image,
) -> Iterator[Registry]:
    """Another reference registry behind the same token issuer, holding `org/app:1`."""
    registry = Registry(registry_binary, tmp_path_factory.mktemp("second-upstream"), token_issuer)
    registry.start()
    try:
        RegistryClient(registry.url, (SEEDER.username, SEEDER.password)).push(second_image)
        yield registry
    finally:
        registry.stop()


@pytest.mark.parametrize("client_kind", CLIENTS)
def test_second_upstream(
    client_kind: str,
    start_mirror: StartMirror,
    connect: Connect,
    upstream: Registry,
    second_upstream: Registry,
    second_image: Image,
    seeded_images: SeededImages,
    book: SequenceBook,
) -> None:
    """`ghcr.io/org/app:1` goes to the upstream named ghcr.io: containerd says so with
    `?ns=ghcr.io`, podman and skopeo with the mirror location's `/ghcr.io` path. Docker
    mirrors Docker Hub only, so it names the mirror itself: `MIRROR/ghcr.io/org/app:1`.
    Docker Hub names still go to the default upstream."""
    mirror = start_mirror(
        upstreams={
            "docker.io": UpstreamConfig(
                upstream.url, username=MIRROR_USER.username, password=MIRROR_USER.password
            ),
            SECOND: UpstreamConfig(second_upstream.url),
        }
    )
    rig = Rig(client_kind, connect(client_kind, mirror), mirror, MirrorLog(mirror), upstream)
    registry = f"{mirror.host}/{SECOND}" if client_kind == "docker" else SECOND
    ref = qualified(second_image, registry=registry)
    default_mark = upstream.mark()
    pull = rig.pull(ref, second_image, upstream=second_upstream)
    assert_fetched_once(pull.upstream, second_image)
    assert [r for r in upstream.requests_since(default_mark) if r.kind != "base"] == []
    assert {r.upstream for r in pull.mirror if r.kind in ("manifest", "blob")} == {SECOND}
    if client_kind != "containerd":
        paths = [r.path for r in pull.mirror if r.kind in ("manifest", "blob")]
        assert all(p.startswith(f"/v2/{SECOND}/") for p in paths), paths
    typed = command(client_kind, ref).replace(mirror.host, README_MIRROR)
    title = f"A second upstream: `{SECOND}`, nothing cached"
    book.record(client_kind, "second", title, typed, pull.mirror)

    hub = seeded_images.namespaced
    pull = rig.pull(qualified(hub), hub)
    assert_fetched_once(pull.upstream, hub)


def test_containerd_registry_without_upstream_goes_to_the_registry(
    mirror: MirrorProcess, connect: Connect
) -> None:
    """A `hosts.toml` for a registry the mirror has no upstream for: the mirror answers 404
    `NAME_UNKNOWN` and containerd goes on to the registry's `server` (closed here)."""
    runtime = connect("containerd", mirror)
    assert isinstance(runtime, Containerd)
    runtime.add_registry("quay.io", mirror.host)
    log = MirrorLog(mirror)
    mark = log.mark()
    with pytest.raises(AssertionError) as failure:
        runtime.pull("quay.io/org/tool:1")
    assert f"dial tcp {runtime.fallback}: connect: connection refused" in str(failure.value)
    answered = [(r.method, r.status, r.query) for r in log.requests_since(mark)]
    assert answered == [("HEAD", 404, "ns=quay.io")]


# the README shows what these tests run ------------------------------------------------


def _readme_section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def _fenced_blocks(text: str) -> list[str]:
    return [m.group(1) for m in re.finditer(r"^```[a-z]*\n(.*?)^```$", text, re.M | re.S)]


def test_readme_shows_the_tested_client_configuration() -> None:
    """README's "Pointing clients at it" shows the configuration these tests run each
    client with, with the README's addresses for the mirror and the registries."""
    section = _readme_section("Pointing clients at it")
    blocks = _fenced_blocks(section)
    wanted = {
        "daemon.json": daemon_json(README_MIRROR),
        "hosts.toml": hosts_toml("https://registry-1.docker.io", README_MIRROR),
        "registries.conf": registries_conf(
            [
                ("docker.io", "registry-1.docker.io", README_MIRROR),
                (SECOND, SECOND, f"{README_MIRROR}/{SECOND}"),
            ]
        ),
    }
    for name, text in wanted.items():
        assert text in blocks, f"README's {name} differs from the tested one:\n{text}"
    for kind in ("containerd", "podman", "skopeo"):
        typed = command(kind, "docker.io/library/alpine:3.20").replace("dir:out", "dir:alpine")
        assert typed in section, f"README lacks the tested command `{typed}`"

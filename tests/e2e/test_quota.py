"""The storage quota end to end: LRU eviction, crash recovery, pins and `mirror cache verify`.

Images of one incompressible ~4 MiB layer (about 40% of a 10 MiB quota) are pushed to
the real reference registry and pulled through the mirror with skopeo. What the cache
holds is read from the disk (`<storage>/blobs/sha256/<2 hex>/<hex>`, `<storage>/partial/`)
and from the index (`mirror.index.BlobIndex`), never from the mirror's own answers.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import random
import socket
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

from mirror.index import BlobIndex

from .images import DOCKER_LAYER, Blob, Image, RegistryClient, build_image
from .mirrorproc import MirrorProcess, StartMirror
from .registry import Registry, blob_fetches
from .support import child_env, http_request, wait_until
from .through import StartThrough, Through

pytestmark = pytest.mark.e2e

MIB = 1024 * 1024
QUOTA = 10 * MIB
LAYER_BYTES = 4 * MIB  # random, so gzip cannot shrink it: each image is ~40% of QUOTA
BIG_REPOSITORY = "library/e2e-quota-big"
BIG_BYTES = 150 * MIB  # long enough on loopback to be caught mid-download
READ_REPOSITORY = "library/e2e-quota-read"
READ_BYTES = 16 * MIB  # 40% of READ_QUOTA, and far more than loopback socket buffers hold
READ_QUOTA = 40 * MIB


def small_quota(**storage: object) -> dict[str, object]:
    """`extra` config for a mirror with the 10 MiB quota and default watermarks."""
    return {"storage": {"max_size": f"{QUOTA // MIB}MiB", **storage}}


@pytest.fixture(scope="module")
def quota_images(seeder: RegistryClient) -> dict[str, Image]:
    """Images A to D, one ~4 MiB layer each, pushed to the upstream."""
    images = {
        name: build_image(
            f"library/e2e-quota-{name.lower()}", "1", seed=60 + n, layer_sizes=[[LAYER_BYTES]]
        )
        for n, name in enumerate("ABCD")
    }
    for image in images.values():
        seeder.push(image)
    return images


@pytest.fixture(scope="module")
def big_blob(seeder: RegistryClient) -> Blob:
    """A 150 MiB blob of random bytes in BIG_REPOSITORY upstream (no manifest needed)."""
    blob = Blob(DOCKER_LAYER, random.Random(70).randbytes(BIG_BYTES))
    seeder.push_blob(BIG_REPOSITORY, blob)
    return blob


@pytest.fixture(scope="module")
def read_blobs(seeder: RegistryClient) -> tuple[Blob, Blob, Blob]:
    """Three 16 MiB blobs of random bytes in READ_REPOSITORY upstream."""
    blobs = tuple(Blob(DOCKER_LAYER, random.Random(80 + n).randbytes(READ_BYTES)) for n in range(3))
    for blob in blobs:
        seeder.push_blob(READ_REPOSITORY, blob)
    return blobs[0], blobs[1], blobs[2]


# what the storage folder holds ---------------------------------------------------------


def blob_file(storage: Path, digest: str) -> Path:
    hex_digest = digest.removeprefix("sha256:")
    return storage / "blobs" / "sha256" / hex_digest[:2] / hex_digest


def files_on_disk(storage: Path) -> dict[str, int]:
    """Every file under `<storage>/blobs`, as {digest: size}."""
    return {
        "sha256:" + path.name: path.stat().st_size
        for path in (storage / "blobs").rglob("*")
        if path.is_file()
    }


def digests_of(image: Image) -> set[str]:
    """What the cache holds for a pulled image: its manifest, config and layers."""
    return {image.digest, *(blob.digest for blob in image.blobs)}


def missing(storage: Path, digests: Iterable[str]) -> set[str]:
    return {d for d in digests if not blob_file(storage, d).is_file()}


def assert_under_quota(storage: Path, after: str) -> None:
    held = sum(files_on_disk(storage).values())
    assert held <= QUOTA, f"after {after} the cache holds {held} bytes, over the {QUOTA} quota"


def index_state(storage: Path) -> tuple[dict[str, int], int, int]:
    """The index's entries as {digest: size}, its total bytes and its count."""
    index = BlobIndex(storage)
    try:
        return {e.digest: e.size for e in index.entries()}, index.total(), index.count()
    finally:
        index.close()


def index_mismatch(storage: Path) -> str | None:
    """How the index differs from the files under blobs/, or None when it matches: every
    file has an entry of its size, every entry a file, and total and count agree."""
    on_disk = files_on_disk(storage)
    entries, total, count = index_state(storage)
    problems = []
    if orphans := on_disk.keys() - entries.keys():
        problems.append(f"files without an entry: {sorted(orphans)}")
    if ghosts := entries.keys() - on_disk.keys():
        problems.append(f"entries without a file: {sorted(ghosts)}")
    if wrong := {d for d in entries.keys() & on_disk.keys() if entries[d] != on_disk[d]}:
        problems.append(f"sizes differ from the files': {sorted(wrong)}")
    if (total, count) != (sum(on_disk.values()), len(on_disk)):
        problems.append(
            f"index total/count {total}/{count}, disk {sum(on_disk.values())}/{len(on_disk)}"
        )
    return "; ".join(problems) or None


def assert_index_matches_disk(storage: Path) -> None:
    mismatch = index_mismatch(storage)
    assert mismatch is None, mismatch


def assert_index_comes_to_match_disk(storage: Path) -> None:
    """The index is written just after a blob's commit, which may be after its client has
    every byte: allow that moment, then require a match."""
    try:
        wait_until(
            lambda: True if index_mismatch(storage) is None else None,
            timeout=10,
            what="the index to match the disk",
        )
    except TimeoutError:
        assert_index_matches_disk(storage)
        raise


def partial_files(storage: Path) -> list[Path]:
    return sorted((storage / "partial").iterdir())


def partial_bytes(storage: Path, digest: str) -> int:
    """Bytes in partial/ for `digest` (its file is `<hex>.<random>`); 0 when there is none."""
    total = 0
    for path in (storage / "partial").glob(digest.removeprefix("sha256:") + ".*"):
        with contextlib.suppress(FileNotFoundError):  # committed or discarded meanwhile
            total += path.stat().st_size
    return total


def pull_all(through: Through, images: Iterable[tuple[str, Image]]) -> None:
    """Pull each image (byte-checked) and check the quota holds after each."""
    for label, image in images:
        through.pull(image, f"pull-{label}")
        assert_under_quota(through.mirror.storage, f"pulling {label}")


# LRU eviction -------------------------------------------------------------------------


def test_least_recently_pulled_image_is_evicted_first(
    start_through: StartThrough, quota_images: Mapping[str, Image]
) -> None:
    through = start_through(extra=small_quota())
    storage = through.mirror.storage
    a, b, c = (quota_images[n] for n in "ABC")
    pull_all(through, [("A", a), ("B", b)])
    assert missing(storage, digests_of(a) | digests_of(b)) == set(), "A + B fit the quota"

    pull_all(through, [("C", c)])
    assert blob_file(storage, a.layers[0].digest).exists() is False, "A's layer was not evicted"
    assert missing(storage, digests_of(b)) == set(), "B was evicted although A was older"
    assert missing(storage, digests_of(c)) == set()


def test_cache_hit_makes_an_image_recent(
    start_through: StartThrough, quota_images: Mapping[str, Image]
) -> None:
    through = start_through(extra=small_quota())
    storage = through.mirror.storage
    a, b, c = (quota_images[n] for n in "ABC")
    pull_all(through, [("A", a), ("B", b)])
    with through.upstream_requests() as requests:
        pull_all(through, [("A again", a)])
    assert blob_fetches(requests) == [], "the second pull of A was not a cache hit"

    pull_all(through, [("C", c)])
    assert blob_file(storage, b.layers[0].digest).exists() is False, "B's layer was not evicted"
    assert missing(storage, digests_of(a)) == set(), "A was evicted although it was used last"
    assert missing(storage, digests_of(c)) == set()


def test_pinned_image_survives_pressure_that_evicts_everything_else(
    start_through: StartThrough, upstream: Registry, quota_images: Mapping[str, Image]
) -> None:
    a, b, c, d = (quota_images[n] for n in "ABCD")
    # Named as users name it: the upstream's host, which the mirror maps to `docker.io`.
    pin = f"{upstream.host}/{a.repository}:{a.tag}"
    through = start_through(extra=small_quota(pinned=[pin]))
    storage = through.mirror.storage
    pull_all(through, [("A", a), ("B", b), ("C", c), ("D", d)])

    assert missing(storage, digests_of(a)) == set(), "a blob of the pinned image was evicted"
    for label, image in (("B", b), ("C", c)):
        layer = image.layers[0].digest
        assert not blob_file(storage, layer).exists(), f"{label} was not evicted: no pressure"
    assert missing(storage, digests_of(d)) == set()
    with upstream.stopped():
        through.pull(a, "pinned-offline")


def open_slow_reader(
    mirror: MirrorProcess, path: str
) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse, int]:
    """GET `path` on a socket with a small receive buffer, so the mirror can send only a
    little ahead of what is read; returns the connection, the response and that buffer."""
    sock = socket.create_connection(("127.0.0.1", mirror.port), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    conn = http.client.HTTPConnection("127.0.0.1", mirror.port, timeout=10)
    conn.sock = sock
    conn.request("GET", path)
    response = conn.getresponse()
    return conn, response, sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)


def send_buffer_max() -> int:
    """The most a loopback TCP sender buffers (Linux autotuning's ceiling)."""
    return int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])


def test_client_reading_a_blob_while_it_is_evicted_gets_every_byte(
    start_mirror: StartMirror, read_blobs: tuple[Blob, Blob, Blob]
) -> None:
    x, y, z = read_blobs
    mirror = start_mirror(extra={"storage": {"max_size": f"{READ_QUOTA // MIB}MiB"}})
    storage = mirror.storage

    def path(blob: Blob) -> str:
        return f"/v2/{READ_REPOSITORY}/blobs/{blob.digest}"

    assert http_request("GET", mirror.url + path(x), timeout=60).status == 200
    wait_until(
        lambda: True if x.digest in index_state(storage)[0] else None,
        timeout=10,
        what="the first blob to be indexed",
    )
    conn, reading, receive_buffer = open_slow_reader(mirror, path(x))
    try:
        assert reading.status == 200
        head = reading.read(MIB)
        # The blob's file must go while most of it is still to be read from it.
        assert x.size > len(head) + receive_buffer + send_buffer_max(), "buffers hold it all"
        answer = http_request("GET", mirror.url + path(y), timeout=60)
        assert (answer.status, answer.body == y.data) == (200, True)
        # Z's download reserves its size, evicting X, before its first byte is written.
        filling = http.client.HTTPConnection("127.0.0.1", mirror.port, timeout=60)
        try:
            filling.request("GET", path(z))
            started = filling.getresponse()
            assert not blob_file(storage, x.digest).exists(), (
                "the blob being read was not evicted before the new download started"
            )
            assert (started.status, started.read() == z.data) == (200, True)
        finally:
            filling.close()
        assert sum(files_on_disk(storage).values()) <= READ_QUOTA
        rest = reading.read()
    finally:
        conn.close()
    assert len(head) + len(rest) == x.size, f"the reader got {len(head) + len(rest)} bytes"
    assert head + rest == x.data


# SIGKILL and restart ------------------------------------------------------------------


def start_blob_download(mirror: MirrorProcess, digest: str) -> http.client.HTTPResponse:
    """GET a blob through the mirror and return once its headers arrived (the body unread)."""
    conn = http.client.HTTPConnection("127.0.0.1", mirror.port, timeout=30)
    conn.request("GET", f"/v2/{BIG_REPOSITORY}/blobs/{digest}")
    response = conn.getresponse()
    assert response.status == 200, f"GET through the mirror answered {response.status}"
    return response


def bytes_until_cut(response: http.client.HTTPResponse) -> int:
    """Read a response until the server goes away; return how many body bytes came."""
    received = 0
    try:
        while chunk := response.read1(MIB):
            received += len(chunk)
    except (http.client.IncompleteRead, OSError):
        pass
    finally:
        response.close()
    return received


def test_sigkill_mid_download_leaves_no_partial_blob(
    through: Through, quota_images: Mapping[str, Image], big_blob: Blob
) -> None:
    mirror, storage, upstream = through.mirror, through.mirror.storage, through.upstream
    completed = quota_images["A"]
    through.pull(completed, "before-kill")

    response = start_blob_download(mirror, big_blob.digest)
    wait_until(
        lambda: True if partial_bytes(storage, big_blob.digest) else None,
        timeout=30,
        interval=0.005,
        what="the download of the big blob to write into partial/",
    )
    mirror.process.kill()
    assert not blob_file(storage, big_blob.digest).exists(), (
        "the download finished before the SIGKILL: the test needs a slower download"
    )
    assert partial_bytes(storage, big_blob.digest), "the SIGKILL left no partial file"
    assert bytes_until_cut(response) < big_blob.size, "the client got every byte before the kill"

    mirror.start()
    assert partial_files(storage) == [], "start-up left downloads of the crashed run in partial/"
    assert_index_matches_disk(storage)
    assert big_blob.digest not in index_state(storage)[0]
    blob_url = f"{mirror.url}/v2/{BIG_REPOSITORY}/blobs/{big_blob.digest}"
    with upstream.stopped():
        through.pull(completed, "after-restart-offline")
        offline = http_request("GET", blob_url)
        assert offline.status >= 500, (
            f"with the upstream down the half-downloaded blob answered {offline.status} "
            f"with {len(offline.body)} of {big_blob.size} bytes"
        )
    refetched = http_request("GET", blob_url, timeout=120)
    assert refetched.status == 200
    assert len(refetched.body) == big_blob.size
    assert hashlib.sha256(refetched.body).hexdigest() == big_blob.digest.removeprefix("sha256:")
    assert_index_comes_to_match_disk(storage)


def test_sigkill_after_completed_pull_keeps_the_image(
    through: Through, quota_images: Mapping[str, Image]
) -> None:
    mirror, storage = through.mirror, through.mirror.storage
    a, b = quota_images["A"], quota_images["B"]
    through.pull(a, "a")
    through.pull(b, "b")
    mirror.process.kill()
    # What a SIGKILL in two narrow windows leaves, which a test cannot aim at: between a
    # blob's rename and its index write (file without entry), and between an eviction's
    # unlink and its index removal (entry without file).
    unindexed, unlinked = a.layers[0].digest, b.layers[0].digest
    index = BlobIndex(storage)
    try:
        assert index.remove(unindexed) > 0, "A's layer was never indexed"
        assert index.get(unlinked) is not None, "B's layer was never indexed"
    finally:
        index.close()
    blob_file(storage, unlinked).unlink()

    mirror.start()
    assert partial_files(storage) == []
    assert_index_matches_disk(storage)
    entries = index_state(storage)[0]
    assert digests_of(a) <= entries.keys(), "A's layer file was not indexed again"
    assert unlinked not in entries
    with through.upstream.stopped():
        through.pull(a, "a-offline")
        through.pull(a, "a-offline-by-digest", a.digest)
    with through.upstream_requests() as requests:
        through.pull(b, "b-again")
    fetched = [(r.reference, r.status) for r in blob_fetches(requests)]
    assert fetched == [(unlinked, 200)], f"upstream blob GETs for B: {fetched}"
    assert_index_comes_to_match_disk(storage)


# mirror cache verify --------------------------------------------------------------------


def test_cache_verify_removes_an_altered_blob_and_the_mirror_fetches_it_again(
    through: Through, mirror_executable: str, quota_images: Mapping[str, Image]
) -> None:
    storage = through.mirror.storage
    image = quota_images["A"]
    through.pull(image, "first")
    layer = image.layers[0].digest
    path = blob_file(storage, layer)
    with path.open("r+b") as f:
        f.seek(path.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))

    result = subprocess.run(
        [mirror_executable, "cache", "verify", "--storage", str(storage), "--json"],
        capture_output=True,
        env=child_env(),
        stdin=subprocess.DEVNULL,
        timeout=60,
        check=False,
    )
    stderr = result.stderr.decode("utf-8", "replace")
    assert result.returncode == 1, f"exit {result.returncode}; stderr:\n{stderr}"
    report = json.loads(result.stdout)
    assert [bad["digest"] for bad in report["corrupt"]] == [layer], report
    assert not path.exists(), "verify reported the altered blob but left it on disk"
    assert layer not in index_state(storage)[0], "verify left the altered blob in the index"

    with through.upstream_requests() as requests:
        through.pull(image, "after-verify")
    fetched = [(r.reference, r.status) for r in blob_fetches(requests)]
    assert fetched == [(layer, 200)], f"upstream blob GETs after verify: {fetched}"

"""`mirror cache stats|ls|prune|verify` on a real storage folder built with the mirror's own
store, index and refs."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from mirror.cachecli import CHUNK
from mirror.cachereport import Progress
from mirror.cli import main
from mirror.index import BlobIndex
from mirror.refs import Refs, TagRecord
from mirror.storage.disk import DiskBlobStore
from tests.storespy import put

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DAY = 86400.0
CONFIG = """\
storage:
  path: data
  max_size: 1MiB
  pinned: [docker.io/library/alpine:3.20]
upstreams:
  docker.io: {url: https://registry-1.docker.io}
  ghcr.io: {url: https://ghcr.io}
"""
VARIABLES = ("MIRROR_CONFIG", "MIRROR_STORAGE_PATH", "MIRROR_MAX_SIZE")


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Image:
    manifest: str
    config: str
    layer: str
    size: int  # manifest + config + layer

    @property
    def digests(self) -> set[str]:
        return {self.manifest, self.config, self.layer}


class Storage:
    """A storage folder filled the way the mirror fills it: store, index, refs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.store = DiskBlobStore(root)
        self.refs = Refs(root)
        self.now = time.time()
        self.at = self.now
        self.index = BlobIndex(root, clock=lambda: self.at)

    def blob(self, data: bytes, kind: str, repo: str) -> str:
        digest = put(self.store, data)
        self.index.add(digest, len(data), kind, repo)
        return digest

    def image(
        self, upstream: str, repo: str, tags: list[str], layer_size: int, age: float
    ) -> Image:
        """An image pulled `age` seconds ago: a manifest, its config and one layer."""
        self.at = self.now - age
        key = f"{upstream}/{repo}"
        config_bytes = json.dumps({"architecture": "amd64", "image": key}).encode()
        layer_bytes = os.urandom(layer_size)
        config = self.blob(config_bytes, "blob", key)
        layer = self.blob(layer_bytes, "blob", key)
        body = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"digest": config, "size": len(config_bytes)},
                "layers": [{"digest": layer, "size": layer_size}],
            }
        ).encode()
        manifest = self.blob(body, "manifest", key)
        for tag in tags:
            self.refs.set_tag(upstream, repo, tag, TagRecord(manifest, OCI_MANIFEST))
        return Image(manifest, config, layer, len(body) + len(config_bytes) + layer_size)

    def path(self, digest: str) -> Path:
        hex_digest = digest.split(":", 1)[1]
        return self.root / "blobs" / "sha256" / hex_digest[:2] / hex_digest


@dataclass(frozen=True)
class Seeded:
    storage: Storage
    alpine: Image  # pinned, the least recently used
    nginx: Image
    app: Image  # on ghcr.io, the most recently used


@pytest.fixture(autouse=True)
def clean(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    Path("mirror.yml").write_text(CONFIG)


@pytest.fixture
def seeded(tmp_path: Path) -> Iterator[Seeded]:
    storage = Storage(tmp_path / "data")
    alpine = storage.image("docker.io", "library/alpine", ["3.19", "3.20"], 40_000, 10 * DAY)
    nginx = storage.image("docker.io", "library/nginx", ["latest"], 30_000, 5 * DAY)
    app = storage.image("ghcr.io", "org/app", ["1.0"], 20_000, 3600)
    yield Seeded(storage, alpine, nginx, app)
    storage.index.close()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["cache", *argv, "-c", "mirror.yml"])
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    code, out, _ = run(capsys, *argv, "--json")
    assert code == 0
    return json.loads(out)


def iso(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- stats ---------------------------------------------------------------------------------


def test_stats_of_a_stopped_mirror(seeded: Seeded, capsys: pytest.CaptureFixture[str]) -> None:
    total = seeded.alpine.size + seeded.nginx.size + seeded.app.size
    code, out, err = run(capsys, "stats")
    assert (code, err) == (0, "")
    lines = dict(line.split(None, 1) for line in out.splitlines())
    assert lines["storage"] == str(seeded.storage.root)
    assert lines["size"].startswith(f"{total / 1024:.1f} KiB ({total} bytes), ")
    assert f"{100 * total / 1024**2:.1f}% of the 1.0 MiB (1048576 bytes) quota" in lines["size"]
    assert lines["watermarks"] == (
        "eviction starts at 95% (972.8 KiB) and goes down to 85% (870.4 KiB)"
    )
    assert lines["held"] == "6 blobs, 3 manifests"
    assert lines["pinned"].startswith("1 reference, ")
    assert lines["pinned"].endswith(f"({seeded.alpine.size} bytes)")
    assert lines["mirror"] == "not running"

    stats = run_json(capsys, "stats")
    assert stats == {
        "storage": str(seeded.storage.root),
        "size_bytes": total,
        "max_size_bytes": 1024**2,
        "used_percent": round(100 * total / 1024**2, 2),
        "high_watermark": 0.95,
        "low_watermark": 0.85,
        "blobs": 6,
        "manifests": 3,
        "pinned_references": 1,
        "pinned_bytes": seeded.alpine.size,
        "running": False,
        "mirror": None,
    }


def test_stats_of_a_running_mirror(seeded: Seeded, capsys: pytest.CaptureFixture[str]) -> None:
    started = time.time() - 3700
    seeded.storage.index.set_status(
        {"pid": os.getpid(), "started": started, "hits": 30.0, "misses": 10.0}
    )
    code, out, _ = run(capsys, "stats", "--max-size", "2MiB")
    assert code == 0
    assert f"running (pid {os.getpid()}, up 1h1m): 30 hits, 10 misses, hit ratio 75.0%" in out
    assert "of the 2.0 MiB (2097152 bytes) quota" in out
    stats = run_json(capsys, "stats")
    assert stats["running"] is True
    assert stats["mirror"]["pid"] == os.getpid()
    assert stats["mirror"]["started"] == iso(started)
    assert (stats["mirror"]["hits"], stats["mirror"]["misses"]) == (30, 10)
    assert stats["mirror"]["hit_ratio"] == 0.75


def test_stats_ignores_the_status_of_a_mirror_that_has_exited(
    seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    gone = subprocess.Popen([sys.executable, "-c", ""])
    gone.wait()
    seeded.storage.index.set_status({"pid": gone.pid, "started": 1.0, "hits": 5, "misses": 1})
    stats = run_json(capsys, "stats")
    assert (stats["running"], stats["mirror"]) == (False, None)


# --- ls ------------------------------------------------------------------------------------


def test_ls_lists_repositories_as_clients_name_them(
    seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    storage = seeded.storage
    storage.refs.set_manifest("docker.io", "library/empty", digest_of(b"x"), OCI_MANIFEST)
    storage.at = storage.now - 60  # the app's layer was pulled again a minute ago
    storage.index.touch(seeded.app.layer)
    storage.index.flush()
    listing = run_json(capsys, "ls")["repositories"]
    assert [repo["name"] for repo in listing] == [
        "ghcr.io/org/app",
        "library/alpine",
        "library/empty",
        "library/nginx",
    ]
    app, alpine, empty, nginx = listing
    assert app == {
        "name": "ghcr.io/org/app",
        "upstream": "ghcr.io",
        "repository": "org/app",
        "tags": ["1.0"],
        "size_bytes": seeded.app.size,
        "entries": 3,
        "last_pull": iso(storage.now - 60),
    }
    assert alpine["tags"] == ["3.19", "3.20"]
    assert alpine["size_bytes"] == seeded.alpine.size
    assert nginx["last_pull"] == iso(storage.now - 5 * DAY)
    assert (empty["tags"], empty["size_bytes"], empty["last_pull"]) == ([], 0, None)

    code, out, _ = run(capsys, "ls")
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split() == ["REPOSITORY", "TAGS", "SIZE", "LAST", "PULL"]
    assert rows[1].split() == [
        "library/alpine",
        "3.19,",
        "3.20",
        f"{seeded.alpine.size / 1024:.1f}",
        "KiB",
        iso(storage.now - 10 * DAY),
    ]
    assert rows[2].split() == ["library/empty", "-", "0", "B", "-"]


# --- prune ---------------------------------------------------------------------------------


def held(storage: Storage) -> set[str]:
    """Digests in the index, after checking the files on disk say the same."""
    indexed = {entry.digest for entry in storage.index.entries()}
    assert set(storage.store.digests()) == indexed
    return indexed


def test_prune_to_evicts_least_recently_used_first_and_keeps_pins(
    seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    target = seeded.alpine.size + seeded.app.size
    result = run_json(capsys, "prune", "--to", str(target))
    # alpine is the oldest but pinned: nginx goes, the more recent app stays.
    assert set(result["digests"]) == seeded.nginx.digests
    assert (result["removed"], result["freed_bytes"]) == (3, seeded.nginx.size)
    assert result["size_bytes"] == target
    assert held(seeded.storage) == seeded.alpine.digests | seeded.app.digests
    assert seeded.storage.index.total() == target


def test_prune_to_zero_stops_at_pinned_content(
    seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "prune", "--to", "0")
    assert code == 0
    freed = seeded.nginx.size + seeded.app.size
    alpine = seeded.alpine.size
    assert out.splitlines() == [
        f"removed 6 blobs and manifests, freed {freed / 1024:.1f} KiB ({freed} bytes);"
        f" the cache holds {alpine / 1024:.1f} KiB ({alpine} bytes)",
        f"still above the 0 B target: {alpine / 1024:.1f} KiB ({alpine} bytes) of it is pinned",
    ]
    assert held(seeded.storage) == seeded.alpine.digests


def test_prune_older_than_keeps_recent_and_pinned(
    seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run_json(capsys, "prune", "--older-than", "1d")
    assert set(result["digests"]) == seeded.nginx.digests
    assert result["older_than_seconds"] == DAY
    assert result["target_bytes"] is None
    assert held(seeded.storage) == seeded.alpine.digests | seeded.app.digests


def test_prune_with_both_removes_old_then_least_recently_used(
    seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run_json(capsys, "prune", "--older-than", "7d", "--to", str(seeded.alpine.size))
    assert set(result["digests"]) == seeded.nginx.digests | seeded.app.digests
    assert held(seeded.storage) == seeded.alpine.digests


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "mirror cache prune: give --to SIZE, --older-than DURATION or both\n"),
        (["--to", "lots"], "argument --to: expected a size like 512MiB"),
        (["--older-than", "forever"], "argument --older-than: expected a duration like"),
    ],
)
def test_prune_usage_errors_exit_2(
    seeded: Seeded, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = run(capsys, "prune", *argv)
    assert (code, out) == (2, "")
    assert message in err
    assert len(held(seeded.storage)) == 9


# --- verify --------------------------------------------------------------------------------


def test_verify_removes_a_blob_altered_on_disk(
    seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "verify")
    assert (code, out) == (0, f"verified 9 blobs, {human_kib(seeded)}: all intact\n")

    layer = seeded.storage.path(seeded.nginx.layer)
    altered = bytearray(layer.read_bytes())
    altered[100] ^= 0xFF  # same size: only re-hashing can tell
    layer.write_bytes(bytes(altered))

    code, out, _ = run(capsys, "verify")
    assert code == 1
    lines = out.splitlines()
    assert lines[0] == f"verified 9 blobs, {human_kib(seeded)}: 1 corrupt, removed:"
    assert lines[1] == f"  {seeded.nginx.layer} (29.3 KiB) hashes to {digest_of(bytes(altered))}"
    assert not layer.exists()
    assert seeded.storage.index.get(seeded.nginx.layer) is None
    assert len(held(seeded.storage)) == 8

    assert run_json(capsys, "verify")["corrupt"] == []


def human_kib(seeded: Seeded) -> str:
    total = seeded.alpine.size + seeded.nginx.size + seeded.app.size
    return f"{total / 1024:.1f} KiB ({total} bytes)"


def test_verify_json_reports_corrupt_blobs_and_reconciles_first(
    seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    storage = seeded.storage
    storage.path(seeded.app.config).write_bytes(b"not the config")
    orphan = b"a file the index never heard of"
    put(storage.store, orphan)
    storage.path(seeded.nginx.config).unlink()

    code, out, _ = run(capsys, "verify", "--json")
    assert code == 1
    result = json.loads(out)
    # The orphan is indexed; the altered config's size changed, so it is re-indexed too.
    assert result["reconciled"] == {"indexed": 2, "dropped": 1}
    assert result["blobs"] == 9
    assert result["corrupt"] == [
        {
            "digest": seeded.app.config,
            "size_bytes": len(b"not the config"),
            "actual": digest_of(b"not the config"),
        }
    ]
    assert seeded.app.config not in held(storage)
    assert digest_of(orphan) in held(storage)


def test_verify_progress_is_a_line_per_tenth_off_a_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    storage = Storage(tmp_path / "data")
    storage.blob(os.urandom(10 * CHUNK), "blob", "docker.io/library/big")
    storage.index.close()
    code, _, err = run(capsys, "verify")
    assert code == 0
    assert err.splitlines() == [
        f"verifying: {10 * n:3d}% {float(n):.1f} MiB / 10.0 MiB" for n in range(1, 11)
    ]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_redraws_one_line_on_a_terminal() -> None:
    screen = Terminal()
    progress = Progress(screen, 400, "verifying")
    for _ in range(4):
        progress.advance(50)
        progress.advance(50)
        progress.advance(0)  # no change: no redraw
    progress.finish()
    frames = screen.getvalue().split("\r")
    assert frames[0] == ""
    assert len(frames) == 1 + 8
    assert frames[1].startswith("verifying [###                      ]  12% 50 B / 400 B")
    assert frames[-1] == "verifying [#########################] 100% 400 B / 400 B  \n"
    assert screen.getvalue().count("\n") == 1


def test_progress_on_nothing_writes_nothing() -> None:
    screen = Terminal()
    progress = Progress(screen, 0, "verifying")
    progress.advance(0)
    progress.finish()
    assert screen.getvalue() == ""


# --- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "what"), [("stats", "show"), ("ls", "list"), ("verify", "verify")]
)
def test_no_cache_is_one_line_and_creates_nothing(
    capsys: pytest.CaptureFixture[str], command: str, what: str
) -> None:
    code = main(["cache", command, "--storage", "nowhere"])
    out, err = capsys.readouterr()
    assert (code, out) == (2, "")
    assert err == f"mirror: no cache at nowhere (storage.path); nothing to {what}\n"
    assert not Path("nowhere").exists()


def test_config_problems_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["cache", "stats", "-c", "mirror.yml", "--max-size", "lots"])
    out, err = capsys.readouterr()
    assert (code, out) == (2, "")
    assert err.startswith("mirror: storage.max_size (from --max-size): expected a size")


def test_config_from_the_environment(
    seeded: Seeded, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MIRROR_CONFIG", "mirror.yml")
    monkeypatch.setenv("MIRROR_MAX_SIZE", "4MiB")
    assert main(["cache", "stats", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert (stats["max_size_bytes"], stats["pinned_references"]) == (4 * 1024**2, 1)


def test_cache_without_a_command_shows_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cache"]) == 2
    err = capsys.readouterr().err
    assert all(name in err for name in ("stats", "ls", "prune", "verify"))

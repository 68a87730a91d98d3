"""What the persistent index costs a cache hit: hits/s with and without access tracking.

Seeds a storage folder with a blob and a manifest, then runs `mirror serve` on it
twice per round, once as shipped and once with `BlobIndex.touch` turned into a no-op
(`bench/serve_untracked.py`), alternating A B A B. Each run is `wrk` for a few
seconds against a blob hit and a manifest-by-digest hit. Prints medians, min-max
and the ratio. Needs `wrk` (Debian package) and the package installed.

    python bench/index_overhead.py [--rounds 5] [--seconds 5] [--connections 32]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from mirror.index import BlobIndex
from mirror.oci import OCI_MANIFEST
from mirror.refs import Refs, TagRecord
from mirror.storage.disk import DiskBlobStore

HERE = Path(__file__).resolve().parent
REPO = "library/bench"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def seed(storage: Path) -> tuple[str, str]:
    """A 16 KiB blob and a manifest naming it, committed and indexed."""
    store, index, refs = DiskBlobStore(storage), BlobIndex(storage), Refs(storage)
    blob = os.urandom(16 * 1024)
    manifest = b'{"schemaVersion":2,"mediaType":"' + OCI_MANIFEST.encode() + b'","layers":[]}'
    digests = []
    for data, kind in ((blob, "blob"), (manifest, "manifest")):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        writer = store.writer(digest)
        writer.write(data)
        writer.commit()
        index.add(digest, len(data), kind, f"docker.io/{REPO}")
        digests.append(digest)
    refs.set_tag("docker.io", REPO, "1", TagRecord(digests[1], OCI_MANIFEST))
    index.close()
    return digests[0], digests[1]


def serve(command: list[str], storage: Path, port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [
            *command,
            "serve",
            "--listen",
            f"127.0.0.1:{port}",
            "--storage",
            str(storage),
            "--upstream",
            "http://127.0.0.1:9",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/") as answer:
                if answer.status == 200:
                    return process
        except OSError:
            time.sleep(0.05)  # polling a server's readiness, not synchronising tests
    process.kill()
    raise SystemExit("mirror did not start within 30 s")


def wrk(url: str, seconds: int, connections: int) -> float:
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not match or "Non-2xx" in out:
        raise SystemExit(f"wrk run failed:\n{out}")
    return float(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("bench: wrk is not installed (apt-get install wrk)")
    mirror = shutil.which("mirror") or str(Path(sys.executable).parent / "mirror")
    variants = {
        "tracked": [mirror],
        "untracked": [sys.executable, str(HERE / "serve_untracked.py")],
    }
    results: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        storage = Path(folder)
        blob, manifest = seed(storage)
        paths = {"blob": f"/v2/{REPO}/blobs/{blob}", "manifest": f"/v2/{REPO}/manifests/{manifest}"}
        for round_number in range(args.rounds):
            for name, command in variants.items():
                port = free_port()
                process = serve(command, storage, port)
                try:
                    for kind, path in paths.items():
                        rate = wrk(f"http://127.0.0.1:{port}{path}", args.seconds, args.connections)
                        results.setdefault((kind, name), []).append(rate)
                finally:
                    process.send_signal(signal.SIGTERM)
                    process.wait(timeout=30)
            print(f"round {round_number + 1}/{args.rounds} done", file=sys.stderr)
    print(f"{'hit':<9} {'variant':<10} {'median req/s':>13} {'min-max':>17}")
    for (kind, name), rates in sorted(results.items()):
        print(
            f"{kind:<9} {name:<10} {statistics.median(rates):>13.0f} "
            f"{min(rates):>8.0f}-{max(rates):<8.0f}"
        )
    for kind in paths:
        ratio = statistics.median(results[(kind, "tracked")]) / statistics.median(
            results[(kind, "untracked")]
        )
        print(f"{kind}: tracked/untracked = {ratio:.3f}")


if __name__ == "__main__":
    main()

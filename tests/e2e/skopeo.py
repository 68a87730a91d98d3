"""skopeo as a client of the mirror, and checks of what a pull left on disk.

Owns: running skopeo isolated from the machine's container config (empty registries.conf,
no stored credentials, private HOME and TMPDIR), image references, and verifying a
`dir:` or `oci:` copy byte for byte against the `images` descriptions.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

from .images import Image, ImageIndex, sha256_digest
from .support import child_env


def docker_ref(host: str, repository: str, reference: str) -> str:
    """`docker://HOST/REPO:TAG`, or `…@sha256:…` when `reference` is a digest."""
    separator = "@" if reference.startswith("sha256:") else ":"
    return f"docker://{host}/{repository}{separator}{reference}"


class Skopeo:
    """Runs skopeo against a plain-HTTP registry (the mirror) anonymously.

    Every call gets `--insecure-policy`, a private empty registries.conf and no
    credentials, so nothing on the machine can route it anywhere but the
    reference it is given.
    """

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.registries_conf = workdir / "registries.conf"
        self.registries_conf.write_text("unqualified-search-registries = []\n")
        (workdir / "home").mkdir(exist_ok=True)
        (workdir / "tmp").mkdir(exist_ok=True)
        self.env = child_env(
            {
                "HOME": str(workdir / "home"),
                "TMPDIR": str(workdir / "tmp"),
                "REGISTRY_AUTH_FILE": str(workdir / "auth.json"),
                "XDG_RUNTIME_DIR": str(workdir / "home"),
            }
        )

    def run(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[bytes]:
        """Run `skopeo <global flags> ARGS`; with `check`, a failure raises AssertionError
        carrying skopeo's stderr. On timeout subprocess.run kills skopeo before raising.
        """
        argv = [
            self.binary,
            "--insecure-policy",
            "--registries-conf",
            str(self.registries_conf),
            "--tmpdir",
            str(self.workdir / "tmp"),
            *args,
        ]
        result = subprocess.run(
            argv, capture_output=True, env=self.env, timeout=timeout, stdin=subprocess.DEVNULL
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"skopeo {' '.join(args)} failed with {result.returncode}:\n"
                f"{result.stderr.decode('utf-8', 'replace')}"
            )
        return result

    def copy(
        self,
        source: str,
        destination: str,
        *,
        all_images: bool = False,
        arch: str | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[bytes]:
        """`skopeo copy` from a plain-HTTP `docker://` source, anonymously."""
        platform = ["--override-os", "linux", "--override-arch", arch] if arch else []
        flags = ["--src-tls-verify=false", "--src-no-creds"]
        if all_images:
            flags.append("--all")
        return self.run(*platform, "copy", *flags, source, destination, check=check)

    def inspect_raw(self, reference: str) -> bytes:
        """The manifest bytes exactly as the registry served them."""
        return self.run("inspect", "--raw", "--tls-verify=false", "--no-creds", reference).stdout


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def _assert_blobs(found: dict[str, Path], image: Image) -> None:
    for blob in image.blobs:
        hex_digest = blob.digest.removeprefix("sha256:")
        path = found.get(hex_digest)
        assert path is not None, f"{image.repository}: blob {blob.digest} missing from the copy"
        assert _file_digest(path) == blob.digest, f"{path.name}: content does not match"


def assert_dir_image(path: Path, image: Image) -> None:
    """A `dir:` copy holds exactly `image`'s manifest bytes and every config/layer blob."""
    manifest = (path / "manifest.json").read_bytes()
    assert sha256_digest(manifest) == image.digest, (
        f"manifest digest {sha256_digest(manifest)} != pushed {image.digest}"
    )
    assert manifest == image.manifest
    blobs = {p.name: p for p in path.iterdir() if len(p.name) == 64}
    _assert_blobs(blobs, image)
    listed = [layer["digest"] for layer in json.loads(manifest)["layers"]]
    assert listed == image.layer_digests


def assert_dir_index(path: Path, index: ImageIndex) -> None:
    """A `dir:` copy made with `--all`: the index bytes, each image's manifest and blobs."""
    manifest = (path / "manifest.json").read_bytes()
    assert sha256_digest(manifest) == index.digest, (
        f"index digest {sha256_digest(manifest)} != pushed {index.digest}"
    )
    blobs = {p.name: p for p in path.iterdir() if len(p.name) == 64}
    for image in index.images:
        hex_digest = image.digest.removeprefix("sha256:")
        child = path / f"{hex_digest}.manifest.json"
        assert child.is_file(), f"{image.platform.architecture} manifest missing from the copy"
        assert child.read_bytes() == image.manifest
        _assert_blobs(blobs, image)


def assert_oci_layout_image(path: Path, image: Image) -> None:
    """An `oci:` layout copy references `image`'s manifest by digest and holds every blob."""
    index = json.loads((path / "index.json").read_text())
    digests = [m["digest"] for m in index["manifests"]]
    assert digests == [image.digest], f"oci layout lists {digests}, pushed {image.digest}"
    store = path / "blobs" / "sha256"
    blobs = {p.name: p for p in store.iterdir()}
    manifest_path = blobs.get(image.digest.removeprefix("sha256:"))
    assert manifest_path is not None and manifest_path.read_bytes() == image.manifest
    _assert_blobs(blobs, image)

"""Real clients of the mirror, what they share, and the two that run no daemon.

Owns: the client configuration texts (the README's, parametrised by host and port only),
image references, the `PullClient` protocol every client test drives, and podman and
skopeo (given a registries.conf) in short /tmp folders of their own. Every route around
the mirror points at a closed loopback port. The daemons are in `daemons`.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from .daemonproc import remove_state, short_tempdir
from .images import Image, ImageIndex
from .skopeo import Skopeo, assert_dir_image
from .support import child_env, free_port

COMMAND_TIMEOUT = 120.0


# configuration texts (README.md shows them with mirror.local:5000) -----------------


def daemon_json(mirror: str) -> str:
    """Docker's `/etc/docker/daemon.json` for a plain-HTTP mirror at `mirror` (HOST:PORT)."""
    return (
        "{\n"
        f'  "registry-mirrors": ["http://{mirror}"],\n'
        f'  "insecure-registries": ["{mirror}"]\n'
        "}\n"
    )


def hosts_toml(server: str, mirror: str) -> str:
    """containerd's `certs.d/<registry>/hosts.toml`: `mirror` (HOST:PORT, plain HTTP) first,
    then `server` (the registry's own URL)."""
    return (
        f'server = "{server}"\n\n[host."http://{mirror}"]\n  capabilities = ["pull", "resolve"]\n'
    )


def registries_conf(registries: Sequence[tuple[str, str, str]]) -> str:
    """podman's and skopeo's `registries.conf`: per (prefix, location, mirror location) a
    `[[registry]]` with one plain-HTTP `[[registry.mirror]]`."""
    blocks = [
        f'[[registry]]\nprefix = "{prefix}"\nlocation = "{location}"\n\n'
        f'[[registry.mirror]]\nlocation = "{mirror}"\ninsecure = true\n'
        for prefix, location, mirror in registries
    ]
    return "\n".join(blocks)


def closed_port() -> int:
    """A loopback port nothing listens on: a route there fails at once with ECONNREFUSED."""
    return free_port()


# references and expectations ---------------------------------------------------------


def qualified(
    item: Image | ImageIndex,
    reference: str | None = None,
    *,
    registry: str = "docker.io",
) -> str:
    """`registry/repository:tag` or `…@sha256:…`, as a user names the image to any client."""
    ref = reference or item.tag or item.digest
    separator = "@" if ref.startswith("sha256:") else ":"
    return f"{registry}/{item.repository}{separator}{ref}"


def ref_name(ref: str) -> str:
    """`registry/repository` of a reference, without its tag or digest."""
    if "@" in ref:
        return ref.split("@", 1)[0]
    head, slash, last = ref.rpartition("/")
    return f"{head}{slash}{last.split(':', 1)[0]}"


def platform_image(item: Image | ImageIndex, architecture: str) -> Image:
    """The image a client pulling `item` for `architecture` ends up with."""
    return item.for_platform(architecture) if isinstance(item, ImageIndex) else item


class PullClient(Protocol):
    """What every client test needs: pull, check what was pulled, forget it locally."""

    label: str
    fallback: str  # HOST:PORT (closed) where the client goes when the mirror fails

    def pull(self, ref: str, *, arch: str | None = None) -> None:
        """Pull `ref` (registry/repository:tag or @digest); raise AssertionError on failure."""

    def assert_holds(self, ref: str, item: Image | ImageIndex, image: Image) -> None:
        """Assert the client holds `image` (the platform image of `item`) under `ref`."""

    def forget_all(self) -> None:
        """Drop every image and blob the client holds, so the next pull fetches them all."""


def run(
    argv: Sequence[str], *, env: Mapping[str, str], what: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run a client command; with `check`, a non-zero exit raises AssertionError with stderr."""
    result = subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        env=dict(env),
        timeout=COMMAND_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{what}: `{' '.join(argv)}` exited with {result.returncode}:\n"
            f"{result.stderr}{result.stdout}"
        )
    return result


# podman ----------------------------------------------------------------------------


class PodmanClient:
    """podman (no daemon) on vfs storage in a temp folder, with `CONTAINERS_REGISTRIES_CONF`
    pointing at the registries.conf it is given and nothing read from the machine's config."""

    label = "podman"

    def __init__(self, binary: str, registries: str, *, fallback: str) -> None:
        self.binary = binary
        self.fallback = fallback
        self.state = short_tempdir("podman")
        for name in ("root", "runroot", "tmp", "home", "net"):
            (self.state / name).mkdir()
        self.registries_conf = self.state / "registries.conf"
        self.registries_conf.write_text(registries)
        self.policy = self.state / "policy.json"
        self.policy.write_text('{"default": [{"type": "insecureAcceptAnything"}]}\n')
        containers_conf = self.state / "containers.conf"
        containers_conf.write_text(
            f'[network]\nnetwork_config_dir = "{self.state / "net"}"\n'
            '\n[engine]\nevents_logger = "file"\ncgroup_manager = "cgroupfs"\n'
        )
        (self.state / "auth.json").write_text('{"auths": {}}\n')  # anonymous
        storage_conf = self.state / "storage.conf"
        storage_conf.write_text(
            f'[storage]\ndriver = "vfs"\nrunroot = "{self.state / "runroot"}"\n'
            f'graphroot = "{self.state / "root"}"\n'
        )
        self.env = child_env(
            {
                "CONTAINERS_REGISTRIES_CONF": str(self.registries_conf),
                "CONTAINERS_CONF": str(containers_conf),
                "CONTAINERS_STORAGE_CONF": str(storage_conf),
                "REGISTRY_AUTH_FILE": str(self.state / "auth.json"),
                "HOME": str(self.state / "home"),
                "XDG_RUNTIME_DIR": str(self.state / "home"),
                "TMPDIR": str(self.state / "tmp"),
            }
        )

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(
            [
                self.binary,
                "--root",
                str(self.state / "root"),
                "--runroot",
                str(self.state / "runroot"),
                "--storage-driver",
                "vfs",
                "--tmpdir",
                str(self.state / "tmp"),
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "file",
                *args,
            ],
            env=self.env,
            what="podman",
            check=check,
        )

    def pull(self, ref: str, *, arch: str | None = None) -> None:
        platform = ["--arch", arch] if arch else []
        self.run("pull", "--signature-policy", str(self.policy), *platform, ref)

    def inspect(self, ref: str) -> dict[str, Any]:
        info: list[dict[str, Any]] = json.loads(self.run("image", "inspect", ref).stdout)
        return info[0]

    def assert_holds(self, ref: str, item: Image | ImageIndex, image: Image) -> None:
        info = self.inspect(ref)
        config_hex = image.config.digest.removeprefix("sha256:")
        assert info["Id"] == config_hex, f"image id {info['Id']} != {config_hex}"
        assert info["Digest"] == item.digest, f"digest {info['Digest']} != {item.digest}"
        assert info["RootFS"]["Layers"] == [layer.diff_id for layer in image.layers]
        assert info["Architecture"] == image.platform.architecture
        assert f"{ref_name(ref)}@{item.digest}" in info["RepoDigests"], info["RepoDigests"]

    def forget_all(self) -> None:
        self.run("rmi", "--all", "--force")
        assert self.run("images", "--all", "--quiet").stdout.split() == []

    def close(self) -> None:
        if self.state.exists():
            remove_state(self.state)


# skopeo with a registries.conf ------------------------------------------------------------


class SkopeoClient:
    """skopeo copying `docker://<ref>` into a fresh `dir:` per pull, routed by a
    registries.conf given with `--registries-conf` (skopeo ignores the environment's)."""

    label = "skopeo"

    def __init__(self, skopeo: Skopeo, registries: str, out: Path, *, fallback: str) -> None:
        self.skopeo = skopeo
        self.fallback = fallback
        skopeo.registries_conf.write_text(registries)
        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        self.copies: dict[str, Path] = {}
        self._count = 0

    def pull(self, ref: str, *, arch: str | None = None) -> None:
        self._count += 1
        dest = self.out / f"copy-{self._count}"
        platform = ["--override-os", "linux", "--override-arch", arch] if arch else []
        self.skopeo.run(*platform, "copy", "--src-no-creds", f"docker://{ref}", f"dir:{dest}")
        self.copies[ref] = dest

    def assert_holds(self, ref: str, item: Image | ImageIndex, image: Image) -> None:
        assert_dir_image(self.copies[ref], image)

    def forget_all(self) -> None:
        self.copies.clear()

"""The Docker daemon and containerd as clients of the mirror, each in a temp folder.

Owns: dockerd with the README's daemon.json (driven by the docker CLI over its own
socket) and containerd with a version-2 config and the README's hosts.toml files (driven
by `ctr`): starting them, waiting until they answer, and reading back what they hold.
Stopping by pid and clean-up come from `daemonproc.Daemon`.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from .clients import daemon_json, hosts_toml, ref_name, run
from .daemonproc import Daemon, short_tempdir, stop_stray, unix_get
from .images import Image, ImageIndex
from .support import ManagedProcess, child_env, wait_until

# Docker daemon -------------------------------------------------------------------------


class DockerDaemon(Daemon):
    """dockerd (vfs, no networking) with the README's daemon.json for `mirror`, driven by
    the docker CLI over its own socket. Any route to Docker Hub goes through an HTTPS proxy
    at a closed port, so the daemon's silent fallback fails at once instead of succeeding.
    """

    label = "docker"

    def __init__(
        self, dockerd: str, docker: str, *, mirror: str, fallback: str, logdir: Path
    ) -> None:
        self.docker = docker
        self.fallback = fallback
        self.state = short_tempdir("dockerd")
        self.socket = self.state / "docker.sock"
        self.exec_root = self.state / "exec"
        config = json.loads(daemon_json(mirror))
        # Where dockerd 20.10 keeps its trust key (else /etc/docker/key.json); not in README.
        config["deprecated-key-path"] = str(self.state / "key.json")
        self.config_path = self.state / "daemon.json"
        self.config_path.write_text(json.dumps(config, indent=2))
        proxy = f"http://{fallback}"
        self.process = ManagedProcess(
            "dockerd",
            [
                dockerd,
                "--config-file",
                str(self.config_path),
                "--storage-driver",
                "vfs",
                "--iptables=false",
                "--ip-masq=false",
                "--bridge=none",
                "--data-root",
                str(self.state / "data"),
                "--exec-root",
                str(self.exec_root),
                "--pidfile",
                str(self.state / "docker.pid"),
                "-H",
                f"unix://{self.socket}",
            ],
            log=logdir / "dockerd.log",
            env={"HTTPS_PROXY": proxy, "HTTP_PROXY": proxy},
        )
        self.cli_env = child_env({"DOCKER_CONFIG": str(self.state / "cli")})
        self._containerd_pid: int | None = None

    def start(self, timeout: float = 30.0) -> None:
        """Start dockerd and wait until `GET /_ping` answers 200 on its socket."""
        self.process.start()

        def pinged() -> bool | None:
            answer = unix_get(self.socket, "/_ping")
            return True if answer is not None and answer.startswith(b"HTTP/1.0 200") else None

        wait_until(
            pinged, timeout=timeout, what="dockerd to answer /_ping", abort=self.process.exited
        )
        pidfile = self.exec_root / "containerd" / "containerd.pid"
        if pidfile.exists():
            self._containerd_pid = int(pidfile.read_text().strip())

    def _after_stop(self) -> None:
        # dockerd runs its own containerd and stops it on SIGTERM; after a SIGKILL it stays.
        if self._containerd_pid is not None:
            stop_stray(self._containerd_pid, str(self.exec_root))

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(
            [self.docker, "-H", f"unix://{self.socket}", *args],
            env=self.cli_env,
            what="docker",
            check=check,
        )

    def pull(self, ref: str, *, arch: str | None = None) -> None:
        platform = ["--platform", f"linux/{arch}"] if arch else []
        self.cli("pull", *platform, ref)

    def inspect(self, ref: str) -> dict[str, Any]:
        info: list[dict[str, Any]] = json.loads(self.cli("image", "inspect", ref).stdout)
        return info[0]

    def assert_holds(self, ref: str, item: Image | ImageIndex, image: Image) -> None:
        info = self.inspect(ref)
        assert info["Id"] == image.config.digest, f"image id {info['Id']} != {image.config.digest}"
        assert info["RootFS"]["Layers"] == [layer.diff_id for layer in image.layers]
        assert info["Architecture"] == image.platform.architecture
        # Docker spells Docker Hub names short: `e2e-docker@…`, `team/app@…`.
        name = ref_name(ref).removeprefix("docker.io/").removeprefix("library/")
        assert f"{name}@{item.digest}" in info["RepoDigests"], info["RepoDigests"]

    def forget_all(self) -> None:
        ids = self.cli("image", "ls", "--all", "--quiet").stdout.split()
        if ids:
            self.cli("image", "rm", "--force", *sorted(set(ids)))
        assert self.cli("image", "ls", "--all", "--quiet").stdout.split() == []


# containerd ---------------------------------------------------------------------------


class Containerd(Daemon):
    """containerd with a version-2 config in a temp folder (CRI disabled, own socket),
    driven by `ctr`, which reads registry hosts from `hosts_dir` (`<registry>/hosts.toml`).
    Images are unpacked with the native snapshotter, which needs no mounts.
    """

    label = "containerd"
    snapshotter = "native"

    def __init__(self, containerd: str, ctr: str, *, fallback: str, logdir: Path) -> None:
        self.ctr_binary = ctr
        self.fallback = fallback
        self.state = short_tempdir("containerd")
        self.socket = self.state / "containerd.sock"
        self.hosts_dir = self.state / "certs.d"
        self.hosts_dir.mkdir()
        self.config_path = self.state / "config.toml"
        self.config_path.write_text(
            "version = 2\n"
            f'root = "{self.state / "root"}"\n'
            f'state = "{self.state / "state"}"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            "\n[grpc]\n"
            f'  address = "{self.socket}"\n'
            "\n[ttrpc]\n"
            f'  address = "{self.socket}.ttrpc"\n'
            "\n[debug]\n"
            '  address = ""\n'
            "\n[metrics]\n"
            '  address = ""\n'
            '\n[plugins."io.containerd.internal.v1.opt"]\n'
            f'  path = "{self.state / "opt"}"\n'
        )
        self.process = ManagedProcess(
            "containerd",
            [containerd, "--config", str(self.config_path)],
            log=logdir / "containerd.log",
        )
        self.env = child_env({"HOME": str(self.state)})

    def start(self, timeout: float = 30.0) -> None:
        """Start containerd and wait until `ctr version` reaches it."""
        self.process.start()

        def answers() -> bool | None:
            if not self.socket.exists():
                return None
            return True if self.ctr("version", check=False).returncode == 0 else None

        wait_until(
            answers,
            timeout=timeout,
            what="containerd to answer `ctr version`",
            abort=self.process.exited,
            interval=0.1,
        )

    def add_registry(self, registry: str, mirror: str) -> None:
        """Write `hosts_dir/<registry>/hosts.toml` (the README's) sending pulls to `mirror`,
        with the registry's own `server` at the closed `fallback` address."""
        folder = self.hosts_dir / registry
        folder.mkdir(exist_ok=True)
        (folder / "hosts.toml").write_text(hosts_toml(f"https://{self.fallback}", mirror))

    def ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(
            [self.ctr_binary, "--address", str(self.socket), *args],
            env=self.env,
            what="ctr",
            check=check,
        )

    def pull(self, ref: str, *, arch: str | None = None) -> None:
        platform = ["--platform", f"linux/{arch}"] if arch else []
        self.ctr(
            "images",
            "pull",
            "--hosts-dir",
            str(self.hosts_dir),
            "--snapshotter",
            self.snapshotter,
            *platform,
            ref,
        )

    def images(self) -> dict[str, tuple[str, str]]:
        """`ctr images ls`: reference → (media type, digest)."""
        rows = self.ctr("images", "ls").stdout.splitlines()[1:]
        out = {}
        for row in rows:
            name, media_type, digest = row.split()[:3]
            out[name] = (media_type, digest)
        return out

    def content(self) -> set[str]:
        """`ctr content ls`: the digests of every blob in the content store."""
        return set(self.ctr("content", "ls", "--quiet").stdout.split())

    def assert_holds(self, ref: str, item: Image | ImageIndex, image: Image) -> None:
        images = self.images()
        assert images.get(ref) == (item.media_type, item.digest), f"ctr images ls: {images}"
        wanted = {item.digest, image.digest, *(blob.digest for blob in image.blobs)}
        held = self.content()
        assert wanted <= held, f"missing from the content store: {sorted(wanted - held)}"
        if isinstance(item, ImageIndex):
            others = {b.digest for i in item.images if i is not image for b in i.layers}
            assert not others & held, "layers of another platform were fetched"

    def forget_all(self) -> None:
        refs = list(self.images())
        if refs:
            self.ctr("images", "rm", "--sync", *refs)
        assert self.content() == set(), "garbage collection left blobs behind"

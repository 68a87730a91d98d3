"""The processes a benchmark run starts: the upstream (reference registry behind token
auth, seeded with generated images), and the three systems under test — the mirror,
the reference registry in proxy mode, and nginx serving the big blob's bytes.

Every server is a `LoopbackServer` from the e2e helpers (free port, log files,
stopped by pid); the caller registers each `stop` on an ExitStack. Nothing here
measures anything.
"""

from __future__ import annotations

import os
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.e2e.images import DOCKER_MANIFEST, RegistryClient, build_image
from tests.e2e.mirrorproc import MirrorProcess, UpstreamConfig
from tests.e2e.registry import Registry
from tests.e2e.support import LoopbackServer, ManagedProcess
from tests.e2e.tokenissuer import MIRROR_USER, SEEDER, TokenIssuer

BIG_REPOSITORY = "bench/big"
IMAGE_REPOSITORY = "bench/image"
TAG = "1"


@dataclass(frozen=True, slots=True)
class Seeded:
    """What the upstream holds: the big single-layer image's layer, and a multi-layer image."""

    big_digest: str
    big_size: int
    big_file: Path  # the same bytes, for nginx
    image_bytes: int  # config and layers of the multi-layer image

    @property
    def big_path(self) -> str:
        """The big layer's URL path, the same on every system (nginx included)."""
        return f"/v2/{BIG_REPOSITORY}/blobs/{self.big_digest}"

    @property
    def manifest_path(self) -> str:
        return f"/v2/{IMAGE_REPOSITORY}/manifests/{TAG}"

    @property
    def manifest_accept(self) -> str:
        return DOCKER_MANIFEST


@dataclass(frozen=True, slots=True)
class Upstream:
    issuer: TokenIssuer
    registry: Registry
    seeded: Seeded


def start_upstream(
    stack: ExitStack, binary: str, workdir: Path, *, big_size: int, layer_sizes: list[int]
) -> Upstream:
    """Start the token issuer and the upstream registry, and push the two images: one layer
    of `big_size` random bytes (gzip cannot shrink them), and one layer per `layer_sizes`."""
    issuer = stack.enter_context(TokenIssuer(_dir(workdir / "issuer"), users=[SEEDER, MIRROR_USER]))
    registry = Registry(binary, _dir(workdir / "upstream"), issuer)
    stack.callback(registry.stop)
    registry.start()
    seeder = RegistryClient(registry.url, (SEEDER.username, SEEDER.password))
    image = build_image(IMAGE_REPOSITORY, TAG, seed=7, layer_sizes=[[n] for n in layer_sizes])
    seeder.push(image)
    image_bytes = sum(blob.size for blob in image.blobs)
    del image
    # Files of at most 100 MB in the one layer: random.randbytes stops short of 256 MiB.
    files = [min(100_000_000, big_size - start) for start in range(0, big_size, 100_000_000)]
    big = build_image(BIG_REPOSITORY, TAG, seed=9, layer_sizes=[files])
    seeder.push(big)
    layer = big.layers[0]
    big_file = _dir(workdir / "bytes") / "big.blob"
    big_file.write_bytes(layer.data)
    seeded = Seeded(layer.digest, layer.size, big_file, image_bytes)
    return Upstream(issuer, registry, seeded)


def start_mirror(
    stack: ExitStack, executable: str, workdir: Path, upstream: Upstream
) -> MirrorProcess:
    """`mirror serve` on an empty cache in `workdir`, with the upstream's credentials."""
    user = MIRROR_USER
    upstreams = {"docker.io": UpstreamConfig(upstream.registry.url, user.username, user.password)}
    mirror = MirrorProcess(executable, _dir(workdir), upstreams, extra={"log": {"level": "info"}})
    stack.callback(mirror.stop)
    mirror.start()
    return mirror


class ReferenceProxy(LoopbackServer):
    """Debian's `docker-registry` (distribution 2.8) as a pull-through cache: `proxy:
    remoteurl` pointing at the upstream, with `username`/`password` for its token auth,
    filesystem storage in `workdir` and the in-memory blob descriptor cache."""

    def __init__(self, binary: str, workdir: Path, upstream: Upstream) -> None:
        super().__init__("reference proxy", ready_status=200)
        storage = _dir(workdir / "storage")
        config = {
            "version": "0.1",
            "log": {"level": "info", "formatter": "text"},
            "storage": {
                "filesystem": {"rootdirectory": str(storage)},
                "cache": {"blobdescriptor": "inmemory"},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {"addr": self.host, "secret": uuid.uuid4().hex},
            "proxy": {
                "remoteurl": upstream.registry.url,
                "username": MIRROR_USER.username,
                "password": MIRROR_USER.password,
            },
        }
        config_path = workdir / "config.yml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.process = ManagedProcess(
            "docker-registry proxy",
            [binary, "serve", str(config_path)],
            log=workdir / "registry.log",
            stdout_log=workdir / "access.log",
            cwd=workdir,
        )


def start_reference(
    stack: ExitStack, binary: str, workdir: Path, upstream: Upstream
) -> ReferenceProxy:
    proxy = ReferenceProxy(binary, _dir(workdir), upstream)
    stack.callback(proxy.stop)
    proxy.start()
    return proxy


class Nginx(LoopbackServer):
    """nginx in the foreground with its own config, `sendfile on`, serving the big blob's
    bytes at the same path as the registries (and `{}` at /v2/, its readiness probe).

    Started as root, its workers drop to nginx's default unprivileged user, so the
    served files are made world-readable.
    """

    def __init__(self, binary: str, workdir: Path, seeded: Seeded, workers: str) -> None:
        super().__init__("nginx", ready_status=200)
        root = _dir(workdir / "www")
        blob_dir = _dir(root / seeded.big_path.lstrip("/").rpartition("/")[0])
        os.link(seeded.big_file, blob_dir / seeded.big_digest)  # same temp folder: one disk
        (root / "v2" / "index.html").write_text("{}")
        workdir.parent.chmod(0o711)  # the run's temp folder: workers may pass, not list
        for path in (workdir, root, *root.rglob("*")):
            path.chmod(0o755 if path.is_dir() else 0o644)
        config_path = workdir / "nginx.conf"
        config_path.write_text(
            _NGINX_CONF.format(dir=workdir, root=root, host=self.host, workers=workers)
        )
        self.process = ManagedProcess(
            "nginx",
            [binary, "-p", str(workdir), "-c", str(config_path), "-e", str(workdir / "error.log")],
            log=workdir / "nginx.log",
            cwd=workdir,
        )


_NGINX_CONF = """\
daemon off;
worker_processes {workers};
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 65;
    access_log {dir}/access.log;
    client_body_temp_path {dir}/tmp-body;
    proxy_temp_path {dir}/tmp-proxy;
    fastcgi_temp_path {dir}/tmp-fastcgi;
    uwsgi_temp_path {dir}/tmp-uwsgi;
    scgi_temp_path {dir}/tmp-scgi;
    server {{
        listen {host};
        root {root};
        index index.html;
    }}
}}
"""


def start_nginx(
    stack: ExitStack, binary: str, workdir: Path, seeded: Seeded, workers: str
) -> Nginx:
    nginx = Nginx(binary, _dir(workdir), seeded, workers)
    stack.callback(nginx.stop)
    nginx.start()
    return nginx


def _dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path

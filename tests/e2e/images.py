"""Test images built without docker, and pushing them through a registry's v2 API.

Owns: deterministic layers (gzip-compressed tars of seeded random bytes), image configs,
Docker schema2 and OCI manifests, OCI indexes and Docker manifest lists, the set of
images the suite seeds, and a minimal token-auth v2 client that pushes them.
The descriptions returned (`Image`, `ImageIndex`) are what tests assert against.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import random
import re
import tarfile
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .support import Response, http_request

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
MANIFEST_TYPES = (OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST)

_CREATED = "2024-01-01T00:00:00Z"


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, slots=True)
class Blob:
    """A config or layer blob; `diff_id` is the digest of a layer's uncompressed tar."""

    media_type: str
    data: bytes = field(repr=False)
    diff_id: str | None = None

    @property
    def digest(self) -> str:
        return sha256_digest(self.data)

    @property
    def size(self) -> int:
        return len(self.data)

    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "size": self.size, "digest": self.digest}


@dataclass(frozen=True, slots=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    def as_json(self) -> dict[str, str]:
        out = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            out["variant"] = self.variant
        return out


AMD64 = Platform("linux", "amd64")
ARM64 = Platform("linux", "arm64", "v8")


@dataclass(frozen=True, slots=True)
class Image:
    """One single-platform image as pushed: the exact manifest bytes and its blobs."""

    repository: str  # full upstream name, e.g. "library/e2e-docker"
    tag: str | None  # None: pushed by digest only (an index's child)
    media_type: str
    manifest: bytes = field(repr=False)
    config: Blob
    layers: tuple[Blob, ...]
    platform: Platform

    @property
    def digest(self) -> str:
        return sha256_digest(self.manifest)

    @property
    def layer_digests(self) -> list[str]:
        return [layer.digest for layer in self.layers]

    @property
    def blobs(self) -> tuple[Blob, ...]:
        return (self.config, *self.layers)

    @property
    def short_name(self) -> str:
        """The name a Docker Hub user types: `library/` dropped."""
        return self.repository.removeprefix("library/")


@dataclass(frozen=True, slots=True)
class ImageIndex:
    """A multi-platform OCI index or Docker manifest list and the images it lists."""

    repository: str
    tag: str
    media_type: str
    manifest: bytes = field(repr=False)
    images: tuple[Image, ...]

    @property
    def digest(self) -> str:
        return sha256_digest(self.manifest)

    @property
    def short_name(self) -> str:
        return self.repository.removeprefix("library/")

    def for_platform(self, architecture: str) -> Image:
        """The listed image for `architecture`; raises KeyError when there is none."""
        for image in self.images:
            if image.platform.architecture == architecture:
                return image
        raise KeyError(architecture)


def _dumps(obj: Mapping[str, Any]) -> bytes:
    # Indented like Docker's own manifests: a mirror that re-serialises would change bytes.
    return json.dumps(obj, indent=3).encode()


def build_layer(seed: int, sizes: Sequence[int], *, media_type: str) -> Blob:
    """A gzip-compressed tar with one directory and a file of `size` random bytes per size.

    The same seed and sizes always give the same bytes (fixed mtimes, owners, gzip header).
    """
    rng = random.Random(seed)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        directory = tarfile.TarInfo(f"e2e-{seed}")
        directory.type, directory.mode, directory.mtime = tarfile.DIRTYPE, 0o755, 0
        tar.addfile(directory)
        for index, size in enumerate(sizes):
            info = tarfile.TarInfo(f"e2e-{seed}/file-{index}.bin")
            info.size, info.mode, info.mtime = size, 0o644, 0
            tar.addfile(info, io.BytesIO(rng.randbytes(size)))
    uncompressed = raw.getvalue()
    compressed = gzip.compress(uncompressed, compresslevel=6, mtime=0)
    return Blob(media_type, compressed, diff_id=sha256_digest(uncompressed))


def build_image(
    repository: str,
    tag: str | None,
    *,
    seed: int,
    layer_sizes: Sequence[Sequence[int]],
    oci: bool = False,
    platform: Platform = AMD64,
) -> Image:
    """An image of one layer per entry of `layer_sizes`, as Docker schema2 or OCI."""
    layer_type = OCI_LAYER if oci else DOCKER_LAYER
    layers = tuple(
        build_layer(seed * 100 + i, sizes, media_type=layer_type)
        for i, sizes in enumerate(layer_sizes)
    )
    config_json: dict[str, Any] = {
        "created": _CREATED,
        **platform.as_json(),
        "config": {
            "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"],
            "Cmd": ["/bin/true"],
            "Labels": {"e2e.image": f"{repository}:{tag or '-'}", "e2e.seed": str(seed)},
        },
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": [
            {"created": _CREATED, "created_by": f"e2e layer {i}"} for i in range(len(layers))
        ],
    }
    config = Blob(OCI_CONFIG if oci else DOCKER_CONFIG, _dumps(config_json))
    media_type = OCI_MANIFEST if oci else DOCKER_MANIFEST
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": config.descriptor(),
        "layers": [layer.descriptor() for layer in layers],
    }
    if oci:
        manifest["annotations"] = {"org.opencontainers.image.title": repository}
    return Image(repository, tag, media_type, _dumps(manifest), config, layers, platform)


def build_index(repository: str, tag: str, images: Sequence[Image], *, oci: bool) -> ImageIndex:
    """An OCI index (`oci=True`) or Docker manifest list over `images`."""
    media_type = OCI_INDEX if oci else DOCKER_LIST
    manifest = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": [
            {
                "mediaType": image.media_type,
                "size": len(image.manifest),
                "digest": image.digest,
                "platform": image.platform.as_json(),
            }
            for image in images
        ],
    }
    return ImageIndex(repository, tag, media_type, _dumps(manifest), tuple(images))


@dataclass(frozen=True, slots=True)
class SeededImages:
    """Everything the suite pushes to the upstream before any test runs."""

    docker: Image  # Docker schema2, 3 layers, library/
    oci: Image  # OCI manifest, 2 layers, library/
    oci_index: ImageIndex  # OCI index over OCI amd64 + arm64
    docker_list: ImageIndex  # Docker manifest list over schema2 amd64 + arm64
    namespaced: Image  # outside library/
    private: Image  # anonymous pulls are refused; needs the mirror's credentials

    @property
    def private_repositories(self) -> tuple[str, ...]:
        return (self.private.repository,)

    def all(self) -> tuple[Image | ImageIndex, ...]:
        return (
            self.docker,
            self.oci,
            self.oci_index,
            self.docker_list,
            self.namespaced,
            self.private,
        )


def standard_images() -> SeededImages:
    """The suite's images. Deterministic; one layer is a few MiB so blobs really stream."""
    small, medium, large = [300, 1200], [64 * 1024, 200 * 1024], [3 * 1024 * 1024]
    per_arch = {
        arch: (
            build_image(
                "library/e2e-index",
                None,
                seed=40 + n,
                layer_sizes=[small, medium],
                oci=True,
                platform=platform,
            ),
            build_image(
                "library/e2e-list",
                None,
                seed=50 + n,
                layer_sizes=[small, medium],
                platform=platform,
            ),
        )
        for n, (arch, platform) in enumerate((("amd64", AMD64), ("arm64", ARM64)))
    }
    return SeededImages(
        docker=build_image("library/e2e-docker", "1", seed=1, layer_sizes=[small, medium, large]),
        oci=build_image("library/e2e-oci", "1", seed=2, layer_sizes=[medium, small], oci=True),
        oci_index=build_index(
            "library/e2e-index", "1", [per_arch[a][0] for a in ("amd64", "arm64")], oci=True
        ),
        docker_list=build_index(
            "library/e2e-list", "1", [per_arch[a][1] for a in ("amd64", "arm64")], oci=False
        ),
        namespaced=build_image("team/app", "1", seed=3, layer_sizes=[small, medium]),
        private=build_image("corp/secret", "1", seed=4, layer_sizes=[small, medium]),
    )


# pushing ---------------------------------------------------------------------

_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """Split `Bearer realm="…",service="…",scope="…"` into ("bearer", {params})."""
    scheme, _, rest = header.strip().partition(" ")
    return scheme.lower(), dict(_CHALLENGE_PARAM.findall(rest))


class RegistryClient:
    """A v2 client for pushing and checking: answers Bearer challenges via the token realm.

    `credentials` (username, password) go to the token realm as Basic auth; None
    asks anonymously. Any non-success answer raises AssertionError with the body.
    """

    def __init__(self, base_url: str, credentials: tuple[str, str] | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.credentials = credentials
        self._tokens: dict[str, str] = {}
        self._last_token: str | None = None

    def request(
        self,
        method: str,
        path_or_url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
    ) -> Response:
        """Send a request, fetching a token and retrying once on a Bearer challenge."""
        url = urllib.parse.urljoin(self.base_url + "/", path_or_url)
        sent = dict(headers or {})
        if body and self._last_token is not None:
            # A large body sent without a token meets a 401 and a closed socket (broken
            # pipe); an upload's PUT carries the token its POST was granted.
            sent.setdefault("Authorization", f"Bearer {self._last_token}")
        response = http_request(method, url, headers=sent, body=body)
        challenge = response.header("WWW-Authenticate")
        if response.status != 401 or challenge is None:
            return response
        scheme, params = parse_challenge(challenge)
        if scheme != "bearer":
            raise AssertionError(f"unexpected challenge {challenge!r}")
        self._last_token = self.token(params)
        sent["Authorization"] = f"Bearer {self._last_token}"
        return http_request(method, url, headers=sent, body=body)

    def token(self, challenge: Mapping[str, str]) -> str:
        """A token for a challenge's realm/service/scope (cached per scope)."""
        key = f"{challenge.get('service')} {challenge.get('scope')}"
        if key not in self._tokens:
            query = {k: v for k, v in challenge.items() if k in ("service", "scope")}
            url = f"{challenge['realm']}?{urllib.parse.urlencode(query)}"
            headers = {}
            if self.credentials is not None:
                raw = ":".join(self.credentials).encode()
                headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
            response = http_request("GET", url, headers=headers)
            _expect(response, 200, f"token for {key}")
            self._tokens[key] = json.loads(response.body)["token"]
        return self._tokens[key]

    def push_blob(self, repository: str, blob: Blob) -> None:
        """Upload `blob` monolithically (POST, then PUT ?digest=) unless it is already there."""
        if self.request("HEAD", f"/v2/{repository}/blobs/{blob.digest}").status == 200:
            return
        started = self.request("POST", f"/v2/{repository}/blobs/uploads/", body=b"")
        _expect(started, 202, f"start upload to {repository}")
        location = started.header("Location")
        assert location, "upload started without a Location"
        separator = "&" if "?" in location else "?"
        target = f"{location}{separator}digest={urllib.parse.quote(blob.digest)}"
        done = self.request(
            "PUT", target, headers={"Content-Type": "application/octet-stream"}, body=blob.data
        )
        _expect(done, 201, f"upload {blob.digest} to {repository}")

    def push_manifest(self, repository: str, reference: str, media_type: str, data: bytes) -> None:
        """PUT manifest bytes; asserts the registry computed the same digest."""
        response = self.request(
            "PUT",
            f"/v2/{repository}/manifests/{reference}",
            headers={"Content-Type": media_type},
            body=data,
        )
        _expect(response, 201, f"put manifest {repository}:{reference}")
        digest = response.header("Docker-Content-Digest")
        assert digest == sha256_digest(data), f"registry says {digest} for {repository}"

    def push_image(self, image: Image) -> None:
        for blob in image.blobs:
            self.push_blob(image.repository, blob)
        reference = image.tag or image.digest
        self.push_manifest(image.repository, reference, image.media_type, image.manifest)

    def push_index(self, index: ImageIndex) -> None:
        for image in index.images:
            self.push_image(image)
        self.push_manifest(index.repository, index.tag, index.media_type, index.manifest)

    def push(self, item: Image | ImageIndex) -> None:
        if isinstance(item, ImageIndex):
            self.push_index(item)
        else:
            self.push_image(item)

    def get_manifest(self, repository: str, reference: str) -> Response:
        """GET a manifest accepting every manifest type."""
        accept = ", ".join(MANIFEST_TYPES)
        return self.request(
            "GET", f"/v2/{repository}/manifests/{reference}", headers={"Accept": accept}
        )


def _expect(response: Response, status: int, what: str) -> None:
    if response.status != status:
        raise AssertionError(
            f"{what}: expected {status}, got {response.status}: {response.body[:500]!r}"
        )

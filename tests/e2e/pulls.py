"""One pull by a real client through the mirror, checked from three sides.

Owns: `Rig` (a client, the mirror it pulls through, the upstream behind it) whose `pull`
returns what the mirror and the upstream answered meanwhile after checking what the
client holds; the assertions the client tests share; and the command line a user would
type for each client's pull, for docs/clients.md.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass

from .clients import PullClient, platform_image
from .images import Image, ImageIndex
from .mirrorlog import MirrorLog, MirrorRequest
from .mirrorproc import MirrorProcess
from .registry import AccessRecord, Registry


def host_architecture() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


@dataclass(frozen=True, slots=True)
class Pull:
    """One pull: the platform image the client should hold, and what the mirror and the
    upstream answered meanwhile."""

    image: Image
    mirror: list[MirrorRequest]
    upstream: list[AccessRecord]


@dataclass(frozen=True, slots=True)
class Rig:
    """A client, the mirror it pulls through and the upstream behind that mirror."""

    kind: str
    client: PullClient
    mirror: MirrorProcess
    log: MirrorLog
    upstream: Registry

    def pull(
        self,
        ref: str,
        item: Image | ImageIndex,
        *,
        arch: str | None = None,
        upstream: Registry | None = None,
    ) -> Pull:
        """Pull `ref`, check the client holds `item` (its `arch` image, default the host's),
        and check that the client's requests reached the mirror."""
        behind = upstream or self.upstream
        image = platform_image(item, arch or host_architecture())
        upstream_mark, mirror_mark = behind.mark(), self.log.mark()
        self.client.pull(ref, arch=arch)
        pull = Pull(
            image, self.log.requests_since(mirror_mark), behind.requests_since(upstream_mark)
        )
        self.client.assert_holds(ref, item, image)
        assert pull.mirror, f"the mirror logged no request for {self.kind} pulling {ref}"
        if self.kind == "containerd":
            registry = ref.split("/", 1)[0]
            unmarked = [r.target for r in pull.mirror if f"ns={registry}" not in r.query]
            assert unmarked == [], f"containerd requests without ?ns={registry}: {unmarked}"
        return pull


def assert_served(requests: list[MirrorRequest], image: Image, cache: str) -> None:
    """The mirror answered a GET for each of the image's blobs with 200 and `cache=`."""
    got = {r.reference: r for r in requests if r.method == "GET" and r.kind == "blob"}
    for blob in image.blobs:
        request = got.get(blob.digest)
        assert request is not None, f"the client never asked the mirror for {blob.digest}"
        assert (request.status, request.cache) == (200, cache), request


def assert_no_blob_upstream(records: list[AccessRecord]) -> None:
    assert [r for r in records if r.kind == "blob"] == [], "the mirror fetched blobs again"


def command(kind: str, ref: str, arch: str | None = None) -> str:
    """The command line a user would type for what `PullClient.pull` runs."""
    if kind == "docker":
        return f"docker pull {f'--platform linux/{arch} ' if arch else ''}{ref}"
    if kind == "containerd":
        flags = f"--platform linux/{arch} " if arch else ""
        return f"ctr images pull --hosts-dir /etc/containerd/certs.d {flags}{ref}"
    if kind == "podman":
        return f"podman pull {f'--arch {arch} ' if arch else ''}{ref}"
    return f"skopeo --registries-conf registries.conf copy docker://{ref} dir:out"

"""The mirror's access log as records: what a client asked the mirror, and how it was answered.

Owns: parsing the text access line (`METHOD PATH STATUS BYTESB DURATIONms cache=… upstream=…
client=… id=…`, after the logging prefix) out of a `MirrorProcess` log, and the mark/since
pair that says which requests a `with` body caused. A line is written after its response is
finished, so `MirrorLog` sends a barrier request and waits for its line before reading.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from .mirrorproc import MirrorProcess
from .support import http_status, wait_until

_BARRIER = "e2e-mirror-log-barrier"
_LINE = re.compile(
    r"mirror\.access: (?P<method>[A-Z]+) (?P<target>\S+) (?P<status>\d{3}) (?P<bytes>\S+)B "
    r"(?P<ms>[\d.]+)ms cache=(?P<cache>\S+) upstream=(?P<upstream>\S+) client=(?P<client>\S+) "
    r"id=(?P<id>\S+)$"
)
_V2_PATH = re.compile(r"^/v2/(?P<name>.+)/(?P<kind>manifests|blobs|tags)/(?P<ref>[^/]*)$")


@dataclass(frozen=True, slots=True)
class MirrorRequest:
    """One access-log line of the mirror."""

    method: str
    path: str
    query: str
    status: int
    cache: str  # hit, miss, stale or "-"
    upstream: str  # the upstream's routing name or "-"
    client: str

    @property
    def kind(self) -> str:
        """`base`, `manifest`, `blob`, `tags` or `other`."""
        if self.path in ("/v2", "/v2/"):
            return "base"
        match = _V2_PATH.match(self.path)
        if match is None:
            return "other"
        return {"manifests": "manifest", "blobs": "blob", "tags": "tags"}[match["kind"]]

    @property
    def tls_probe(self) -> bool:
        """A TLS ClientHello on the plain-HTTP port (podman and skopeo try TLS first on an
        `insecure` registry): aiohttp answers 400 and logs the method as UNKNOWN."""
        return self.method == "UNKNOWN" and self.status == 400

    @property
    def reference(self) -> str | None:
        """The tag or digest of a manifest or blob request."""
        match = _V2_PATH.match(self.path)
        return match["ref"] if match else None

    @property
    def target(self) -> str:
        return f"{self.path}?{self.query}" if self.query else self.path


def parse_mirror_log(text: str) -> list[MirrorRequest]:
    """The access lines of a mirror log (text format); other log lines are ignored."""
    records = []
    for line in text.splitlines():
        match = _LINE.search(line)
        if match is None:
            continue
        path, _, query = match["target"].partition("?")
        records.append(
            MirrorRequest(
                method=match["method"],
                path=path,
                query=query,
                status=int(match["status"]),
                cache=match["cache"],
                upstream=match["upstream"],
                client=match["client"],
            )
        )
    return records


class MirrorLog:
    """The requests a running mirror logged: `requests_since(mark())`, barriers left out."""

    def __init__(self, mirror: MirrorProcess) -> None:
        self.mirror = mirror

    def _text(self) -> str:
        return self.mirror.process.log_text(limit=1 << 40)  # all of it: marks count lines

    def _sync(self) -> list[MirrorRequest]:
        if not self.mirror.running:
            return parse_mirror_log(self._text())
        marker = uuid.uuid4().hex
        if http_status(f"{self.mirror.url}/v2/?{_BARRIER}={marker}") is None:
            raise RuntimeError(f"the mirror on {self.mirror.host} did not answer a log barrier")

        def logged() -> list[MirrorRequest] | None:
            records = parse_mirror_log(self._text())
            return records if any(marker in r.query for r in records) else None

        return wait_until(logged, timeout=10, what="the mirror's access log")

    def mark(self) -> int:
        """A position in the access log; see `requests_since`."""
        return len(self._sync())

    def requests_since(self, mark: int = 0) -> list[MirrorRequest]:
        """Requests the mirror answered after `mark()` returned (barriers left out)."""
        return [r for r in self._sync()[mark:] if _BARRIER not in r.query]

"""The real reference registry (distribution 2.8, Debian's `docker-registry`) as an upstream.

Owns: its config (filesystem storage and listener in a temp dir, token auth against a
`TokenIssuer`), starting it, waiting until it answers, stopping it by pid (also for
"upstream is down" tests), and reading its access log as (method, path, status) records.
Distribution writes the access log (combined log format) to stdout and everything else
to stderr; each goes to its own file in the work dir.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from .support import LoopbackServer, ManagedProcess, http_status, wait_until
from .tokenissuer import TokenIssuer

_BARRIER = "e2e-log-barrier"
_COMBINED = re.compile(
    r'^(?P<remote>\S+) \S+ \S+ \[[^\]]+\] "(?P<method>\S+) (?P<target>\S+) [^"]*" '
    r'(?P<status>\d{3}) (?P<size>\d+|-) "[^"]*" "(?P<agent>[^"]*)"'
)
_V2_PATH = re.compile(r"^/v2/(?P<name>.+)/(?P<kind>manifests|blobs|tags)/(?P<ref>[^/]*)$")


@dataclass(frozen=True, slots=True)
class AccessRecord:
    """One line of the registry's access log."""

    method: str
    path: str
    query: str
    status: int
    size: int | None
    user_agent: str

    @property
    def kind(self) -> str:
        """`base`, `manifest`, `blob`, `upload`, `tags`, `catalog` or `other`."""
        if self.path in ("/v2", "/v2/"):
            return "base"
        if self.path == "/v2/_catalog":
            return "catalog"
        if "/blobs/uploads" in self.path:
            return "upload"
        match = _V2_PATH.match(self.path)
        if match is None:
            return "other"
        return {"manifests": "manifest", "blobs": "blob", "tags": "tags"}[match["kind"]]

    @property
    def repository(self) -> str | None:
        match = _V2_PATH.match(self.path)
        return match["name"] if match else None

    @property
    def reference(self) -> str | None:
        """The tag or digest of a manifest or blob request."""
        match = _V2_PATH.match(self.path)
        return match["ref"] if match else None


def parse_access_log(text: str) -> list[AccessRecord]:
    """Parse combined-log-format lines; lines that are not access records are ignored."""
    records = []
    for line in text.splitlines():
        match = _COMBINED.match(line)
        if match is None:
            continue
        path, _, query = match["target"].partition("?")
        size = match["size"]
        records.append(
            AccessRecord(
                method=match["method"],
                path=path,
                query=query,
                status=int(match["status"]),
                size=None if size == "-" else int(size),
                user_agent=match["agent"],
            )
        )
    return records


def blob_fetches(records: list[AccessRecord]) -> list[AccessRecord]:
    """The GETs of blobs (what a cache must not repeat), whatever their status."""
    return [r for r in records if r.method == "GET" and r.kind == "blob"]


class Registry(LoopbackServer):
    """One reference-registry process with token auth, on 127.0.0.1 and a free port.

    `start()` waits until `/v2/` answers (401: it wants a token); `stop()` stops it
    by pid and keeps its storage, so `start()` again brings back the same content on
    the same port. Access records come from `requests_since(mark())`; `log_text()` is
    the registry's own log (stderr): errors, auth failures, request details.
    """

    def __init__(self, binary: str, workdir: Path, issuer: TokenIssuer) -> None:
        super().__init__("registry", ready_status=401)
        self.workdir = workdir
        self.issuer = issuer
        self.config_path = workdir / "config.yml"
        self.access_log_path = workdir / "access.log"
        self.process = ManagedProcess(
            "docker-registry",
            [binary, "serve", str(self.config_path)],
            log=workdir / "registry.log",
            stdout_log=self.access_log_path,
            cwd=workdir,
        )
        self._write_config()

    def _write_config(self) -> None:
        storage = self.workdir / "storage"
        storage.mkdir(exist_ok=True)
        config = {
            "version": "0.1",
            "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": False}},
            "storage": {
                "filesystem": {"rootdirectory": str(storage)},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {"addr": self.host, "secret": uuid.uuid4().hex},
            "auth": {
                "token": {
                    "realm": self.issuer.realm,
                    "service": self.issuer.service,
                    "issuer": self.issuer.issuer,
                    "rootcertbundle": str(self.issuer.bundle_path),
                }
            },
        }
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    @contextmanager
    def stopped(self) -> Iterator[None]:
        """Stop the registry for the body of a `with`, then start it again (same port, data)."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    # access log ----------------------------------------------------------

    def _read_records(self) -> list[AccessRecord]:
        try:
            text = self.access_log_path.read_text("utf-8", "replace")
        except FileNotFoundError:
            return []
        return parse_access_log(text)

    def _sync(self) -> list[AccessRecord]:
        """Every record written so far, barrier lines included.

        A running registry logs a request only after answering it, so a fresh
        barrier request is sent and awaited: every request answered before it
        is then in the file. A stopped registry's log is already complete.
        """
        if not self.running:
            return self._read_records()
        marker = uuid.uuid4().hex
        status = http_status(f"{self.url}/v2/?{_BARRIER}={marker}")
        if status is None:
            raise RuntimeError(f"the registry on {self.host} did not answer a log barrier")

        def barrier_logged() -> list[AccessRecord] | None:
            records = self._read_records()
            return records if any(marker in r.query for r in records) else None

        return wait_until(barrier_logged, timeout=10, what="the registry's access log")

    def mark(self) -> int:
        """A position in the access log; see `requests_since`."""
        return len(self._sync())

    def requests_since(self, mark: int = 0) -> list[AccessRecord]:
        """Requests the registry answered after `mark()` returned (barriers left out)."""
        return [r for r in self._sync()[mark:] if _BARRIER not in r.query]

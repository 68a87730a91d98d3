"""The mirror under test as a real process: `mirror serve -c config.yml` on a free port.

Owns: finding the installed `mirror` console script, writing its config (keys as in
DESIGN.md), starting it, waiting until `GET /v2/` answers 200, and stopping it by pid
with SIGTERM (a SIGKILL fallback is recorded, since a clean SIGTERM exit is required).
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .support import LoopbackServer, ManagedProcess


def find_mirror_executable() -> str | None:
    """The `mirror` console script of this interpreter's environment, else one on PATH."""
    beside = Path(sys.executable).parent / "mirror"
    if beside.is_file():
        return str(beside)
    return shutil.which("mirror")


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    """One entry of the mirror's `upstreams:` map."""

    url: str
    username: str | None = None
    password: str | None = None

    def as_yaml(self) -> dict[str, str]:
        out = {"url": self.url}
        if self.username is not None:
            out["username"] = self.username
        if self.password is not None:
            out["password"] = self.password
        return out


class MirrorProcess(LoopbackServer):
    """One `mirror serve` process with its own storage dir, config and log file, ready
    once `GET /v2/` answers 200 (see `LoopbackServer` for start, stop and the log).

    `extra` is merged into the top level of the config (e.g. `{"manifests":
    {"tag_ttl": "0s"}}`), so tests can vary settings without new plumbing.
    """

    def __init__(
        self,
        executable: str,
        workdir: Path,
        upstreams: Mapping[str, UpstreamConfig],
        *,
        default_upstream: str = "docker.io",
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__("mirror", ready_status=200)
        self.workdir = workdir
        self.storage = workdir / "storage"
        self.config_path = workdir / "config.yml"
        self.config: dict[str, Any] = {
            "listen": self.host,
            "storage": {"path": str(self.storage)},
            "upstreams": {name: up.as_yaml() for name, up in upstreams.items()},
            "default_upstream": default_upstream,
            "log": {"level": "debug"},
        }
        for key, value in (extra or {}).items():
            current = self.config.get(key)
            if isinstance(current, dict) and isinstance(value, Mapping):
                self.config[key] = {**current, **value}
            else:
                self.config[key] = value
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        self.process = ManagedProcess(
            "mirror",
            [executable, "serve", "-c", str(self.config_path)],
            log=workdir / "mirror.log",
            cwd=workdir,
        )

    @property
    def needed_sigkill(self) -> bool:
        """True when the last `stop()` had to SIGKILL: the mirror ignored SIGTERM."""
        return self.process.killed


StartMirror = Callable[..., MirrorProcess]
"""The `start_mirror` fixture: `(*, credentials=True, extra=None, upstreams=None)`."""

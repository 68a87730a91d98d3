"""Daemons run by the client tests: a short temp folder each, stopped by pid, nothing left.

Owns: `/tmp/e2e-<label>-XXXX` folders (unix socket paths stay under 108 bytes), undoing
mounts a daemon left behind, stopping a process the daemon started itself (by pid, after
checking its command line), a bare HTTP GET over a unix socket for readiness probes, and
`Daemon`, whose `close()` does all of that once the daemon is stopped.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from .support import ManagedProcess


def short_tempdir(label: str) -> Path:
    """A fresh folder `/tmp/e2e-<label>-XXXX` (short enough for unix sockets inside it)."""
    return Path(tempfile.mkdtemp(prefix=f"e2e-{label}-", dir="/tmp"))


def _mounts_under(root: Path) -> list[str]:
    prefix = str(root).rstrip("/") + "/"
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if point == str(root) or point.startswith(prefix):
                found.append(point)
    return found


def remove_state(root: Path) -> None:
    """Unmount whatever a daemon left mounted under `root` (deepest first), then delete it."""
    for point in sorted(_mounts_under(root), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)
    shutil.rmtree(root, ignore_errors=False)


def _alive_in(pid: int, marker: str) -> bool:
    """True while process `pid` runs and its command line mentions `marker` (not a reused pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode("utf-8", "replace")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z" and marker in cmdline


def stop_stray(pid: int, marker: str, grace: float = 10.0) -> bool:
    """Stop a process we did not spawn (a daemon's own child) by pid: SIGTERM, SIGKILL.
    Returns True when it had to be stopped at all."""
    if not _alive_in(pid, marker):
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while _alive_in(pid, marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive_in(pid, marker):
        os.kill(pid, signal.SIGKILL)
    return True


def unix_get(path: Path, target: str) -> bytes | None:
    """A bare HTTP/1.0 GET over a unix socket; None when nothing answers (for polling)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2.0)
            sock.connect(str(path))
            sock.sendall(f"GET {target} HTTP/1.0\r\nHost: daemon\r\n\r\n".encode())
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
            return b"".join(chunks)
    except OSError:
        return None


class Daemon:
    """A daemon child process with its state in a short temp folder; `close()` stops it by
    pid and removes the folder. Idempotent, safe from a finaliser after a failed test."""

    label: str
    process: ManagedProcess
    state: Path

    def close(self) -> None:
        try:
            self.process.stop(grace=15.0)
        finally:
            self._after_stop()
            if self.state.exists():
                remove_state(self.state)

    def _after_stop(self) -> None:
        """Stop what the daemon started itself; the default has nothing to do."""

    def log_text(self) -> str:
        return self.process.log_text()

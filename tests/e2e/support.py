"""Plumbing shared by every end-to-end helper: binaries, ports, polling, processes, HTTP.

Owns: the skip-or-fail rule for missing binaries (`MIRROR_E2E_REQUIRED=1` fails),
free loopback ports, deadline polling, child processes stopped by pid, a tiny
loopback-only HTTP client, and `LoopbackServer`: a server process on a free port that
is ready once `GET /v2/` answers a given status. Beyond that `/v2/` probe it knows
nothing about registries or the mirror.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

T = TypeVar("T")

_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


def e2e_required() -> bool:
    """True when missing end-to-end prerequisites must fail the run (CI) instead of skip."""
    return os.environ.get("MIRROR_E2E_REQUIRED", "") not in ("", "0", "false", "no")


def unavailable(reason: str) -> None:
    """Skip the current test, or fail it when `MIRROR_E2E_REQUIRED` is set. Never returns."""
    if e2e_required():
        pytest.fail(f"{reason} (MIRROR_E2E_REQUIRED is set)", pytrace=False)
    pytest.skip(reason)


def require_binary(name: str) -> str:
    """Return the absolute path of executable `name` on PATH, or skip/fail via `unavailable`."""
    found = shutil.which(name)
    if found is None:
        unavailable(f"{name!r} is not installed")
        raise AssertionError("unreachable")
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the caller binds it soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.05,
    abort: Callable[[], str | None] | None = None,
) -> T:
    """Call `probe` until it returns something other than None, and return that.

    Raises TimeoutError naming `what` after `timeout` seconds. `abort` is checked
    between tries; a non-None answer (e.g. "process exited with 1") raises
    RuntimeError at once instead of waiting out the deadline.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result is not None:
            return result
        if abort is not None and (reason := abort()) is not None:
            raise RuntimeError(f"gave up waiting for {what}: {reason}")
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for child processes: ours minus proxy settings, loopback never proxied."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in _PROXY_VARS}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost,::1"
    env.update(extra or {})
    return env


class ManagedProcess:
    """A child process whose stdout and stderr go to log files, stopped by its pid.

    `stop()` sends SIGTERM, waits `grace` seconds, then SIGKILLs; it is idempotent
    and safe to call from a finaliser after a failed test.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log: Path,
        stdout_log: Path | None = None,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log = log
        self.stdout_log = stdout_log or log
        self.cwd = cwd
        self.env = child_env(env)
        self.proc: subprocess.Popen[bytes] | None = None
        self.killed = False

    def start(self) -> None:
        """Start the process (appending to its logs). Raises RuntimeError if already running."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        self.killed = False
        with self.log.open("ab") as err, self.stdout_log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=err if self.stdout_log == self.log else out,
                stderr=err,
                cwd=self.cwd,
                env=self.env,
            )

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError(f"{self.name} was never started")
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def exited(self) -> str | None:
        """For `wait_until(abort=...)`: why the process is gone, or None while it runs."""
        if self.proc is None or self.proc.poll() is None:
            return None
        return f"{self.name} exited with status {self.proc.returncode}; log:\n{self.log_text()}"

    def stop(self, grace: float = 10.0) -> int | None:
        """Stop the process by pid: SIGTERM, wait `grace`, SIGKILL. Returns the exit status."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.killed = True
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=grace)
        return proc.returncode

    def kill(self) -> None:
        """SIGKILL the process by pid (a crash, no clean-up of its own) and reap it."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            raise RuntimeError(f"{self.name} is not running")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def log_text(self, limit: int = 200_000) -> str:
        """The tail of the process log (stderr, and stdout when it shares the file)."""
        try:
            data = self.log.read_bytes()
        except FileNotFoundError:
            return ""
        return data[-limit:].decode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


def http_request(
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = 30.0,
) -> Response:
    """One HTTP/1.1 request to a loopback URL; never follows redirects, never uses proxies.

    Returns any status (no exception for 4xx/5xx); raises OSError when nothing answers.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(f"end-to-end helpers only talk plain HTTP on loopback, not {url}")
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    try:
        conn.request(method, target, body=body, headers=dict(headers or {}))
        resp = conn.getresponse()
        return Response(resp.status, resp.headers, resp.read())
    finally:
        conn.close()


def http_status(url: str) -> int | None:
    """GET `url` and return the status, or None when the connection fails (for polling)."""
    try:
        return http_request("GET", url, timeout=2.0).status
    except OSError:
        return None


class LoopbackServer:
    """A server child process on 127.0.0.1 and a free port, ready once `GET /v2/` answers
    `ready_status` (the mirror: 200; a token-auth registry: 401).

    A subclass calls `__init__` first (its config needs `host`), then sets `process`.
    `stop()` keeps the port, so `start()` again brings the server back at the same address.
    """

    process: ManagedProcess

    def __init__(self, label: str, *, ready_status: int) -> None:
        self.label = label
        self.ready_status = ready_status
        self.port = free_port()

    @property
    def host(self) -> str:
        """`127.0.0.1:PORT`, as image references spell it."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def start(self, timeout: float = 30.0) -> None:
        """Start and wait until `GET /v2/` answers `ready_status`. If the process exits
        (RuntimeError with its log) or the deadline passes (TimeoutError), it is stopped."""
        what = f"the {self.label} on {self.host} to answer GET /v2/ with {self.ready_status}"
        self.process.start()
        try:
            wait_until(
                lambda: True if http_status(f"{self.url}/v2/") == self.ready_status else None,
                timeout=timeout,
                what=what,
                abort=self.process.exited,
            )
        except BaseException:
            self.process.stop()
            raise

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM by pid, SIGKILL after `grace`; idempotent. Returns the exit status."""
        return self.process.stop(grace)

    @property
    def running(self) -> bool:
        return self.process.running

    def log_text(self) -> str:
        """The process's log: stderr, and stdout too unless it has its own log file."""
        return self.process.log_text()

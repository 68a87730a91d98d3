"""The Docker image's recipe, checked without Docker (no base image can be pulled here).

The Dockerfile is read for what the image promises (slim base, non-root user, volume,
port, health check, entry point) and linted with hadolint when it is installed. The slow
test then builds the same steps: a build context filtered by `.dockerignore`, the build
stage's COPYs, `pip wheel`, the wheel installed into a fresh virtualenv, and
`mirror serve` run from it as ENTRYPOINT and CMD say, with the image's HEALTHCHECK
command asked before and after a SIGTERM. Every process started is stopped by its pid.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import closed_port_url
from tests.e2e.support import (
    ManagedProcess,
    free_port,
    http_request,
    http_status,
    require_binary,
    wait_until,
)

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
STORAGE = "/var/lib/mirror"


@dataclass(slots=True)
class Stage:
    """One FROM section of a Dockerfile: its base, name and instructions in order."""

    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def one(self, keyword: str) -> str:
        found = self.all(keyword)
        assert len(found) == 1, f"expected one {keyword} in stage {self.name}, got {found}"
        return found[0]


def stages(text: str) -> list[Stage]:
    """The Dockerfile's stages; continuation lines joined, comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    out: list[Stage] = []
    for line in lines:
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            base, _, name = re.sub(r"--platform=\S+\s+", "", args).partition(" AS ")
            out.append(Stage(base.strip(), name.strip() or None))
        else:
            assert out, f"{keyword} before FROM"
            out[-1].instructions.append((keyword, args))
    return out


def exec_form(args: str) -> list[str]:
    """A JSON-array (exec form) argument list; shell form is refused."""
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def env_of(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for args in stage.all("ENV"):
        for key, value in re.findall(r"(\w+)=(\S+)", args):
            env[key] = value
    return env


def healthcheck_command(stage: Stage) -> list[str]:
    args = stage.one("HEALTHCHECK")
    _, _, command = args.partition("CMD ")
    assert command, "HEALTHCHECK needs CMD"
    return exec_form(command)


def test_the_dockerfile_builds_a_small_non_root_image() -> None:
    build, final = stages(DOCKERFILE.read_text())
    assert build.base == final.base == "python:3.11-slim"
    assert build.name == "build" and final.name is None
    assert "pip wheel" in build.one("RUN")
    # The runtime installs the wheel (its runtime dependencies only) from the build stage.
    install = final.one("RUN")
    assert "from=build" in install and re.search(r"pip install /wheels/mirror-\S*\.whl", install)
    assert "[test]" not in install
    user = final.one("USER")
    assert re.fullmatch(r"[1-9]\d*(:\d+)?", user), "USER must be numeric and not root"
    assert exec_form(final.one("VOLUME")) == [STORAGE]
    assert final.one("EXPOSE") == "5000"
    env = env_of(final)
    assert env["MIRROR_LISTEN"] == "0.0.0.0:5000"
    assert env["MIRROR_STORAGE_PATH"] == STORAGE
    assert exec_form(final.one("ENTRYPOINT")) == ["mirror"]
    assert exec_form(final.one("CMD")) == ["serve"]
    probe = healthcheck_command(final)
    assert probe[:2] == ["python", "-c"] and "/healthz" in probe[2]


def test_hadolint_finds_nothing() -> None:
    hadolint = require_binary("hadolint")
    result = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


# -- the same steps without Docker -------------------------------------------------------


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether `.dockerignore` keeps `path` (relative, with /) out of the build context:
    the last pattern that matches the path or a folder above it decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    verdict = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        glob = pattern.removeprefix("!").strip("/")
        regex = re.escape(glob).replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*")
        regex = regex.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        if any(re.fullmatch(regex, prefix) for prefix in prefixes):
            verdict = not negate
    return verdict


def dockerignore() -> list[str]:
    lines = (line.strip() for line in DOCKERIGNORE.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def test_the_build_context_holds_the_package_and_nothing_else() -> None:
    patterns = dockerignore()
    for kept in ("pyproject.toml", "README.md", "mirror/__init__.py", "mirror/storage/disk.py"):
        assert not ignored(kept, patterns), kept
    for left_out in (".git/config", ".venv/bin/python", "tests/conftest.py", "mirror-data/x",
                     "mirror/__pycache__/app.cpython-311.pyc", ".mypy_cache/x", "Dockerfile"):
        assert ignored(left_out, patterns), left_out


def files_under(source: Path) -> Iterator[Path]:
    if source.is_file():
        yield source
    elif source.is_dir():
        yield from (p for p in sorted(source.rglob("*")) if p.is_file())


def lay_out_build_stage(stage: Stage, into: Path) -> Path:
    """Copy what the stage's COPY instructions take from the build context (the work
    tree less `.dockerignore`) to `into`; returns the stage's WORKDIR there."""
    patterns = dockerignore()
    workdir = into / stage.one("WORKDIR").lstrip("/")
    workdir.mkdir(parents=True)
    for args in stage.all("COPY"):
        assert "--from" not in args, "the build stage copies from the context only"
        *sources, dest = args.split()
        for source in sources:
            copied = 0
            for path in files_under(ROOT / source):
                relative = path.relative_to(ROOT).as_posix()
                if ignored(relative, patterns):
                    continue
                inside = path.relative_to(ROOT / source) if (ROOT / source).is_dir() else Path(
                    path.name)
                target = workdir / dest / inside
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
                copied += 1
            assert copied, f"COPY {source}: nothing in the build context"
    return workdir


def run(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, f"{argv} exited {result.returncode}:\n{result.stderr[-4000:]}"
    return result


@pytest.mark.slow
def test_the_wheel_installs_into_a_fresh_venv_and_serves(tmp_path: Path) -> None:
    build, final = stages(DOCKERFILE.read_text())
    source = lay_out_build_stage(build, tmp_path / "context")
    wheels = tmp_path / "wheels"
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(wheels),
         str(source)], timeout=300)
    (wheel,) = wheels.glob("mirror-*.whl")
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], timeout=120)
    python = str(venv / "bin" / "python")
    run([python, "-m", "pip", "install", str(wheel)], timeout=600)
    run([python, "-m", "pip", "check"], timeout=60)
    # Runtime dependencies only: the test extra stays out of the image.
    dev = subprocess.run([python, "-c", "import pytest"], capture_output=True, timeout=60)
    assert dev.returncode != 0, "pytest came with the wheel"

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    entrypoint = exec_form(final.one("ENTRYPOINT")) + exec_form(final.one("CMD"))
    argv = [str(venv / "bin" / entrypoint[0]), *entrypoint[1:],
            "--listen", f"127.0.0.1:{port}", "--storage", str(tmp_path / "storage"),
            "--upstream", closed_port_url()]
    mirror = ManagedProcess("mirror", argv, log=tmp_path / "mirror.log", cwd=tmp_path)
    for key in [key for key in mirror.env if key.startswith("MIRROR_")]:
        del mirror.env[key]  # the flags alone configure it
    probe = healthcheck_command(final)
    probe_env = {**os.environ, "MIRROR_LISTEN": f"127.0.0.1:{port}"}
    probe_argv = [python if probe[0] == "python" else probe[0], *probe[1:]]
    try:
        mirror.start()
        wait_until(lambda: http_status(f"{base}/healthz") == 200 or None, timeout=60,
                   what="GET /healthz to answer 200", abort=mirror.exited)
        version = http_request("GET", f"{base}/v2/")
        assert version.status == 200, version.body
        assert version.header("Docker-Distribution-API-Version") == "registry/2.0"
        assert http_request("GET", f"{base}/readyz").status == 200
        pull = http_request("GET", f"{base}/v2/library/alpine/manifests/3.20")
        assert pull.status == 503, pull.body
        assert json.loads(pull.body)["errors"][0]["code"] == "UNAVAILABLE"
        scrape = http_request("GET", f"{base}/metrics")
        assert scrape.status == 200
        text = scrape.body.decode()
        assert re.search(r'mirror_upstream_requests_total\{[^}]*code="error"[^}]*\} [1-9]', text)
        assert "process_resident_memory_bytes" in text
        healthy = subprocess.run(probe_argv, env=probe_env, capture_output=True, timeout=30)
        assert healthy.returncode == 0, healthy.stderr
        assert mirror.stop(grace=15) == 0, mirror.log_text()
        assert not mirror.killed, "SIGTERM did not stop it; it was killed"
        down = subprocess.run(probe_argv, env=probe_env, capture_output=True, timeout=30)
        assert down.returncode != 0, "the health check passed with the mirror stopped"
    finally:
        mirror.stop()

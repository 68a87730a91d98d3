"""Fixtures for end-to-end tests: a token issuer, the reference registry seeded with the
suite's images (once per session) and a `seeder` client for tests that push their own, and
a fresh mirror process per test (`start_mirror`; `start_through` adds skopeo pulling
through it).

A missing binary skips, or fails when `MIRROR_E2E_REQUIRED=1` (CI). Every process is
stopped by pid at teardown; on failure the mirror's log and the upstream's log lines
written during the test are attached to the report.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from .images import RegistryClient, SeededImages, standard_images
from .mirrorproc import MirrorProcess, StartMirror, UpstreamConfig, find_mirror_executable
from .registry import Registry
from .skopeo import Skopeo
from .support import require_binary, unavailable
from .through import StartThrough, Through
from .tokenissuer import MIRROR_USER, SEEDER, TokenIssuer

_REPORT_LOGS = pytest.StashKey[list[tuple[str, Callable[[], str]]]]()


def attach_log(request: pytest.FixtureRequest, title: str, read: Callable[[], str]) -> None:
    """Show `read()` under `title` in the report if this test fails (also in teardown)."""
    request.node.stash.setdefault(_REPORT_LOGS, []).append((title, read))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        for title, read in item.stash.get(_REPORT_LOGS, []):
            try:
                text = read()
            except OSError as exc:
                text = f"<unreadable: {exc}>"
            report.sections.append((title, text or "<empty>"))
    return report


def _tail_from(path: Path, offset: int) -> Callable[[], str]:
    def read() -> str:
        with path.open("rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", "replace")

    return read


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


# session: binaries, issuer, upstream -------------------------------------------------


@pytest.fixture(scope="session")
def registry_binary() -> str:
    return require_binary("docker-registry")


@pytest.fixture(scope="session")
def skopeo_binary() -> str:
    return require_binary("skopeo")


@pytest.fixture(scope="session")
def mirror_executable() -> str:
    found = find_mirror_executable()
    if found is None:
        unavailable("the `mirror` console script is not installed (pip install -e '.[test]')")
        raise AssertionError("unreachable")
    return found


@pytest.fixture(scope="session")
def seeded_images() -> SeededImages:
    return standard_images()


@pytest.fixture(scope="session")
def token_issuer(
    tmp_path_factory: pytest.TempPathFactory, seeded_images: SeededImages
) -> Iterator[TokenIssuer]:
    issuer = TokenIssuer(
        tmp_path_factory.mktemp("token-issuer"),
        users=[SEEDER, MIRROR_USER],
        private=seeded_images.private_repositories,
    )
    with issuer:
        yield issuer


@pytest.fixture(scope="session")
def upstream(
    registry_binary: str,
    token_issuer: TokenIssuer,
    seeded_images: SeededImages,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Registry]:
    """The reference registry behind token auth, seeded with `seeded_images`."""
    registry = Registry(registry_binary, tmp_path_factory.mktemp("upstream"), token_issuer)
    registry.start()
    try:
        seeder = RegistryClient(registry.url, (SEEDER.username, SEEDER.password))
        for item in seeded_images.all():
            seeder.push(item)
        yield registry
    finally:
        registry.stop()


@pytest.fixture(scope="session")
def seeder(upstream: Registry) -> RegistryClient:
    """A client of `upstream` that may push: for tests that bring images of their own."""
    return RegistryClient(upstream.url, (SEEDER.username, SEEDER.password))


# per test: mirror and clients ------------------------------------------------------


@pytest.fixture
def start_mirror(
    request: pytest.FixtureRequest,
    mirror_executable: str,
    upstream: Registry,
    tmp_path: Path,
) -> Iterator[StartMirror]:
    """A factory: `start_mirror(credentials=True, extra=None, upstreams=None)` starts a
    mirror and returns it once `GET /v2/` is 200.

    By default its only upstream is `upstream`, named `docker.io` (the default route);
    `credentials` gives it the upstream user that may pull the private repository.
    `upstreams` replaces that map entirely (e.g. a second registry for `?ns=` routing);
    `extra` is merged into the config. All mirrors stop at teardown; one that ignores
    SIGTERM fails the test.
    """
    started: list[MirrorProcess] = []
    for path in (upstream.access_log_path, upstream.process.log):
        attach_log(request, f"upstream {path.name} during this test", _tail_from(path, _size(path)))

    def start(
        *,
        credentials: bool = True,
        extra: Mapping[str, Any] | None = None,
        upstreams: Mapping[str, UpstreamConfig] | None = None,
    ) -> MirrorProcess:
        if upstreams is None:
            user = MIRROR_USER if credentials else None
            upstreams = {
                "docker.io": UpstreamConfig(
                    upstream.url,
                    username=user.username if user else None,
                    password=user.password if user else None,
                )
            }
        workdir = tmp_path / f"mirror-{len(started)}"
        workdir.mkdir()
        mirror = MirrorProcess(mirror_executable, workdir, upstreams, extra=extra)
        started.append(mirror)
        attach_log(request, f"mirror log ({workdir.name})", mirror.log_text)
        mirror.start()
        return mirror

    yield start
    unclean = []
    for mirror in started:
        mirror.stop()
        if mirror.needed_sigkill:
            unclean.append(mirror.host)
    if unclean:
        pytest.fail(f"mirror on {', '.join(unclean)} ignored SIGTERM and was killed")


@pytest.fixture
def mirror(start_mirror: StartMirror) -> MirrorProcess:
    """A fresh mirror (empty cache) with upstream credentials, in front of `upstream`."""
    return start_mirror()


@pytest.fixture
def skopeo(skopeo_binary: str, tmp_path: Path) -> Skopeo:
    return Skopeo(skopeo_binary, tmp_path / "skopeo")


@pytest.fixture
def start_through(
    start_mirror: StartMirror, skopeo: Skopeo, upstream: Registry, tmp_path: Path
) -> StartThrough:
    """`start_mirror(**kwargs)`, returned as a `Through` with skopeo pulling through it."""
    return lambda **kwargs: Through(start_mirror(**kwargs), skopeo, upstream, tmp_path)


@pytest.fixture
def through(start_through: StartThrough) -> Through:
    """skopeo pulling through a fresh mirror (empty cache, upstream credentials)."""
    return start_through()

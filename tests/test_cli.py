"""The `mirror` command line: check-config, serve's hand-off to the app, logging set-up."""

from __future__ import annotations

import json
import logging
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from mirror.cli import main
from mirror.config import LogSettings, Settings
from mirror.logs import configure_logging

GOOD = (
    "listen: 127.0.0.1:5050\n"
    "upstreams:\n"
    "  docker.io: {username: bob, password: hunter2}\n"
    "  ghcr.io: {url: 'https://ghcr.io'}\n"
)
VARIABLES = (
    "MIRROR_CONFIG",
    "MIRROR_LISTEN",
    "MIRROR_UPSTREAM",
    "MIRROR_STORAGE_PATH",
    "MIRROR_MAX_SIZE",
)
BAD = "listen: nowhere\nstorage: {max_size: lots}\nlog: {colour: red}\n"


@pytest.fixture(autouse=True)
def clean(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh working folder and none of the mirror's variables from the outer shell."""
    monkeypatch.chdir(tmp_path)
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def app_runs(monkeypatch: pytest.MonkeyPatch) -> list[Settings]:
    """Stand-in for mirror.app: records the settings `serve` hands over."""
    runs: list[Settings] = []
    fake = types.ModuleType("mirror.app")
    fake.run = runs.append  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "mirror.app", fake)
    return runs


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


def test_check_config_prints_effective_settings_masked(capsys: pytest.CaptureFixture[str]) -> None:
    Path("mirror.yml").write_text(GOOD)
    assert main(["check-config", "-c", "mirror.yml"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert "hunter2" not in out
    shown = yaml.safe_load(out)
    assert shown["listen"] == "127.0.0.1:5050"
    assert shown["upstreams"]["docker.io"]["password"] == "***"
    assert shown["upstreams"]["docker.io"]["username"] == "bob"
    assert shown["storage"]["max_size"] == "20GiB"


def test_check_config_reports_each_problem_and_exits_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    Path("mirror.yml").write_text(BAD)
    assert main(["check-config", "-c", "mirror.yml"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert [line.split(":", 2)[1].strip() for line in lines] == [
        "listen",
        "storage.max_size",
        "log.colour",
    ]
    assert all(line.startswith("mirror: ") for line in lines)


def test_check_config_missing_file_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", "-c", "absent.yml"]) == 2
    assert capsys.readouterr().err == "mirror: absent.yml: config file not found\n"


def test_check_config_applies_flags_and_env(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    Path("mirror.yml").write_text(GOOD)
    monkeypatch.setenv("MIRROR_CONFIG", "mirror.yml")
    monkeypatch.setenv("MIRROR_MAX_SIZE", "5GiB")
    monkeypatch.setenv("MIRROR_LISTEN", "127.0.0.1:6000")
    argv = ["check-config", "--listen", "[::1]:7000", "--upstream", "http://127.0.0.1:9/"]
    assert main([*argv, "--storage", "cache"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["listen"] == "[::1]:7000"
    assert shown["storage"]["path"] == "cache"
    assert shown["storage"]["max_size"] == "5GiB"
    assert shown["upstreams"]["docker.io"]["url"] == "http://127.0.0.1:9"
    assert shown["upstreams"]["ghcr.io"]["url"] == "https://ghcr.io"


def test_serve_hands_loaded_settings_to_the_app(
    app_runs: list[Settings], root_logger: logging.Logger
) -> None:
    Path("mirror.yml").write_text(GOOD)
    assert main(["serve", "-c", "mirror.yml", "--max-size", "1GiB", "--storage", "data"]) == 0
    [settings] = app_runs
    assert (settings.host, settings.port) == ("127.0.0.1", 5050)
    assert settings.storage.path == Path("data")
    assert settings.storage.max_size == 1024**3
    assert root_logger.level == logging.INFO


def test_serve_without_config_runs_on_defaults(
    app_runs: list[Settings], root_logger: logging.Logger
) -> None:
    assert main(["serve"]) == 0
    assert app_runs == [Settings()]


def test_serve_refuses_bad_config_before_starting(
    app_runs: list[Settings], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "--listen", "localhost:99999"]) == 2
    assert app_runs == []
    assert capsys.readouterr().err == (
        "mirror: listen (from --listen): port 99999 is out of range 1-65535\n"
    )


@pytest.mark.parametrize("argv", [[], ["bogus"], ["serve", "--no-such-flag"]])
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert capsys.readouterr().err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--help"]) == 0
    assert "--max-size" in capsys.readouterr().out


def test_json_logging_writes_one_object_per_line(
    root_logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(LogSettings(level="warning", format="json"))
    configure_logging(LogSettings(level="warning", format="json"))  # replaces, not adds
    logging.getLogger("mirror.test").info("hidden")
    logging.getLogger("mirror.test").warning("upstream %s is slow", "ghcr.io")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["level"] == "WARNING"
    assert entry["logger"] == "mirror.test"
    assert entry["message"] == "upstream ghcr.io is slow"
    assert entry["time"].endswith("+00:00")


def test_text_logging_format(
    root_logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(LogSettings(level="debug", format="text"))
    logging.getLogger("mirror.test").debug("cache at %s", "./mirror-data")
    line = capsys.readouterr().err.strip()
    assert line.endswith(" DEBUG mirror.test: cache at ./mirror-data")

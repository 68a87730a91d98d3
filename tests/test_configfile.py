"""Loading settings end to end: ${VAR}, precedence, validation, describe(), the example."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from mirror.cliconfig import describe
from mirror.config import ConfigError, Overrides, Settings, StorageSettings, UpstreamSettings
from mirror.configfile import load

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.yml"
GiB = 1024**3


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Relative paths (the default ./mirror-data) resolve inside a fresh folder."""
    monkeypatch.chdir(tmp_path)


def config(text: str) -> Path:
    path = Path("config.yml")
    path.write_text(text)
    return path


def problems(
    text: str, env: Mapping[str, str] | None = None, overrides: Overrides | None = None
) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(config(text), env or {}, overrides or Overrides())
    return caught.value.problems


def test_no_file_gives_the_built_in_defaults() -> None:
    assert load(None, {}, Overrides()) == Settings()


def test_empty_file_gives_the_built_in_defaults() -> None:
    assert load(config(""), {}, Overrides()) == Settings()


def test_file_values_reach_settings() -> None:
    settings = load(
        config(
            "listen: '[::1]:6000'\n"
            "storage: {path: cache, max_size: 1.5GB}\n"
            "upstreams:\n"
            "  ghcr.io: {url: 'https://ghcr.io/', connect_timeout: 500ms, retries: 0}\n"
            "manifests: {tag_ttl: 1h, serve_stale: false, negative_ttl: 0}\n"
            "metrics: {enabled: false}\n"
            "log: {level: DEBUG, format: json}\n"
        ),
        {},
        Overrides(),
    )
    assert (settings.host, settings.port) == ("::1", 6000)
    assert settings.storage == StorageSettings(Path("cache"), 1_500_000_000)
    assert settings.upstreams == {
        "ghcr.io": UpstreamSettings("ghcr.io", "https://ghcr.io", connect_timeout=0.5, retries=0)
    }
    assert settings.default_upstream == "ghcr.io"  # the only upstream
    assert settings.manifests.tag_ttl == 3600.0
    assert not settings.manifests.serve_stale
    assert settings.manifests.negative_ttl == 0.0
    assert not settings.metrics.enabled
    assert (settings.log.level, settings.log.format) == ("debug", "json")


def test_port_only_listens_on_all_interfaces() -> None:
    settings = load(None, {}, Overrides(listen=":8080"))
    assert (settings.host, settings.port) == ("0.0.0.0", 8080)


def test_undefined_variable_names_the_key() -> None:
    found = problems("upstreams:\n  ghcr.io: {url: 'https://ghcr.io', password: '${TOKEN}'}\n")
    assert found[0] == (
        "upstreams.ghcr.io.password: environment variable TOKEN is not set "
        "(write ${TOKEN:-default} to give a default)"
    )


def test_empty_credentials_mean_anonymous() -> None:
    settings = load(
        config("upstreams:\n  docker.io: {username: '${U:-}', password: '${P:-}'}\n"),
        {},
        Overrides(),
    )
    assert settings.upstreams["docker.io"].username is None
    assert settings.upstreams["docker.io"].password is None


FILE = "listen: 127.0.0.1:1000\nstorage: {path: from-file, max_size: 1GiB}\n"
ENV = {
    "MIRROR_LISTEN": "127.0.0.1:2000",
    "MIRROR_STORAGE_PATH": "from-env",
    "MIRROR_MAX_SIZE": "2GiB",
    "MIRROR_UPSTREAM": "http://env.example:5000",
}
FLAGS = Overrides(
    listen="127.0.0.1:3000", storage="from-flag", max_size="3GiB", upstream="http://flag.example"
)


@pytest.mark.parametrize(
    ("env", "overrides", "port", "path", "size", "url"),
    [
        ({}, Overrides(), 1000, "from-file", 1, "https://registry-1.docker.io"),
        (ENV, Overrides(), 2000, "from-env", 2, "http://env.example:5000"),
        (ENV, FLAGS, 3000, "from-flag", 3, "http://flag.example"),
        ({}, FLAGS, 3000, "from-flag", 3, "http://flag.example"),
        ({"MIRROR_LISTEN": ""}, Overrides(), 1000, "from-file", 1, "https://registry-1.docker.io"),
    ],
)
def test_precedence_file_env_flags(
    env: dict[str, str], overrides: Overrides, port: int, path: str, size: int, url: str
) -> None:
    settings = load(config(FILE), env, overrides)
    assert settings.port == port
    assert settings.storage.path == Path(path)
    assert settings.storage.max_size == size * GiB
    assert settings.upstreams["docker.io"].url == url


def test_upstream_flag_replaces_the_default_upstreams_url_only() -> None:
    settings = load(
        config(
            "upstreams:\n"
            "  ghcr.io: {url: 'https://ghcr.io', username: u, password: p}\n"
            "  quay.io: {url: 'https://quay.io'}\n"
            "default_upstream: ghcr.io\n"
        ),
        {},
        Overrides(upstream="http://127.0.0.1:5001/"),
    )
    assert settings.upstreams["ghcr.io"] == UpstreamSettings(
        "ghcr.io", "http://127.0.0.1:5001", username="u", password="p"
    )
    assert settings.upstreams["quay.io"].url == "https://quay.io"


def test_file_upstreams_replace_the_built_in_one() -> None:
    settings = load(config("upstreams:\n  ghcr.io: {url: 'https://ghcr.io'}\n"), {}, Overrides())
    assert list(settings.upstreams) == ["ghcr.io"]


def test_bad_override_is_blamed_on_its_source() -> None:
    found = problems("", {"MIRROR_MAX_SIZE": "huge"}, Overrides(listen="nowhere"))
    assert found == [
        "listen (from --listen): expected HOST:PORT like 0.0.0.0:5000 or [::1]:5000, got 'nowhere'",
        "storage.max_size (from MIRROR_MAX_SIZE): expected a size like 512MiB, 20GiB "
        "or a byte count, got 'huge'",
    ]


EVERY_PROBLEM_KEY = [
    "listen",
    "upstreams.docker.io.password",
    "upstreams.ghcr.io.url",
    "upstreams.ghcr.io.read_timeout",
    "upstreams.ghcr.io.retries",
    "upstreams.quay.io.url",
    "upstreams.quay.io.connect_timeout",
    "default_upstream",
    "tls.cert",
    "tls.key",
    "storage.path",
    "storage.max_size",
    "manifests.tag_ttl",
    "manifests.serve_stale",
    "metrics.enabled",
    "log.level",
    "log.format",
]


def test_every_problem_is_reported_at_once() -> None:
    Path("a-file").write_text("")
    found = problems(
        "listen: 0.0.0.0:70000\n"
        "tls: {cert: missing.pem}\n"
        "storage: {path: a-file, max_size: lots}\n"
        "upstreams:\n"
        "  docker.io: {username: bob}\n"
        "  ghcr.io: {url: 'ftp://ghcr.io', read_timeout: 0, retries: many}\n"
        "  quay.io: {connect_timeout: soon}\n"
        "default_upstream: gcr.io\n"
        "manifests: {tag_ttl: [1], serve_stale: maybe}\n"
        "metrics: {enabled: 3}\n"
        "log: {level: loud, format: xml}\n"
    )
    assert [problem.split(":", 1)[0] for problem in found] == EVERY_PROBLEM_KEY
    assert "listen: port 70000 is out of range 1-65535" in found
    assert "upstreams.docker.io.password: required when username is set" in found
    assert "storage.path: 'a-file' exists and is not a directory" in found
    size_hint = "expected a size like 512MiB, 20GiB or a byte count"
    assert f"storage.max_size: {size_hint}, got 'lots'" in found
    names = "docker.io, ghcr.io, quay.io"
    assert f"default_upstream: 'gcr.io' is not one of the upstreams ({names})" in found


def test_unknown_keys_are_named_with_the_allowed_ones() -> None:
    found = problems(
        "listn: 0.0.0.0:5000\n"
        "storage: {maxsize: 1GiB}\n"
        "upstreams:\n  ghcr.io: {url: 'https://ghcr.io', token: x}\n"
    )
    assert found == [
        "listn: unknown key (allowed: listen, tls, storage, upstreams, default_upstream, "
        "manifests, metrics, log)",
        "upstreams.ghcr.io.token: unknown key (allowed: url, username, password, "
        "connect_timeout, read_timeout, retries)",
        "storage.maxsize: unknown key "
        "(allowed: path, max_size, high_watermark, low_watermark, pinned)",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("storage: /data\n", "storage: expected a mapping, got '/data'"),
        ("- listen\n", "config file: expected a mapping, got a list"),
        ("upstreams: [docker.io]\n", "upstreams: expected a mapping, got a list"),
        ("upstreams: {}\n", "upstreams: at least one upstream is required"),
        ("listen: 'host:0'\n", "listen: port 0 is out of range 1-65535"),
        ("upstreams:\n  Bad_Name: {url: 'https://x.io'}\n", "upstreams.Bad_Name: expected an"),
        ("upstreams:\n  x.io: {url: 'https://x.io/v2'}\n", "upstreams.x.io.url: expected an"),
        ("upstreams:\n  x.io: {password: p, url: 'https://x.io'}\n", "upstreams.x.io.username"),
        (
            "upstreams:\n  a.io: {url: 'https://a.io'}\n  b.io: {url: 'https://b.io'}\n",
            "default_upstream: required to choose among a.io, b.io",
        ),
        ("tls: {}\n", "tls.cert: required when tls is set"),
        ("storage: {path: ''}\n", "storage.path: expected a path, got an empty string"),
    ],
)
def test_single_problem(text: str, expected: str) -> None:
    assert any(problem.startswith(expected) for problem in problems(text)), problems(text)


def test_storage_path_whose_parent_cannot_be_created() -> None:
    Path("a-file").write_text("")
    found = problems("storage: {path: a-file/cache}\n")
    assert len(found) == 1
    assert found[0].startswith("storage.path: cannot create 'a-file/cache': ")


def test_storage_path_that_does_not_exist_yet_is_fine() -> None:
    settings = load(config("storage: {path: deep/new/cache}\n"), {}, Overrides())
    assert settings.storage.path == Path("deep/new/cache")
    assert not Path("deep").exists()  # load() creates nothing


def test_tls_files_that_exist_are_accepted() -> None:
    Path("tls.crt").write_text("cert")
    Path("tls.key").write_text("key")
    settings = load(config("tls: {cert: tls.crt, key: tls.key}\n"), {}, Overrides())
    assert settings.tls is not None
    assert (settings.tls.cert, settings.tls.key) == (Path("tls.crt"), Path("tls.key"))


def test_missing_file_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        load(Path("nope.yml"), {}, Overrides())
    assert caught.value.problems == ["nope.yml: config file not found"]


def test_yaml_syntax_error_is_a_config_error() -> None:
    found = problems("listen: 0.0.0.0:5000\nstorage: {path: [\n")
    assert len(found) == 1
    assert found[0].startswith("config.yml: invalid YAML at line 3")


def test_describe_masks_passwords_and_reads_back() -> None:
    settings = load(
        config(
            "listen: '[::1]:5000'\n"
            "storage: {max_size: 1500MB}\n"
            "upstreams:\n"
            "  docker.io: {username: bob, password: hunter2, read_timeout: 1.25}\n"
            "  ghcr.io: {url: 'https://ghcr.io', connect_timeout: 500ms}\n"
            "manifests: {tag_ttl: 90m}\n"
        ),
        {},
        Overrides(),
    )
    text = describe(settings)
    assert "hunter2" not in text
    assert yaml.safe_load(text)["upstreams"]["docker.io"]["password"] == "***"
    assert "username: bob" in text
    masked = replace(settings.upstreams["docker.io"], password="***")
    expected = replace(settings, upstreams={**settings.upstreams, "docker.io": masked})
    assert load(config(text), {}, Overrides()) == expected


def test_describe_of_defaults_loads_back_to_defaults() -> None:
    assert load(config(describe(Settings())), {}, Overrides()) == Settings()


def test_example_config_loads() -> None:
    env = {"DOCKERHUB_USER": "bob", "DOCKERHUB_TOKEN": "t0ken"}
    settings = load(EXAMPLE, env, Overrides())
    assert (settings.host, settings.port) == ("0.0.0.0", 5000)
    assert settings.storage == StorageSettings(pinned=("docker.io/library/alpine:3.20",))
    assert list(settings.upstreams) == ["docker.io", "ghcr.io"]
    hub = settings.upstreams["docker.io"]
    assert (hub.username, hub.password) == ("bob", "t0ken")
    assert settings.default_upstream == "docker.io"
    assert settings.manifests.tag_ttl == 300.0


def test_quota_keys_and_pins() -> None:
    settings = load(
        config(
            "storage:\n  high_watermark: 0.9\n  low_watermark: 0.5\n"
            "  pinned: [docker.io/library/alpine:3.20, alpine@sha256:" + "a" * 64 + "]\n"
        ),
        {},
        Overrides(),
    )
    assert settings.storage.high_watermark == 0.9
    assert settings.storage.low_watermark == 0.5
    assert settings.storage.pinned == (
        "docker.io/library/alpine:3.20",
        "alpine@sha256:" + "a" * 64,
    )


def test_bad_quota_keys_and_pins_are_named() -> None:
    found = problems(
        "storage:\n  high_watermark: 1.5\n  low_watermark: 0.9\n"
        "  pinned: [quay.io/org/app:1, docker.io/Bad:1]\n"
    )
    assert found[0].startswith("storage.high_watermark: expected a number above 0")
    assert found[1].startswith("storage.pinned[0]: 'quay.io/org/app:1': no configured upstream")
    assert found[2].startswith("storage.pinned[1]: 'docker.io/Bad:1': invalid repository name")
    assert problems("storage:\n  high_watermark: 0.5\n  low_watermark: 0.9\n") == [
        "storage.low_watermark: must not be above storage.high_watermark (0.5), got 0.9"
    ]


def test_metrics_listener() -> None:
    settings = load(config("metrics:\n  listen: 127.0.0.1:9090\n"), {}, Overrides())
    assert settings.metrics.listen == ("127.0.0.1", 9090)
    assert problems("metrics:\n  listen: nowhere\n")[0].startswith("metrics.listen: expected")

"""Settings: frozen, slotted dataclasses holding every default, plus ConfigError and Overrides.

A leaf that the whole package imports. Building these values from the file, the
environment and flags is `mirror.configfile`'s job; this module must not know about
YAML, the environment or the app.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DOCKER_HUB = "docker.io"
DOCKER_HUB_URL = "https://registry-1.docker.io"


@dataclass(frozen=True, slots=True)
class UpstreamSettings:
    """One upstream registry, addressed by its routing `name`."""

    name: str
    url: str  # scheme://host[:port], no trailing slash
    username: str | None = None
    password: str | None = None
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    retries: int = 3  # extra attempts on connection errors, 5xx and 429

    @property
    def library_prefix(self) -> bool:
        """True for Docker Hub, where a one-segment name means `library/<name>`."""
        return self.name == DOCKER_HUB or self.url.rstrip("/") in (
            DOCKER_HUB_URL,
            "https://index.docker.io",
        )


@dataclass(frozen=True, slots=True)
class StorageSettings:
    path: Path = Path("./mirror-data")
    max_size: int = 20 * 1024**3
    # Eviction starts when the cache passes high_watermark * max_size and goes down
    # to low_watermark * max_size, least recently used first.
    high_watermark: float = 0.95
    low_watermark: float = 0.85
    pinned: tuple[str, ...] = ()  # image references never evicted


@dataclass(frozen=True, slots=True)
class ManifestSettings:
    tag_ttl: float = 300.0
    serve_stale: bool = True
    negative_ttl: float = 30.0  # how long an upstream 404 is remembered


@dataclass(frozen=True, slots=True)
class TlsSettings:
    cert: Path
    key: Path


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    enabled: bool = True  # /metrics on the main listener
    listen: tuple[str, int] | None = None  # also serve /metrics alone on HOST:PORT


@dataclass(frozen=True, slots=True)
class LogSettings:
    level: str = "info"
    format: str = "text"


def default_upstreams() -> dict[str, UpstreamSettings]:
    """A fresh mapping holding only the built-in Docker Hub upstream."""
    return {DOCKER_HUB: UpstreamSettings(name=DOCKER_HUB, url=DOCKER_HUB_URL)}


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the mirror needs to run, validated."""

    host: str = "0.0.0.0"
    port: int = 5000
    tls: TlsSettings | None = None
    storage: StorageSettings = field(default_factory=StorageSettings)
    upstreams: dict[str, UpstreamSettings] = field(default_factory=default_upstreams)
    default_upstream: str = DOCKER_HUB
    manifests: ManifestSettings = field(default_factory=ManifestSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    log: LogSettings = field(default_factory=LogSettings)


class ConfigError(Exception):
    """The configuration cannot be used; `problems` holds one line per reason, key first."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class Overrides:
    """Command-line flags; each beats its environment variable and the file."""

    listen: str | None = None
    upstream: str | None = None
    storage: str | None = None
    max_size: str | None = None

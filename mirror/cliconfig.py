"""The config as commands use it: loaded with each problem printed as one line, and the
effective settings shown back as YAML with secrets masked (`mirror check-config`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import yaml

from mirror.config import ConfigError, Overrides, Settings, UpstreamSettings
from mirror.configfile import load
from mirror.units import format_duration, format_size


def settings_or_report(config: Path | None, overrides: Overrides) -> Settings | None:
    """What a command runs on: `load()` from the file (`-c`, else MIRROR_CONFIG), the
    environment and `overrides`; None once each problem is printed to stderr as
    `mirror: <problem>`."""
    if config is None and os.environ.get("MIRROR_CONFIG"):
        config = Path(os.environ["MIRROR_CONFIG"])
    try:
        return load(config, os.environ, overrides)
    except ConfigError as error:
        for problem in error.problems:
            print(f"mirror: {problem}", file=sys.stderr)
        return None


def describe(settings: Settings) -> str:
    """The effective settings as YAML in the config file's shape, passwords shown as `***`."""
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    document: dict[str, Any] = {"listen": f"{host}:{settings.port}"}
    if settings.tls is not None:
        document["tls"] = {"cert": str(settings.tls.cert), "key": str(settings.tls.key)}
    document["storage"] = {
        "path": str(settings.storage.path),
        "max_size": format_size(settings.storage.max_size),
        "high_watermark": settings.storage.high_watermark,
        "low_watermark": settings.storage.low_watermark,
        "pinned": list(settings.storage.pinned),
    }
    document["upstreams"] = {
        name: _describe_upstream(upstream) for name, upstream in settings.upstreams.items()
    }
    document["default_upstream"] = settings.default_upstream
    document["manifests"] = {
        "tag_ttl": format_duration(settings.manifests.tag_ttl),
        "serve_stale": settings.manifests.serve_stale,
        "negative_ttl": format_duration(settings.manifests.negative_ttl),
    }
    document["metrics"] = {"enabled": settings.metrics.enabled}
    if settings.metrics.listen is not None:
        metrics_host, metrics_port = settings.metrics.listen
        document["metrics"]["listen"] = f"{metrics_host}:{metrics_port}"
    document["log"] = {"level": settings.log.level, "format": settings.log.format}
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=False)


# --- the file and overrides ----------------------------------------------------------------


def _describe_upstream(upstream: UpstreamSettings) -> dict[str, Any]:
    entry: dict[str, Any] = {"url": upstream.url}
    if upstream.username is not None:
        entry["username"] = upstream.username
    if upstream.password is not None:
        entry["password"] = "***"
    entry["connect_timeout"] = format_duration(upstream.connect_timeout)
    entry["read_timeout"] = format_duration(upstream.read_timeout)
    entry["retries"] = upstream.retries
    return entry

"""Building Settings: `load()`, the only code that reads the file's shape.

`load()` reads the YAML, expands `${VAR}` from the environment, applies command-line
and environment overrides, and validates each section once, through the typed readers
of `mirror.configfields`, into `mirror.config`'s frozen Settings (`mirror.cliconfig`
renders them back). It must not know about the app.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import yaml

from mirror import configfields as fields
from mirror.config import (
    DOCKER_HUB,
    DOCKER_HUB_URL,
    ConfigError,
    LogSettings,
    ManifestSettings,
    MetricsSettings,
    Overrides,
    Settings,
    StorageSettings,
    TlsSettings,
    UpstreamSettings,
    default_upstreams,
)
from mirror.pins import parse_pin
from mirror.units import parse_duration

_UPSTREAM_NAME_RE = re.compile(r"[a-z0-9](?:[a-z0-9._-]*[a-z0-9])?(?::\d+)?")
_TOP_KEYS = (
    "listen",
    "tls",
    "storage",
    "upstreams",
    "default_upstream",
    "manifests",
    "metrics",
    "log",
)
_UPSTREAM_KEYS = ("url", "username", "password", "connect_timeout", "read_timeout", "retries")
_LOG_LEVELS = ("debug", "info", "warning", "error")
_LOG_FORMATS = ("text", "json")


def load(path: Path | None, env: Mapping[str, str], overrides: Overrides) -> Settings:
    """Build Settings from defaults < the YAML file at `path` < `env` < `overrides`.

    `${VAR}` and `${VAR:-default}` in YAML strings expand from `env` (`$${` stays a
    literal `${`). Checks everything, then raises one ConfigError listing every
    problem. Reads the filesystem but creates nothing.
    """
    problems: list[str] = []
    document = None if path is None else fields.expand(_read_yaml(path), env, problems)
    top = fields.Section.of(document, "", _TOP_KEYS, problems)
    flag = ("--listen", overrides.listen)
    listen = _layer(top.data.get("listen"), "listen", env, "MIRROR_LISTEN", flag)
    host, port = fields.read(problems, *listen, ("0.0.0.0", 5000), fields.listen)
    upstreams, default = _build_upstreams(top, env, overrides)
    settings = Settings(
        host=host,
        port=port,
        tls=None if top.data.get("tls") is None else _build_tls(top.sub("tls", ("cert", "key"))),
        storage=_build_storage(top.sub("storage", _STORAGE_KEYS), env, overrides, upstreams),
        upstreams=upstreams,
        default_upstream=default,
        manifests=_build_manifests(
            top.sub("manifests", ("tag_ttl", "serve_stale", "negative_ttl"))
        ),
        metrics=_build_metrics(top.sub("metrics", ("enabled", "listen"))),
        log=_build_log(top.sub("log", ("level", "format"))),
    )
    if problems:
        raise ConfigError(problems)
    return settings


def _read_yaml(path: Path) -> object:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{path}: config file not found"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read config file: {exc}"]) from None
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError([f"{path}: invalid YAML{where}: {exc.problem}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: invalid YAML: {exc}"]) from None


def _layer(
    value: object, key: str, env: Mapping[str, str], variable: str, flag: tuple[str, str | None]
) -> tuple[object, str]:
    """The winner of file < environment `variable` < (option, its value), and the key to blame."""
    option, given = flag
    if given is not None:
        return given, f"{key} (from {option})"
    if env.get(variable):
        return env[variable], f"{key} (from {variable})"
    return value, key


# --- sections ------------------------------------------------------------------------------


def _build_upstreams(
    top: fields.Section, env: Mapping[str, str], overrides: Overrides
) -> tuple[dict[str, UpstreamSettings], str]:
    """The file's upstreams (or the built-in Docker Hub), the default one, and --upstream."""
    if top.data.get("upstreams") is None:
        upstreams = default_upstreams()
    else:
        section = top.sub("upstreams", None)
        if top.data["upstreams"] == {}:
            top.problems.append("upstreams: at least one upstream is required")
        upstreams = {str(name): _build_upstream(section, name) for name in section.data}
    default = _default_name(top, upstreams)
    flag = ("--upstream", overrides.upstream)
    url, key = _layer(None, f"upstreams.{default}.url", env, "MIRROR_UPSTREAM", flag)
    if url is not None and default in upstreams:
        upstream = upstreams[default]
        upstreams[default] = replace(
            upstream, url=fields.read(top.problems, url, key, upstream.url, fields.url)
        )
    return upstreams, default


def _build_upstream(upstreams: fields.Section, name: object) -> UpstreamSettings:
    section = upstreams.sub(str(name), _UPSTREAM_KEYS)
    if not isinstance(name, str) or not _UPSTREAM_NAME_RE.fullmatch(name):
        section.problems.append(
            f"{section.key}: expected an upstream name like docker.io or ghcr.io "
            "(a lower-case host with an optional :port)"
        )
    url = section.data.get("url", DOCKER_HUB_URL if name == DOCKER_HUB else None)
    if url is None:
        section.problems.append(f"{section.key}.url: required, e.g. https://ghcr.io")
    # Empty counts as absent, so `${TOKEN:-}` means "anonymous unless TOKEN is set".
    username = section.get("username", None, fields.text) or None
    password = section.get("password", None, fields.text) or None
    if (username is None) != (password is None):
        missing, given = ("password", "username") if password is None else ("username", "password")
        section.problems.append(f"{section.key}.{missing}: required when {given} is set")
    base = UpstreamSettings(
        name=str(name), url=fields.read(section.problems, url, f"{section.key}.url", "", fields.url)
    )
    return replace(
        base,
        username=username,
        password=password,
        connect_timeout=section.get("connect_timeout", base.connect_timeout, fields.timeout),
        read_timeout=section.get("read_timeout", base.read_timeout, fields.timeout),
        retries=section.get("retries", base.retries, fields.count),
    )


def _default_name(top: fields.Section, upstreams: Mapping[str, object]) -> str:
    """`default_upstream`, else docker.io when configured, else the only upstream there is."""
    names = ", ".join(upstreams)
    name = top.get("default_upstream", None, fields.text)
    if name is not None:
        if upstreams and name not in upstreams:
            top.problems.append(f"default_upstream: {name!r} is not one of the upstreams ({names})")
        return name
    if DOCKER_HUB in upstreams or not upstreams:
        return DOCKER_HUB
    if len(upstreams) == 1:
        return next(iter(upstreams))
    if top.data.get("default_upstream") is None:  # a mistyped value is reported already
        top.problems.append(f"default_upstream: required to choose among {names}")
    return DOCKER_HUB


def _build_tls(section: fields.Section) -> TlsSettings:
    """Both PEM files, each a readable file."""
    paths = [section.get(name, Path(), fields.path) for name in ("cert", "key")]
    for name, path in zip(("cert", "key"), paths, strict=True):
        key = f"{section.key}.{name}"
        if section.data.get(name) is None:
            section.problems.append(f"{key}: required when tls is set (a PEM file)")
        elif path != Path() and not (os.path.isfile(path) and os.access(path, os.R_OK)):
            section.problems.append(f"{key}: {str(path)!r} is not a readable file")
    return TlsSettings(cert=paths[0], key=paths[1])


_STORAGE_KEYS = ("path", "max_size", "high_watermark", "low_watermark", "pinned")


def _build_storage(
    section: fields.Section,
    env: Mapping[str, str],
    overrides: Overrides,
    upstreams: Mapping[str, UpstreamSettings],
) -> StorageSettings:
    base = StorageSettings()
    flag = ("--storage", overrides.storage)
    path, path_key = _layer(
        section.data.get("path"), "storage.path", env, "MIRROR_STORAGE_PATH", flag
    )
    flag = ("--max-size", overrides.max_size)
    size, size_key = _layer(
        section.data.get("max_size"), "storage.max_size", env, "MIRROR_MAX_SIZE", flag
    )
    checked = fields.read(section.problems, path, path_key, base.path, fields.path)
    _check_storage_path(checked, path_key, section.problems)
    high = section.get("high_watermark", base.high_watermark, fields.fraction)
    low = section.get("low_watermark", base.low_watermark, fields.fraction)
    if low > high:
        section.problems.append(
            f"storage.low_watermark: must not be above storage.high_watermark ({high}), got {low}"
        )
    pinned = section.get("pinned", base.pinned, fields.strings)
    for index, reference in enumerate(pinned):
        try:
            parse_pin(reference, upstreams)
        except ValueError as error:
            section.problems.append(f"storage.pinned[{index}]: {error}")
    return StorageSettings(
        path=checked,
        max_size=fields.read(section.problems, size, size_key, base.max_size, fields.quota),
        high_watermark=high,
        low_watermark=low,
        pinned=pinned,
    )


def _check_storage_path(path: Path, key: str, problems: list[str]) -> None:
    """The cache directory must be writable, or creatable under its nearest existing parent."""
    if os.path.exists(path):
        if not os.path.isdir(path):
            problems.append(f"{key}: {str(path)!r} exists and is not a directory")
        elif not os.access(path, os.W_OK | os.X_OK):
            problems.append(f"{key}: directory {str(path)!r} is not writable")
        return
    parent = path.absolute().parent
    while not os.path.exists(parent):
        parent = parent.parent
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        problems.append(
            f"{key}: cannot create {str(path)!r}: {str(parent)!r} is not a writable directory"
        )


def _build_manifests(section: fields.Section) -> ManifestSettings:
    base = ManifestSettings()
    return ManifestSettings(
        tag_ttl=section.get("tag_ttl", base.tag_ttl, parse_duration),
        serve_stale=section.get("serve_stale", base.serve_stale, fields.flag),
        negative_ttl=section.get("negative_ttl", base.negative_ttl, parse_duration),
    )


def _build_metrics(section: fields.Section) -> MetricsSettings:
    return MetricsSettings(
        enabled=section.get("enabled", True, fields.flag),
        listen=section.get("listen", None, fields.listen),
    )


def _build_log(section: fields.Section) -> LogSettings:
    base = LogSettings()
    return LogSettings(
        level=section.get("level", base.level, fields.one_of(*_LOG_LEVELS)),
        format=section.get("format", base.format, fields.one_of(*_LOG_FORMATS)),
    )


# --- describing ----------------------------------------------------------------------------

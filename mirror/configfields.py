"""Typed values out of a parsed config document, each problem named by its dotted key.

`expand()` substitutes `${VAR}` in strings; `Section` walks mappings and reads fields
through converters that return the typed value or raise ValueError("expected ..., got ...").
Problems are appended to a shared list, never raised, so the caller can report them all
at once. Pure: no I/O, and nothing here knows the shape of Settings.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from mirror.units import parse_duration, parse_size

_T = TypeVar("_T")

_VAR_RE = re.compile(r"\$(\$?)\{([^}]*)\}")
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HOST_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
_TRUE_WORDS = frozenset({"true", "yes", "on"})
_FALSE_WORDS = frozenset({"false", "no", "off"})


# --- ${VAR} --------------------------------------------------------------------------------


def expand(node: object, env: Mapping[str, str], problems: list[str], key: str = "") -> object:
    """`node` with `${VAR}` and `${VAR:-default}` in every string replaced from `env`.

    `$${` stays a literal `${`; a set but empty VAR takes the default, as in sh. An unset
    VAR without a default or a malformed reference expands to "" and is recorded in
    `problems` under its dotted key below `key` (`upstreams.ghcr.io.password`, `a[0]`).
    """
    if isinstance(node, str):
        return _VAR_RE.sub(lambda match: _substitute(match, key, env, problems), node)
    if isinstance(node, dict):
        return {name: expand(item, env, problems, _join(key, name)) for name, item in node.items()}
    if isinstance(node, list):
        return [expand(item, env, problems, f"{key}[{i}]") for i, item in enumerate(node)]
    return node


def _substitute(match: re.Match[str], key: str, env: Mapping[str, str], problems: list[str]) -> str:
    escaped, inner = match.groups()
    if escaped:
        return "${" + inner + "}"
    name, has_default, default = inner.partition(":-")
    if not _ENV_NAME_RE.fullmatch(name):
        problems.append(f"{key}: malformed variable reference ${{{inner}}}")
        return ""
    if has_default and not env.get(name):
        return default
    if name not in env:
        problems.append(
            f"{key}: environment variable {name} is not set "
            f"(write ${{{name}:-default}} to give a default)"
        )
        return ""
    return env[name]


# --- reading typed fields, recording problems ----------------------------------------------


def _join(prefix: str, name: object) -> str:
    return f"{prefix}.{name}" if prefix else str(name)


def _got(value: object) -> str:
    if isinstance(value, dict | list):
        return "a mapping" if isinstance(value, dict) else "a list"
    return repr(value)


def read(
    problems: list[str], value: object, key: str, default: _T, convert: Callable[[Any], _T]
) -> _T:
    """`convert(value)`, or `default` when the value is absent or (a problem recorded) bad."""
    if value is None:
        return default
    try:
        return convert(value)
    except ValueError as exc:
        problems.append(f"{key}: {exc}")
        return default


@dataclass(frozen=True, slots=True)
class Section:
    """One mapping of the file under its dotted `key`; absent or mistyped reads as empty."""

    data: dict[Any, Any]
    key: str
    problems: list[str]

    @classmethod
    def of(
        cls, value: object, key: str, allowed: Iterable[str] | None, problems: list[str]
    ) -> Section:
        """Wrap `value`, recording a non-mapping and every key outside `allowed`."""
        if value is not None and not isinstance(value, dict):
            problems.append(f"{key or 'config file'}: expected a mapping, got {_got(value)}")
        data = value if isinstance(value, dict) else {}
        if allowed is not None:
            allowed = tuple(allowed)
            for name in data:
                if name not in allowed:
                    problems.append(
                        f"{_join(key, name)}: unknown key (allowed: {', '.join(allowed)})"
                    )
        return cls(data, key, problems)

    def sub(self, name: str, allowed: Iterable[str] | None) -> Section:
        """The section under `name`."""
        return Section.of(self.data.get(name), _join(self.key, name), allowed, self.problems)

    def get(self, name: str, default: _T, convert: Callable[[Any], _T]) -> _T:
        """The field `name` converted, or `default` when absent or bad."""
        return read(self.problems, self.data.get(name), _join(self.key, name), default, convert)


# --- converters: the typed value, or ValueError("expected ..., got ...") -------------------


def text(value: object) -> str:
    """A string, as is."""
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {_got(value)}")
    return value


def flag(value: object) -> bool:
    """A YAML boolean, or true/yes/on and false/no/off in any case."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _TRUE_WORDS | _FALSE_WORDS:
        return value.lower() in _TRUE_WORDS
    raise ValueError(f"expected true or false, got {_got(value)}")


def count(value: object) -> int:
    """A whole number of 0 or more, written as an integer or as digits."""
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise ValueError(f"expected a whole number of 0 or more, got {_got(value)}")


def one_of(*choices: str) -> Callable[[Any], str]:
    """A converter accepting one of the lower-case `choices` in any case, giving it lowered."""

    def convert(value: object) -> str:
        if isinstance(value, str) and value.lower() in choices:
            return value.lower()
        raise ValueError(f"expected one of {', '.join(choices)}, got {_got(value)}")

    return convert


def quota(value: Any) -> int:
    """A size in bytes, as `parse_size` reads it, of more than 0."""
    size = parse_size(value)
    if size <= 0:
        raise ValueError(f"must be more than 0 bytes, got {_got(value)}")
    return size


def fraction(value: Any) -> float:
    """A number from 0 to 1, such as a watermark of the quota."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"expected a number from 0 to 1, got {_got(value)}")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"expected a number from 0 to 1, got {_got(value)}") from None
    if not 0 < number <= 1:
        raise ValueError(f"expected a number above 0 and at most 1, got {_got(value)}")
    return number


def strings(value: Any) -> tuple[str, ...]:
    """A list of non-empty strings."""
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"expected a list of strings, got {_got(value)}")
    return tuple(value)


def timeout(value: Any) -> float:
    """A duration in seconds, as `parse_duration` reads it, of more than 0."""
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"must be longer than 0 seconds, got {_got(value)}")
    return seconds


def path(value: object) -> Path:
    """A non-empty path string, `~` expanded; the filesystem is not consulted."""
    if not text(value).strip():
        raise ValueError("expected a path, got an empty string")
    return Path(str(value)).expanduser()


def url(value: object) -> str:
    """`scheme://host[:port]` without a trailing slash; http or https only."""
    given = text(value).strip()
    hint = f"expected an http:// or https:// URL like https://ghcr.io, got {given!r}"
    parts = urlsplit(given)
    try:
        parts.port  # noqa: B018 -- the property raises ValueError for a bad port
    except ValueError:
        raise ValueError(f"{hint} (bad port)") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError(hint)
    if parts.username or parts.password:
        raise ValueError(f"{hint} (put credentials in username and password)")
    if parts.path.strip("/") or parts.query or parts.fragment:
        raise ValueError(f"{hint} (no path, query or fragment)")
    return f"{parts.scheme.lower()}://{parts.netloc}"


def listen(value: object) -> tuple[str, int]:
    """`HOST:PORT`, `[IPv6]:PORT` or `:PORT` (all interfaces) as (host, port)."""
    given = text(value).strip()
    hint = f"expected HOST:PORT like 0.0.0.0:5000 or [::1]:5000, got {given!r}"
    host, colon, port = given.rpartition(":")
    if not colon or not port.isdigit():
        raise ValueError(hint)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(hint) from None
    elif host and not _HOST_RE.fullmatch(host):
        raise ValueError(hint)
    if not 1 <= int(port) <= 65535:
        raise ValueError(f"port {int(port)} is out of range 1-65535")
    return host or "0.0.0.0", int(port)

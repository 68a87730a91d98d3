"""Sizes and durations as people write them: parsing and the exact spelling back.

Pure functions, no I/O: `parse_size`/`parse_duration` raise ValueError("expected ...,
got ..."), and `format_size`/`format_duration` give the shortest text they read back.
"""

from __future__ import annotations

import math
import re

_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(?:([kmgt])(i)?)?b?", re.IGNORECASE)
_SIZE_POWERS = {"k": 1, "m": 2, "g": 3, "t": 4}
_SIZE_HINT = "expected a size like 512MiB, 20GiB or a byte count"
_SIZE_UNITS = [(f"{p.upper()}iB", 1024**n) for p, n in reversed(_SIZE_POWERS.items())] + [
    (f"{p.upper()}B", 1000**n) for p, n in reversed(_SIZE_POWERS.items())
]
_DURATION_PART_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", re.IGNORECASE)
_DURATION_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_DURATION_HINT = "expected a duration like 500ms, 30s, 5m, 12h or a number of seconds"


def parse_size(text: str | int) -> int:
    """Bytes in `text`: a byte count, or KB/MB/GB/TB (powers of 1000) or KiB..TiB (of 1024).

    The unit is case-insensitive and its trailing `B` optional. Raises ValueError.
    """
    if isinstance(text, int) and not isinstance(text, bool) and text >= 0:
        return text
    match = _SIZE_RE.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None or (match[2] is None and "." in match[1]):
        raise ValueError(f"{_SIZE_HINT}, got {text!r}")
    number, prefix, binary = match.groups()
    factor = 1 if prefix is None else (1024 if binary else 1000) ** _SIZE_POWERS[prefix.lower()]
    if "." in number:
        return int(float(number) * factor)
    return int(number) * factor


def parse_duration(text: str | int | float) -> float:
    """Seconds in `text`: `500ms`, `30s`, `5m`, `12h`, `1d`, `1h30m`, or a plain number.

    Raises ValueError for anything else, including negative or non-finite numbers.
    """
    if isinstance(text, int | float) and not isinstance(text, bool):
        if math.isfinite(text) and text >= 0:
            return float(text)
        raise ValueError(f"{_DURATION_HINT}, got {text!r}")
    spelled = text.strip() if isinstance(text, str) else ""
    if re.fullmatch(r"\d+(?:\.\d+)?", spelled):
        return float(spelled)
    if not spelled or _DURATION_PART_RE.sub("", spelled):
        raise ValueError(f"{_DURATION_HINT}, got {text!r}")
    parts = _DURATION_PART_RE.findall(spelled)
    return sum(float(number) * _DURATION_UNITS[unit.lower()] for number, unit in parts)


def format_size(size: int) -> str | int:
    """The shortest exact spelling that `parse_size` reads back."""
    for unit, factor in _SIZE_UNITS:
        if size and size % factor == 0:
            return f"{size // factor}{unit}"
    return size


def format_duration(seconds: float) -> str:
    """The shortest exact spelling that `parse_duration` reads back."""
    for unit, factor in _DURATION_UNITS.items():
        count = seconds / factor
        if abs(count - round(count)) < 1e-9 and (round(count) or unit == "s"):
            return f"{round(count)}{unit}"
    return f"{seconds}s"

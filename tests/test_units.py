"""Sizes and durations: what parses, what is refused, and the spelling that reads back."""

from __future__ import annotations

import pytest

from mirror.units import format_duration, format_size, parse_duration, parse_size

GiB = 1024**3


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("512", 512),
        (512, 512),
        ("100B", 100),
        ("512MiB", 512 * 1024**2),
        ("20GiB", 20 * GiB),
        ("20gib", 20 * GiB),
        ("20Gi", 20 * GiB),
        ("20 GiB", 20 * GiB),
        ("1TB", 10**12),
        ("1tb", 10**12),
        ("1T", 10**12),
        ("1.5GB", 1_500_000_000),
        ("1.5KiB", 1536),
        ("10MB", 10_000_000),
        ("3KB", 3000),
        ("2TiB", 2 * 1024**4),
    ],
)
def test_parse_size(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    "text", ["lots", "", "-1", -1, "1.5", "12XB", "GiB", "512iB", "1e9", "5 G iB", True, 1.5]
)
def test_parse_size_refuses(text: object) -> None:
    with pytest.raises(ValueError, match="expected a size like 512MiB, 20GiB or a byte count"):
        parse_size(text)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", 30.0),
        ("5m", 300.0),
        ("12h", 43200.0),
        ("1d", 86400.0),
        ("500ms", 0.5),
        ("1h30m", 5400.0),
        ("2.5s", 2.5),
        ("5M", 300.0),
        ("30", 30.0),
        ("1.5", 1.5),
        (30, 30.0),
        (0.25, 0.25),
        ("0", 0.0),
    ],
)
def test_parse_duration(text: str | float, expected: float) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text", ["soon", "", "-5s", "5x", "m", "5 m", "1h 30m", "s5", -1, float("nan"), True]
)
def test_parse_duration_refuses(text: object) -> None:
    with pytest.raises(ValueError, match="expected a duration like"):
        parse_duration(text)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("size", "spelled"),
    [(0, 0), (1536, 1536), (1000, "1KB"), (1_500_000_000, "1500MB"), (20 * GiB, "20GiB")],
)
def test_format_size_reads_back(size: int, spelled: str | int) -> None:
    assert format_size(size) == spelled
    assert parse_size(spelled) == size


@pytest.mark.parametrize(
    ("seconds", "spelled"),
    [(0.0, "0s"), (0.5, "500ms"), (1.25, "1250ms"), (5400.0, "90m"), (86400.0, "1d")],
)
def test_format_duration_reads_back(seconds: float, spelled: str) -> None:
    assert format_duration(seconds) == spelled
    assert parse_duration(spelled) == seconds

"""Typed fields: ${VAR} expansion, the section walker's problems, and every converter."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mirror import configfields as fields

URL_HINT = "expected an http:// or https:// URL like https://ghcr.io, got "
LISTEN_HINT = "expected HOST:PORT like 0.0.0.0:5000 or [::1]:5000, got "


def test_expand_substitutes_inside_strings_only() -> None:
    problems: list[str] = []
    document = {
        "url": "https://${HOST}",
        "username": "${USER:-robot}",
        "password": "pre-${TOKEN}-$${LITERAL}",
        "level": "${LEVEL:-warning}",
        "mirrors": ["${HOST}", 3],
        "port": 5000,
    }
    env = {"HOST": "ghcr.example", "TOKEN": "s3cret", "LEVEL": ""}
    assert fields.expand(document, env, problems) == {
        "url": "https://ghcr.example",
        "username": "robot",
        "password": "pre-s3cret-${LITERAL}",
        "level": "warning",  # set but empty takes the default, as in sh
        "mirrors": ["ghcr.example", 3],
        "port": 5000,
    }
    assert problems == []


def test_expand_names_each_problem_by_its_dotted_key() -> None:
    problems: list[str] = []
    document = {"a": {"b": ["ok", "${TOKEN}"]}, "c": "x${1X}y"}
    assert fields.expand(document, {}, problems) == {"a": {"b": ["ok", ""]}, "c": "xy"}
    assert problems == [
        "a.b[1]: environment variable TOKEN is not set (write ${TOKEN:-default} to give a default)",
        "c: malformed variable reference ${1X}",
    ]


def test_section_reports_unknown_keys_and_mistyped_sections() -> None:
    problems: list[str] = []
    top = fields.Section.of({"listen": 1, "lisen": 2, "log": [1]}, "", ("listen", "log"), problems)
    log = top.sub("log", ("level",))
    assert (log.data, log.key) == ({}, "log")
    assert top.sub("metrics", None).data == {}  # absent reads as empty, silently
    assert problems == [
        "lisen: unknown key (allowed: listen, log)",
        "log: expected a mapping, got a list",
    ]


def test_a_document_that_is_not_a_mapping_is_called_the_config_file() -> None:
    problems: list[str] = []
    assert fields.Section.of(["listen"], "", None, problems).data == {}
    assert problems == ["config file: expected a mapping, got a list"]


def test_get_converts_or_records_and_falls_back_to_the_default() -> None:
    problems: list[str] = []
    section = fields.Section.of({"a": {"n": "3", "bad": "x"}}, "", None, problems).sub("a", None)
    assert section.get("n", 0, fields.count) == 3
    assert section.get("missing", 7, fields.count) == 7
    assert section.get("bad", 7, fields.count) == 7
    assert problems == ["a.bad: expected a whole number of 0 or more, got 'x'"]


@pytest.mark.parametrize(
    ("convert", "value", "expected"),
    [
        (fields.text, "x", "x"),
        (fields.flag, False, False),
        (fields.flag, "Yes", True),
        (fields.flag, "off", False),
        (fields.count, 0, 0),
        (fields.count, " 12 ", 12),
        (fields.one_of("debug", "info"), "DEBUG", "debug"),
        (fields.quota, "1.5GB", 1_500_000_000),
        (fields.timeout, "500ms", 0.5),
        (fields.path, "~/cache", Path.home() / "cache"),
        (fields.url, "https://ghcr.io/", "https://ghcr.io"),
        (fields.url, "HTTP://127.0.0.1:5001", "http://127.0.0.1:5001"),
        (fields.listen, "[::1]:6000", ("::1", 6000)),
        (fields.listen, ":8080", ("0.0.0.0", 8080)),
        (fields.listen, "localhost:5000", ("localhost", 5000)),
    ],
)
def test_converter_accepts(
    convert: Callable[[Any], object], value: object, expected: object
) -> None:
    assert convert(value) == expected


@pytest.mark.parametrize(
    ("convert", "value", "message"),
    [
        (fields.text, 5000, "expected a string, got 5000"),
        (fields.flag, "yes please", "expected true or false, got 'yes please'"),
        (fields.count, True, "expected a whole number of 0 or more, got True"),
        (fields.count, -1, "expected a whole number of 0 or more, got -1"),
        (fields.one_of("text", "json"), "xml", "expected one of text, json, got 'xml'"),
        (fields.quota, 0, "must be more than 0 bytes, got 0"),
        (fields.timeout, 0, "must be longer than 0 seconds, got 0"),
        (fields.path, "", "expected a path, got an empty string"),
        (fields.path, {}, "expected a string, got a mapping"),
        (fields.url, "ftp://ghcr.io", f"{URL_HINT}'ftp://ghcr.io'"),
        (fields.url, "https://", f"{URL_HINT}'https://'"),
        (
            fields.url,
            "https://x.io/v2",
            f"{URL_HINT}'https://x.io/v2' (no path, query or fragment)",
        ),
        (
            fields.url,
            "https://u:p@x.io",
            f"{URL_HINT}'https://u:p@x.io' (put credentials in username and password)",
        ),
        (fields.url, "https://x.io:99999", f"{URL_HINT}'https://x.io:99999' (bad port)"),
        (fields.listen, 5000, "expected a string, got 5000"),
        (fields.listen, "::1:5000", f"{LISTEN_HINT}'::1:5000'"),
        (fields.listen, "[nope]:5000", f"{LISTEN_HINT}'[nope]:5000'"),
        (fields.listen, "host:0", "port 0 is out of range 1-65535"),
    ],
)
def test_converter_refuses(convert: Callable[[Any], object], value: object, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        convert(value)
    assert str(caught.value) == message

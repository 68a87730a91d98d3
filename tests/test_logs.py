"""Log output: JSON lines carry an access line's fields as keys."""

from __future__ import annotations

import json
import logging

import pytest

from mirror.config import LogSettings
from mirror.logs import configure_logging


def test_json_lines_carry_fields(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(LogSettings(level="info", format="json"))
    try:
        fields = {"method": "GET", "status": 200, "cache": "hit"}
        logging.getLogger("mirror.access").info("GET / 200", extra={"fields": fields})
    finally:
        configure_logging(LogSettings(level="warning", format="text"))
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["logger"] == "mirror.access"
    assert line["message"] == "GET / 200"
    assert (line["method"], line["status"], line["cache"]) == ("GET", 200, "hit")

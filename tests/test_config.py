"""The settings dataclasses: every field is documented in the example config."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

from mirror.config import (
    LogSettings,
    ManifestSettings,
    MetricsSettings,
    Settings,
    StorageSettings,
    TlsSettings,
    UpstreamSettings,
)

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.yml"


def test_example_config_documents_every_key() -> None:
    text = EXAMPLE.read_text()
    sections = (StorageSettings, TlsSettings, ManifestSettings, MetricsSettings, LogSettings)
    keys = [f.name for section in sections for f in fields(section)]
    keys += [f.name for f in fields(UpstreamSettings) if f.name != "name"]
    keys += [f.name for f in fields(Settings) if f.name not in ("host", "port")] + ["listen"]
    for key in keys:
        # each key appears (tls commented out) with a comment line right above it
        assert re.search(rf"^ *# .*\n *(# *)?{key}:", text, re.MULTILINE), key

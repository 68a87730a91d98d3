"""Typed keys for the state the app holds; wiring in `app`, use in `routes`."""

from __future__ import annotations

from aiohttp import web

from mirror.blobs import BlobCache
from mirror.config import Settings
from mirror.listings import Listings
from mirror.manifests import ManifestCache
from mirror.metrics import Metrics

SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
MANIFESTS = web.AppKey("manifests", ManifestCache)
BLOBS = web.AppKey("blobs", BlobCache)
LISTINGS = web.AppKey("listings", Listings)

"""Typed keys for the state the app holds; wiring in `app`, use in `routes`."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from mirror.blobs import BlobCache
from mirror.config import Settings
from mirror.evict import Quota
from mirror.index import BlobIndex
from mirror.listings import Listings
from mirror.manifests import ManifestCache
from mirror.metrics import Metrics
from mirror.refs import Refs
from mirror.sendfile import Senders
from mirror.storage.disk import DiskBlobStore
from mirror.upstream import UpstreamClient

SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
MANIFESTS = web.AppKey("manifests", ManifestCache)
BLOBS = web.AppKey("blobs", BlobCache)
LISTINGS = web.AppKey("listings", Listings)
STORE = web.AppKey("store", DiskBlobStore)
REFS = web.AppKey("refs", Refs)
INDEX = web.AppKey("index", BlobIndex)
QUOTA = web.AppKey("quota", Quota)
CLIENTS = web.AppKey("clients", Mapping[str, UpstreamClient])
SENDERS = web.AppKey("senders", Senders)

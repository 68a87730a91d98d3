"""The registry vocabulary: name, tag and digest grammar, media types, header names.

Everything here is pure: validation raises the matching `errors` class before a
name or digest reaches the disk or an upstream.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from mirror.errors import DigestInvalid, NameInvalid, ReferenceInvalid

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_TYPES = (OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST)
# Sent upstream on every manifest request so the cache holds the multi-arch form.
UPSTREAM_ACCEPT = ", ".join(MANIFEST_TYPES)

CONTENT_DIGEST = "Docker-Content-Digest"
API_VERSION = "Docker-Distribution-API-Version"
API_VERSION_VALUE = "registry/2.0"

MAX_NAME_LENGTH = 255
# distribution's limit on manifests it will accept; more is not a manifest.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024

_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_NAME_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_SHA256_RE = re.compile(r"sha256:[a-f0-9]{64}")


def validate_name(name: str) -> str:
    """Return `name` if it is a valid repository name; raise NameInvalid otherwise."""
    if len(name) > MAX_NAME_LENGTH:
        raise NameInvalid(f"repository name is longer than {MAX_NAME_LENGTH} characters")
    if not _NAME_RE.fullmatch(name):
        raise NameInvalid(
            f"invalid repository name {name!r}: lower-case path components of "
            "[a-z0-9] joined by '.', '_', '__' or '-', separated by '/'"
        )
    return name


def validate_digest(digest: str) -> str:
    """Return `digest` if it is `sha256:` and 64 lower-case hex digits; raise DigestInvalid."""
    if not _SHA256_RE.fullmatch(digest):
        raise DigestInvalid(f"invalid digest {digest!r}: expected sha256:<64 lower-case hex>")
    return digest


def is_digest(reference: str) -> bool:
    """True if a manifest reference is a digest (contains ':'), false if it is a tag."""
    return ":" in reference


def validate_reference(reference: str) -> str:
    """Validate a manifest reference: a digest (DigestInvalid) or a tag (ReferenceInvalid)."""
    if is_digest(reference):
        return validate_digest(reference)
    if not _TAG_RE.fullmatch(reference):
        raise ReferenceInvalid(
            f"invalid tag {reference!r}: up to 128 characters of [A-Za-z0-9_.-], "
            "not starting with '.' or '-'"
        )
    return reference


def merge_accept(values: Iterable[str]) -> frozenset[str]:
    """Merge Accept header lines (several lines, comma-joined, with q-values) into media types."""
    types: set[str] = set()
    for value in values:
        for part in value.split(","):
            media_type = part.split(";", 1)[0].strip().lower()
            if media_type:
                types.add(media_type)
    return frozenset(types)


def accepts(accepted: frozenset[str], media_type: str) -> bool:
    """True if a client that sent `accepted` can take a manifest of `media_type`.

    No Accept at all, `*/*` and `application/*` accept everything, as registries do.
    """
    if not accepted or "*/*" in accepted or "application/*" in accepted:
        return True
    return media_type.lower() in accepted


def hex_part(digest: str) -> str:
    """The hex after `sha256:` of a validated digest."""
    return digest.split(":", 1)[1]

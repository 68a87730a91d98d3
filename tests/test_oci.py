"""Name, tag and digest grammar, and Accept merging."""

from __future__ import annotations

import pytest

from mirror.errors import DigestInvalid, NameInvalid, ReferenceInvalid
from mirror.oci import (
    DOCKER_MANIFEST,
    OCI_INDEX,
    accepts,
    merge_accept,
    validate_digest,
    validate_name,
    validate_reference,
)

GOOD_DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    "name", ["alpine", "library/alpine", "a/b/c", "my-org/my_app", "a.b/c__d", "x--y"]
)
def test_valid_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "..", "a/../b", "Alpine", "a//b", "/a", "a/", "-a", "a_", "a b", "a/.b", "a" * 256],
)
def test_invalid_names(name: str) -> None:
    with pytest.raises(NameInvalid):
        validate_name(name)


@pytest.mark.parametrize(
    "digest",
    [
        "sha256:" + "A" * 64,
        "sha256:" + "a" * 63,
        "sha512:" + "a" * 128,
        "sha256:../../etc/passwd",
        "a" * 64,
    ],
)
def test_invalid_digests(digest: str) -> None:
    with pytest.raises(DigestInvalid):
        validate_digest(digest)


def test_references() -> None:
    assert validate_reference("v1.2_3-rc") == "v1.2_3-rc"
    assert validate_reference(GOOD_DIGEST) == GOOD_DIGEST
    for bad in (".hidden", "-x", "a" * 129, "a/b", "x y"):
        with pytest.raises(ReferenceInvalid):
            validate_reference(bad)
    with pytest.raises(DigestInvalid):
        validate_reference("sha256:short")


def test_accept_lines_are_merged() -> None:
    merged = merge_accept([f"{DOCKER_MANIFEST}", f"{OCI_INDEX};q=0.9, */*;q=0.1"])
    assert merged == {DOCKER_MANIFEST, OCI_INDEX, "*/*"}
    assert accepts(merged, "application/anything")
    only = merge_accept([DOCKER_MANIFEST])
    assert accepts(only, DOCKER_MANIFEST)
    assert not accepts(only, OCI_INDEX)
    assert accepts(frozenset(), OCI_INDEX)

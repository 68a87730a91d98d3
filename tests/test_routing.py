"""Routing a repository name to an upstream."""

from __future__ import annotations

import pytest

from mirror.config import UpstreamSettings
from mirror.errors import NameInvalid, NameUnknown
from mirror.routing import Target, client_name, resolve

UPSTREAMS = {
    "docker.io": UpstreamSettings("docker.io", "https://registry-1.docker.io"),
    "ghcr.io": UpstreamSettings("ghcr.io", "https://ghcr.io"),
}


@pytest.mark.parametrize(
    ("name", "ns", "expected"),
    [
        ("alpine", None, Target("docker.io", "library/alpine")),
        ("library/alpine", None, Target("docker.io", "library/alpine")),
        ("ghcr.io/org/app", None, Target("ghcr.io", "org/app")),
        ("docker.io/alpine", None, Target("docker.io", "library/alpine")),
        ("org/app", "ghcr.io", Target("ghcr.io", "org/app")),
        ("alpine", "docker.io", Target("docker.io", "library/alpine")),
        ("ghcr.io", None, Target("docker.io", "library/ghcr.io")),
    ],
)
def test_resolve(name: str, ns: str | None, expected: Target) -> None:
    target = resolve(UPSTREAMS, "docker.io", name, ns)
    assert target == expected


def test_library_rule_is_docker_hub_only() -> None:
    assert resolve(UPSTREAMS, "ghcr.io", "app", None) == Target("ghcr.io", "app")


def test_unknown_ns_and_bad_names() -> None:
    with pytest.raises(NameUnknown, match=r"quay\.io"):
        resolve(UPSTREAMS, "docker.io", "app", "quay.io")
    with pytest.raises(NameInvalid):
        resolve(UPSTREAMS, "docker.io", "ghcr.io/../etc", None)
    with pytest.raises(NameInvalid):
        resolve(UPSTREAMS, "docker.io", "Upper/case", None)


def test_client_name_inverts_resolve() -> None:
    for name in ("library/alpine", "ghcr.io/org/app"):
        assert (
            client_name(UPSTREAMS, "docker.io", resolve(UPSTREAMS, "docker.io", name, None)) == name
        )

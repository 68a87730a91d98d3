"""Which upstream a request is for, and the repository name to ask it for.

Order: containerd's `?ns=<registry>`, then a first path segment naming an
upstream, then the default upstream; Docker Hub adds `library/` to one-segment
names. Pure: no HTTP server, no disk.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from mirror.config import UpstreamSettings
from mirror.errors import NameUnknown
from mirror.oci import validate_name


@dataclass(frozen=True, slots=True)
class Target:
    """An upstream by routing name, and the repository name as that upstream knows it."""

    upstream: str
    repo: str


def resolve(
    upstreams: Mapping[str, UpstreamSettings], default: str, name: str, ns: str | None
) -> Target:
    """Route a request's repository `name` (and `?ns=`) to an upstream.

    Raises NameInvalid for a name outside the grammar, NameUnknown for an `ns`
    that names no configured upstream.
    """
    if ns:
        if ns not in upstreams:
            known = ", ".join(sorted(upstreams))
            raise NameUnknown(
                f"no upstream is configured for registry {ns!r} (?ns=); have: {known}"
            )
        upstream, repo = ns, name
    else:
        first, _, rest = name.partition("/")
        if rest and first in upstreams:
            upstream, repo = first, rest
        else:
            upstream, repo = default, name
    validate_name(repo)
    if upstreams[upstream].library_prefix and "/" not in repo:
        repo = f"library/{repo}"
    return Target(upstream, repo)


def client_name(upstreams: Mapping[str, UpstreamSettings], default: str, target: Target) -> str:
    """The name a client uses for `target` without `?ns=`: the inverse of `resolve`."""
    if target.upstream == default:
        return target.repo
    return f"{target.upstream}/{target.repo}"

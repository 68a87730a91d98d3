"""Tag lists and the catalog: tags from the upstream (the cache's own when it is down),
the catalog from what the cache holds. Must not know the HTTP server.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mirror.config import UpstreamSettings
from mirror.errors import TooManyRequests, UpstreamUnavailable
from mirror.refs import Refs
from mirror.routing import Target, client_name
from mirror.upstream import UpstreamClient

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a list: the JSON document and the query of the next page, if any."""

    document: dict[str, Any]
    next_query: dict[str, str] | None


def paginate(items: list[str], n: int | None, last: str | None) -> tuple[list[str], bool]:
    """Items after `last`, at most `n` of them; and whether more remain."""
    remaining = [item for item in items if last is None or item > last]
    if n is None or n >= len(remaining):
        return remaining, False
    return remaining[:n], True


class Listings:
    """Answers `tags/list` and `_catalog`."""

    def __init__(
        self,
        upstreams: Mapping[str, UpstreamSettings],
        clients: Mapping[str, UpstreamClient],
        default: str,
        refs: Refs,
    ) -> None:
        self._upstreams = upstreams
        self._clients = clients
        self._default = default
        self._refs = refs

    async def tags(self, target: Target, name: str, params: Mapping[str, str]) -> Page:
        """The upstream's tag list for a repository the client calls `name` (`n`/`last`
        passed through).

        When the upstream is down or rate-limiting, the tags the cache holds instead.
        """
        try:
            async with self._clients[target.upstream].request(
                "GET", f"{target.repo}/tags/list", kind="tags", repo=target.repo, params=params
            ) as response:
                document = json.loads(await response.read())
                more = "next" in response.headers.get("Link", "")
        except (UpstreamUnavailable, TooManyRequests) as error:
            log.warning("listing cached tags of %s: %s", target.repo, error.message)
            tags, more = paginate(
                self._refs.tags(target.upstream, target.repo), _n(params), params.get("last")
            )
            document = {"name": target.repo, "tags": tags}
        document["name"] = name
        tags = document.get("tags") or []
        if more and tags:
            return Page(document, _next(params, tags[-1]))
        return Page(document, None)

    def catalog(self, params: Mapping[str, str]) -> Page:
        """Every repository the cache holds, as clients name them, sorted."""
        names = sorted(
            client_name(self._upstreams, self._default, Target(upstream, repo))
            for upstream in self._upstreams
            for repo in self._refs.repositories(upstream)
        )
        page, more = paginate(names, _n(params), params.get("last"))
        return Page({"repositories": page}, _next(params, page[-1]) if more else None)


def _n(params: Mapping[str, str]) -> int | None:
    value = params.get("n")
    return int(value) if value and value.isdigit() else None


def _next(params: Mapping[str, str], last: str) -> dict[str, str]:
    query = {"last": last}
    if "n" in params:
        query["n"] = params["n"]
    return query

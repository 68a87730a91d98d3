"""The requests each real client sent the mirror for a pull, rendered as docs/clients.md.

Owns: collecting (client, scenario, mirror access records) while the client tests run and
rendering them as markdown, digests shortened and named after what they are (index,
manifest, config, layer). The client tests write the file only when
`MIRROR_E2E_CLIENTS_DOC` names it, so the page always comes from a real run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from .images import DOCKER_LIST, Image, ImageIndex
from .mirrorlog import MirrorRequest

DOC_ENV = "MIRROR_E2E_CLIENTS_DOC"
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
COLD = "cold"  # a pull by tag of an image neither the client nor the mirror holds
HELD = "held"  # the same pull again, the client still holding the image


@dataclass(frozen=True, slots=True)
class Scenario:
    client: str
    key: str  # COLD and HELD feed the summary table
    title: str
    command: str
    requests: tuple[MirrorRequest, ...]


@dataclass
class SequenceBook:
    """Scenarios per client, in the order the tests recorded them, and what each digest is."""

    clients: dict[str, str] = field(default_factory=dict)  # label -> heading with version
    scenarios: list[Scenario] = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)

    def name_digests(self, *items: Image | ImageIndex) -> None:
        """Remember what each digest of `items` is, for the `what` column."""
        for item in items:
            if isinstance(item, ImageIndex):
                kind = "manifest list" if item.media_type == DOCKER_LIST else "OCI index"
                self.names[item.digest] = kind
                for image in item.images:
                    self._name_image(image, f"{image.platform.architecture} ")
            else:
                self._name_image(item, "")

    def _name_image(self, image: Image, prefix: str) -> None:
        self.names[image.digest] = f"{prefix}manifest"
        self.names[image.config.digest] = f"{prefix}config"
        count = len(image.layers)
        for n, layer in enumerate(image.layers, 1):
            self.names[layer.digest] = f"{prefix}layer {n}/{count} ({layer.size:,} B)"

    def record(
        self, client: str, key: str, title: str, command: str, requests: list[MirrorRequest]
    ) -> None:
        self.scenarios.append(Scenario(client, key, title, command, tuple(requests)))

    def _find(self, client: str, key: str) -> tuple[MirrorRequest, ...] | None:
        found = [s.requests for s in self.scenarios if s.client == client and s.key == key]
        return found[0] if found else None

    def _short(self, request: MirrorRequest) -> str:
        if request.kind == "base":
            return f"{request.method} /v2/"
        if request.kind == "manifest":
            by_digest = (request.reference or "").startswith("sha256:")
            return f"{request.method} {'manifest by digest' if by_digest else 'tag'}"
        if request.kind == "blob":
            return f"{request.method} {self.what(request).split(' (')[0]}"
        return f"{request.method} {request.path}"

    def summary(self) -> list[str]:
        """One row per client: how it starts a pull, how it names the upstream, what a
        re-pull of an image it holds costs."""
        lines = [
            "| client | TLS attempt first | `GET /v2/` | manifest requests | upstream chosen by "
            "| blob GETs, cold pull | re-pull of a held image |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for client, heading in self.clients.items():
            cold, held = self._find(client, COLD), self._find(client, HELD)
            if cold is None or held is None:
                continue
            manifests = [self._short(r) for r in cold if r.kind == "manifest"]
            hint = sorted({q for r in cold for q in r.query.split("&") if q.startswith("ns=")})
            repull = [self._short(r) for r in held if not r.tls_probe and r.kind != "blob"]
            blobs = [self._short(r) for r in held if r.kind == "blob"]
            repull += blobs if len(blobs) < 2 else [f"{len(blobs)} blob GETs"]
            lines.append(
                f"| {heading.split(' (')[0]} | {'yes' if any(r.tls_probe for r in cold) else 'no'} "
                f"| {'yes' if any(r.kind == 'base' for r in cold) else 'no'} "
                f"| {', '.join(manifests)} "
                f"| {', '.join(f'`?{q}`' for q in hint) or 'default upstream'} "
                f"| {sum(1 for r in cold if r.kind == 'blob' and r.method == 'GET')} "
                f"| {', '.join(repull)} |"
            )
        return lines

    def what(self, request: MirrorRequest) -> str:
        if request.tls_probe:
            return "a TLS handshake, refused; the client retries in plain HTTP"
        if request.kind == "base":
            return "API version check"
        digest = _DIGEST.search(request.path)
        if digest is not None:
            return self.names.get(digest.group(), "")
        if request.kind == "manifest":
            return "tag"
        return ""

    def render(self, header: str) -> str:
        lines = [header.rstrip(), "", *self.summary(), ""]
        for client, heading in self.clients.items():
            scenarios = [s for s in self.scenarios if s.client == client]
            if not scenarios:
                continue
            lines += [f"## {heading}", ""]
            for scenario in scenarios:
                lines += [f"### {scenario.title}", "", f"`{scenario.command}`", ""]
                lines += [
                    "| # | request | status | cache | what |",
                    "| --- | --- | --- | --- | --- |",
                ]
                for n, request in enumerate(scenario.requests, 1):
                    target = _DIGEST.sub(lambda m: m.group()[:19] + "…", request.target)
                    lines.append(
                        f"| {n} | `{request.method} {target}` | {request.status} "
                        f"| {request.cache} | {self.what(request)} |"
                    )
                if not scenario.requests:
                    lines.append("| | (no request) | | | |")
                lines.append("")
        return "\n".join(lines)

    def write(self, path: Path, header: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.render(header))

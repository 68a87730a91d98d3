"""A recording fake upstream registry for unit tests, with faults on demand.

Owns an aiohttp app serving the read side of the v2 API from plain dicts, a list of
every request it received, and programmable misbehaviour: Bearer or Basic auth, wrong
bytes, dropped connections, a gate that stalls blob bodies, canned answers per path,
and blob redirects to a `FakeBlobHost`. It knows nothing about the mirror.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from pytest_aiohttp.plugin import AiohttpServer

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
SERVICE = "fake-registry"
TOKEN_PATH = "/token"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def digest_of(data: bytes) -> str:
    """The `sha256:<hex>` digest of `data`."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, slots=True)
class Recorded:
    """One request the fake received; `path` has no query string."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: CIMultiDictProxy[str]


@dataclass(frozen=True, slots=True)
class Canned:
    """An answer served instead of the real one (see `FakeRegistry.fail`)."""

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class FakeImage:
    """What `add_image` stored: the manifest and the digests it points at."""

    repo: str
    tag: str
    digest: str
    manifest: bytes
    media_type: str
    config_digest: str
    layer_digests: tuple[str, ...]


def _basic(username: str, password: str | None) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password or ''}".encode()).decode()


def _json(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


def _error(status: int, code: str, message: str, headers: Mapping[str, str] | None = None
           ) -> web.Response:
    body = _json({"errors": [{"code": code, "message": message, "detail": None}]})
    return web.Response(status=status, body=body, content_type="application/json",
                        headers=headers)


async def _stream(request: web.Request, data: bytes, *, first: int, gate: asyncio.Event | None,
                  drop_after: int | None, headers: Mapping[str, str]) -> web.StreamResponse:
    """Send `data` with its full Content-Length: `first` bytes, then wait for `gate`, then
    the rest; with `drop_after`, abort the connection after that many bytes instead."""
    response = web.StreamResponse(headers=headers)
    response.content_length = len(data)
    response.content_type = "application/octet-stream"
    await response.prepare(request)
    limit = len(data) if drop_after is None else min(drop_after, len(data))
    await response.write(data[: min(first, limit)])
    if gate is not None:
        await gate.wait()
    if first < limit:
        await response.write(data[first:limit])
    if drop_after is not None:
        assert request.transport is not None
        request.transport.abort()
        raise asyncio.CancelledError
    await response.write_eof()
    return response


class FakeRegistry:
    """An upstream registry in a dict. Set attributes to program it, read `requests` after.

    Content: `blobs` (digest → bytes, shared by every repo), `manifests` ((repo,
    reference) → (bytes, media type)); fill them with `add_blob`, `add_manifest`,
    `add_image`, `add_index`. Faults: `auth`, `username`/`password`, `token_expires_in`,
    `corrupt`, `drop_after`, `gate`/`first_chunk`, `fail()`, `redirect_blobs`,
    `extra_headers`, `revoke_tokens()`. `url` is set once the app is served (`start`).
    """

    def __init__(self) -> None:
        self.url = ""
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[tuple[str, str], tuple[bytes, str]] = {}
        self.requests: list[Recorded] = []
        self.auth: Literal["none", "bearer", "basic"] = "none"
        self.username: str | None = None  # required by the token endpoint / Basic when set
        self.password: str | None = None
        self.token_expires_in: int | None = 300  # None: the token answer omits expires_in
        self.tokens: dict[str, str] = {}  # issued token → the scope it grants
        self.corrupt: set[str] = set()  # digests served with their last byte flipped
        self.drop_after: dict[str, int] = {}  # digest → bytes sent before the abort
        self.gate: asyncio.Event | None = None  # blob GETs wait on it after `first_chunk`
        self.first_chunk = 1024
        self.canned: dict[str, list[Canned]] = {}  # path → answers to serve first, in order
        self.redirect_blobs: str | None = None  # a FakeBlobHost's url: blobs answer 307 there
        self.extra_headers: dict[str, str] = {}  # added to every answer (e.g. ratelimit-*)

    # -- content -------------------------------------------------------------------------

    def add_blob(self, data: bytes) -> str:
        """Store a blob; return its digest."""
        digest = digest_of(data)
        self.blobs[digest] = data
        return digest

    def add_manifest(self, repo: str, tag: str | None, body: bytes,
                     media_type: str = OCI_MANIFEST) -> str:
        """Store manifest bytes under their digest and, if given, under `tag`; return digest."""
        digest = digest_of(body)
        self.manifests[(repo, digest)] = (body, media_type)
        if tag is not None:
            self.manifests[(repo, tag)] = (body, media_type)
        return digest

    def add_image(self, repo: str, tag: str | None, layers: Sequence[bytes],
                  config: bytes = b'{"architecture":"amd64","os":"linux"}') -> FakeImage:
        """Store a config blob, layer blobs and an OCI manifest pointing at them."""
        config_digest = self.add_blob(config)
        layer_digests = tuple(self.add_blob(layer) for layer in layers)
        manifest = _json({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER, "digest": d, "size": len(data)}
                       for d, data in zip(layer_digests, layers, strict=True)],
        })
        digest = self.add_manifest(repo, tag, manifest, OCI_MANIFEST)
        return FakeImage(repo, tag or digest, digest, manifest, OCI_MANIFEST, config_digest,
                         layer_digests)

    def add_index(self, repo: str, tag: str | None, images: Sequence[FakeImage]) -> str:
        """Store an OCI image index over `images` (linux/amd64, linux/arm64, ...); digest."""
        architectures = ("amd64", "arm64", "s390x", "ppc64le", "riscv64")
        index = _json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
            {"mediaType": image.media_type, "digest": image.digest, "size": len(image.manifest),
             "platform": {"architecture": arch, "os": "linux"}}
            for image, arch in zip(images, architectures, strict=False)]})
        return self.add_manifest(repo, tag, index, OCI_INDEX)

    # -- faults and inspection -----------------------------------------------------------

    def fail(self, path: str, status: int, *, times: int = 1,
             headers: Mapping[str, str] | None = None, body: bytes = b"") -> None:
        """Answer the next `times` requests for `path` with `status` (before any auth check)."""
        canned = Canned(status, dict(headers or {}), body)
        self.canned.setdefault(path, []).extend([canned] * times)

    def revoke_tokens(self) -> None:
        """Forget every issued token, as a registry whose tokens expired would."""
        self.tokens.clear()

    def calls(self, method: str | None = None, path: str | None = None) -> list[Recorded]:
        """Recorded requests, optionally only those with this method and/or exact path."""
        return [r for r in self.requests
                if (method is None or r.method == method) and (path is None or r.path == path)]

    def release(self) -> None:
        """Open the gate so stalled blob bodies finish (fixtures call it on teardown)."""
        if self.gate is not None:
            self.gate.set()

    # -- the app -------------------------------------------------------------------------

    def app(self) -> web.Application:
        """A fresh aiohttp app serving this registry's state."""
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get("/v2/", self._base)
        app.router.add_get(TOKEN_PATH, self._token)
        app.router.add_get("/v2/{name:.+}/manifests/{reference}", self._manifest)
        app.router.add_get("/v2/{name:.+}/blobs/{digest}", self._blob)
        app.router.add_get("/v2/{name:.+}/tags/list", self._tags)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.requests.append(Recorded(request.method, request.path, dict(request.query),
                                      CIMultiDictProxy(CIMultiDict(request.headers))))
        queue = self.canned.get(request.path)
        if queue:
            canned = queue.pop(0)
            response: web.StreamResponse = web.Response(
                status=canned.status, body=canned.body, headers=canned.headers)
        elif request.path != TOKEN_PATH and (refusal := self._refuse(request)) is not None:
            response = refusal
        else:
            response = await handler(request)
        if not response.prepared:
            response.headers.update(self.extra_headers)
        return response

    def _refuse(self, request: web.Request) -> web.Response | None:
        """The 401 a registry with `auth` answers to this request, or None to let it in."""
        given = request.headers.get("Authorization", "")
        if self.auth == "basic":
            if self.username and given == _basic(self.username, self.password):
                return None
            challenge = f'Basic realm="{SERVICE}"'
        elif self.auth == "bearer":
            repo = request.match_info.get("name")
            scope = self.tokens.get(given.removeprefix("Bearer ")) if given else None
            if scope is not None and (repo is None or _grants(scope, repo)):
                return None
            realm = f"{request.url.origin()}{TOKEN_PATH}"
            challenge = f'Bearer realm="{realm}",service="{SERVICE}"'
            if repo is not None:
                challenge += f',scope="repository:{repo}:pull"'
            if given:
                challenge += ',error="invalid_token"'
        else:
            return None
        return _error(401, "UNAUTHORIZED", "authentication required",
                      {"WWW-Authenticate": challenge})

    async def _token(self, request: web.Request) -> web.Response:
        if self.username is not None:
            expected = _basic(self.username, self.password)
            if request.headers.get("Authorization") != expected:
                return web.json_response({"details": "incorrect username or password"},
                                         status=401)
        token = f"token-{len(self.requests)}"
        self.tokens[token] = " ".join(request.query.getall("scope", []))
        answer: dict[str, Any] = {"token": token}
        if self.token_expires_in is not None:
            answer["expires_in"] = self.token_expires_in
        return web.json_response(answer)

    async def _base(self, request: web.Request) -> web.Response:
        return web.json_response({}, headers={"Docker-Distribution-API-Version": "registry/2.0"})

    async def _manifest(self, request: web.Request) -> web.Response:
        repo, reference = request.match_info["name"], request.match_info["reference"]
        found = self.manifests.get((repo, reference))
        if found is None:
            if not any(name == repo for name, _ in self.manifests):
                return _error(404, "NAME_UNKNOWN", f"repository {repo} not known")
            return _error(404, "MANIFEST_UNKNOWN", f"manifest {reference} unknown")
        body, media_type = found
        headers = {"Docker-Content-Digest": digest_of(body), "Content-Type": media_type}
        return web.Response(body=body, headers=headers)

    async def _blob(self, request: web.Request) -> web.StreamResponse:
        digest = request.match_info["digest"]
        data = self.blobs.get(digest)
        if data is None:
            return _error(404, "BLOB_UNKNOWN", f"blob {digest} unknown")
        if self.redirect_blobs is not None:
            location = f"{self.redirect_blobs}/blobs/{digest}?sig=fake"
            return web.Response(status=307, headers={"Location": location})
        if digest in self.corrupt:
            data = data[:-1] + bytes([data[-1] ^ 0xFF]) if data else b"\0"
        headers = {**self.extra_headers, "Docker-Content-Digest": digest}
        if request.method == "HEAD":
            return web.Response(body=data, headers=headers,
                                content_type="application/octet-stream")
        return await _stream(request, data, first=self.first_chunk, gate=self.gate,
                             drop_after=self.drop_after.get(digest), headers=headers)

    async def _tags(self, request: web.Request) -> web.Response:
        repo = request.match_info["name"]
        if not any(name == repo for name, _ in self.manifests):
            return _error(404, "NAME_UNKNOWN", f"repository {repo} not known")
        tags = sorted(ref for name, ref in self.manifests if name == repo and ":" not in ref)
        last = request.query.get("last")
        if last is not None:
            tags = [tag for tag in tags if tag > last]
        n = request.query.get("n")
        headers = {}
        if n is not None and len(tags) > int(n):
            tags = tags[: int(n)]
            headers["Link"] = f'</v2/{repo}/tags/list?n={n}&last={tags[-1]}>; rel="next"'
        return web.json_response({"name": repo, "tags": tags}, headers=headers)


def _grants(scope: str, repo: str) -> bool:
    """True if a token scope (space-separated `repository:<name>:<actions>`) allows pulls."""
    for item in scope.split():
        kind, _, rest = item.partition(":")
        name, _, actions = rest.rpartition(":")
        if kind == "repository" and name == repo and {"pull", "*"} & set(actions.split(",")):
            return True
    return False


class FakeBlobHost:
    """Blob storage a registry redirects to (a CDN): serves `/blobs/<digest>`, records all."""

    def __init__(self, blobs: Mapping[str, bytes]) -> None:
        self.url = ""
        self.blobs = blobs
        self.requests: list[Recorded] = []

    def app(self) -> web.Application:
        """A fresh aiohttp app serving `blobs` by digest, whatever the query string."""
        app = web.Application()
        app.router.add_get("/blobs/{digest}", self._blob)
        return app

    async def _blob(self, request: web.Request) -> web.Response:
        self.requests.append(Recorded(request.method, request.path, dict(request.query),
                                      CIMultiDictProxy(CIMultiDict(request.headers))))
        data = self.blobs.get(request.match_info["digest"])
        if data is None:
            return web.Response(status=404)
        return web.Response(body=data, content_type="application/octet-stream")


async def start(fake: FakeRegistry | FakeBlobHost, aiohttp_server: AiohttpServer) -> None:
    """Serve `fake` on 127.0.0.1 with pytest-aiohttp's server factory and set its `url`."""
    server = await aiohttp_server(fake.app(), host="127.0.0.1")
    fake.url = str(server.make_url("")).rstrip("/")

"""A token issuer for the reference registry's `auth: token`, run in-process on a thread.

Owns: a throwaway CA and signing certificate (the CA bundle is what the registry's
`rootcertbundle` trusts), RS256 JWTs carrying the signing cert in `x5c`, the access
policy (anonymous pulls public repositories; configured users pull everything; a
pushing user may push) and a record of every token request for assertions.
It knows nothing about the registry process or the mirror.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

SERVICE = "e2e-registry"
ISSUER = "e2e-token-issuer"


@dataclass(frozen=True, slots=True)
class User:
    """Credentials the issuer accepts; `push` also grants push on every repository."""

    username: str
    password: str
    push: bool = False


SEEDER = User("e2e-seeder", "seeder-secret", push=True)  # pushes the suite's images
MIRROR_USER = User("e2e-mirror", "mirror-secret")  # the mirror's upstream credentials


@dataclass(frozen=True, slots=True)
class Access:
    """One `access` claim entry, also one requested scope."""

    type: str
    name: str
    actions: tuple[str, ...]

    def claim(self) -> dict[str, Any]:
        return {"type": self.type, "name": self.name, "actions": list(self.actions)}


@dataclass(frozen=True, slots=True)
class TokenRequest:
    """What one client asked for and what it got (`granted` is empty for a refusal)."""

    method: str
    username: str | None  # None: anonymous; set even when the password was wrong
    authenticated: bool
    service: str | None
    scopes: tuple[Access, ...]
    granted: tuple[Access, ...]
    status: int
    user_agent: str | None
    at: float = field(compare=False)


def parse_scope(scope: str) -> Access | None:
    """Parse `type:name:actions` (a name may itself hold ':' e.g. a host:port); None if bad."""
    kind, sep, rest = scope.partition(":")
    name, sep2, actions = rest.rpartition(":")
    if not sep or not sep2 or not kind or not name:
        return None
    return Access(kind, name, tuple(a for a in actions.split(",") if a))


class _CertificateAuthority:
    """A self-signed CA and one RSA signing certificate issued by it."""

    def __init__(self) -> None:
        now = dt.datetime.now(dt.UTC)
        validity = (now - dt.timedelta(hours=1), now + dt.timedelta(days=2))
        ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mirror e2e token CA")])
        self.ca_cert = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(validity[0])
            .not_valid_after(validity[1])
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(cert_sign=True), critical=True)
            .sign(ca_key, hashes.SHA256())
        )
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ISSUER)]))
            .issuer_name(ca_name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(validity[0])
            .not_valid_after(validity[1])
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=False), critical=True)
            .sign(ca_key, hashes.SHA256())
        )

    def bundle_pem(self) -> bytes:
        return self.ca_cert.public_bytes(serialization.Encoding.PEM)

    def x5c(self) -> list[str]:
        return [base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()]


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenIssuer:
    """The issuer: `with TokenIssuer(workdir, users, private) as issuer:` serves on a free port.

    `realm` is the URL to put in the registry's config, `bundle_path` its
    `rootcertbundle`. Anonymous clients get `pull` on repositories not listed in
    `private`; a listed user with the right password gets `pull` everywhere (and
    `push` when `User.push`); a wrong password is refused with 401. Tokens live
    `token_ttl` seconds. Every request is recorded in `requests` (thread-safe).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        users: Iterable[User],
        private: Iterable[str] = (),
        service: str = SERVICE,
        issuer: str = ISSUER,
        token_ttl: int = 300,
    ) -> None:
        self.service = service
        self.issuer = issuer
        self.token_ttl = token_ttl
        self.users = {u.username: u for u in users}
        self.private = frozenset(private)
        self._ca = _CertificateAuthority()
        self.bundle_path = workdir / "token-ca-bundle.pem"
        self.bundle_path.write_bytes(self._ca.bundle_pem())
        self._lock = threading.Lock()
        self._requests: list[TokenRequest] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # lifecycle -----------------------------------------------------------

    def start(self) -> None:
        """Bind 127.0.0.1 on a free port and serve on a background thread."""
        if self._server is not None:
            raise RuntimeError("token issuer already started")
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name="e2e-token-issuer", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and join the thread. Idempotent."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=10)

    def __enter__(self) -> TokenIssuer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("token issuer not started")
        port: int = self._server.server_address[1]
        return port

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    # records -------------------------------------------------------------

    @property
    def requests(self) -> list[TokenRequest]:
        """A snapshot of every token request so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def _record(self, request: TokenRequest) -> None:
        with self._lock:
            self._requests.append(request)

    # policy --------------------------------------------------------------

    def grant(self, user: User | None, wanted: Access) -> Access | None:
        """The part of `wanted` this caller may have, or None for nothing."""
        if wanted.type == "registry" and wanted.name == "catalog":
            allowed: set[str] = {"*"} if user is not None else set()
        elif wanted.type != "repository":
            allowed = set()
        elif user is None:
            allowed = set() if wanted.name in self.private else {"pull"}
        else:
            allowed = {"pull", "push", "delete", "*"} if user.push else {"pull"}
        actions = tuple(a for a in wanted.actions if a in allowed)
        return Access(wanted.type, wanted.name, actions) if actions else None

    def issue(self, subject: str, access: Iterable[Access]) -> tuple[str, int, str]:
        """Sign a token; returns (jwt, expires_in, issued_at in RFC 3339)."""
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": self._ca.x5c()}
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.service,
            "exp": now + self.token_ttl,
            "nbf": now - 1,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": [a.claim() for a in access],
        }
        signing_input = ".".join(
            _b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
        )
        signature = self._ca.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        issued_at = dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return f"{signing_input}.{_b64url(signature)}", self.token_ttl, issued_at

    def answer(
        self,
        method: str,
        params: Mapping[str, list[str]],
        basic: tuple[str, str] | None,
        user_agent: str | None,
    ) -> tuple[int, dict[str, Any]]:
        """Handle one token request (GET query or POST form); returns (status, JSON body)."""
        # POST (OAuth2 form) carries credentials as fields rather than Basic auth.
        if basic is None and "username" in params:
            basic = (params["username"][0], params.get("password", [""])[0])
        user = self.users.get(basic[0]) if basic else None
        authenticated = user is not None and basic is not None and user.password == basic[1]
        scopes = tuple(
            a
            for raw in params.get("scope", [])
            for part in raw.split(" ")
            if part and (a := parse_scope(part)) is not None
        )
        service = params.get("service", [None])[0]
        status: int = HTTPStatus.OK
        granted: tuple[Access, ...] = ()
        if basic is not None and not authenticated:
            status = HTTPStatus.UNAUTHORIZED
        else:
            caller = user if authenticated else None
            granted = tuple(g for s in scopes if (g := self.grant(caller, s)) is not None)
        self._record(
            TokenRequest(
                method=method,
                username=basic[0] if basic else None,
                authenticated=authenticated,
                service=service,
                scopes=scopes,
                granted=granted,
                status=int(status),
                user_agent=user_agent,
                at=time.time(),
            )
        )
        if status != HTTPStatus.OK:
            return status, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]}
        token, expires_in, issued_at = self.issue(basic[0] if basic else "", granted)
        body = {
            "token": token,
            "access_token": token,
            "expires_in": expires_in,
            "issued_at": issued_at,
        }
        return status, body


def _parse_basic(header: str | None) -> tuple[str, str] | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
    except ValueError:
        return None
    username, _, password = decoded.partition(":")
    return username, password


def _handler_for(issuer: TokenIssuer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            self._dispatch(url.path, urllib.parse.parse_qs(url.query))

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            form = self.rfile.read(length).decode("utf-8", "replace")
            url = urllib.parse.urlsplit(self.path)
            self._dispatch(url.path, urllib.parse.parse_qs(form))

        def _dispatch(self, path: str, params: dict[str, list[str]]) -> None:
            if path != "/token":
                self._send(HTTPStatus.NOT_FOUND, {"errors": [{"code": "NOT_FOUND"}]})
                return
            basic = _parse_basic(self.headers.get("Authorization"))
            status, body = issuer.answer(
                self.command, params, basic, self.headers.get("User-Agent")
            )
            self._send(status, body)

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # requests are recorded structurally instead

    return Handler

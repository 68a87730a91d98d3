"""A client that hangs up mid-blob is routine: one info line in the mirror's log, no
error and no traceback, and the mirror goes on serving."""

from __future__ import annotations

import random
import socket

import pytest

from .images import DOCKER_LAYER, Blob, RegistryClient
from .mirrorproc import MirrorProcess
from .support import http_request, wait_until

pytestmark = pytest.mark.e2e

REPOSITORY = "library/e2e-hangup"
BLOB_BYTES = 48 * 1024 * 1024  # far more than loopback socket buffers hold


@pytest.fixture(scope="module")
def blob(seeder: RegistryClient) -> Blob:
    data = Blob(DOCKER_LAYER, random.Random(90).randbytes(BLOB_BYTES))
    seeder.push_blob(REPOSITORY, data)
    return data


def hang_up_after_a_little(mirror: MirrorProcess, path: str) -> None:
    """Ask for the blob with a small receive buffer, read 64 KiB, and close."""
    with socket.create_connection(("127.0.0.1", mirror.port)) as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        client.sendall(f"GET {path} HTTP/1.1\r\nHost: mirror\r\n\r\n".encode())
        assert client.recv(64 * 1024)


def test_hanging_up_on_a_download_and_on_a_hit(mirror: MirrorProcess, blob: Blob) -> None:
    path = f"/v2/{REPOSITORY}/blobs/{blob.digest}"
    for left in (1, 2):  # the first time mid-download, the second from the cache
        hang_up_after_a_little(mirror, path)
        wait_until(
            lambda: True if mirror.log_text().count("client left during") >= left else None,  # noqa: B023
            timeout=60,
            what=f"the mirror to log client hang-up number {left}",
        )
    whole = http_request("GET", f"{mirror.url}{path}")
    assert whole.status == 200
    assert whole.body == blob.data
    log = mirror.log_text()
    assert " ERROR " not in log
    assert "Traceback" not in log

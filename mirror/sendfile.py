"""Sending file bytes to a client socket with sendfile, off the event loop.

os.sendfile releases the GIL, so running it in sender threads spreads the kernel's
copying over the cores while the loop goes on serving. A slice goes out on the loop
(asyncio's loop.sendfile) instead when the connection is TLS, has bytes buffered,
or every sender thread is busy. Must not know HTTP or the cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO

SEND_TIMEOUT = 60  # seconds a client may take nothing before its response is cut


class _Sender:
    """One slice on a duplicate of the client's socket, sent from a sender thread.

    The duplicate keeps the descriptor ours even if the transport closes its own, so
    bytes can never reach another connection; `cancel` shuts the connection down so
    the thread stops at once; the thread closes the duplicate when it is done.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock.dup()
        self._lock = threading.Lock()
        self._started = self._closed = False

    def send(self, file: int, offset: int, count: int) -> int:
        """Blocking: the bytes sent (fewer only if the file ended). Raises TimeoutError
        when the client takes nothing for SEND_TIMEOUT seconds, OSError when it is gone
        or the send was cancelled."""
        with self._lock:
            if self._closed:
                raise ConnectionResetError("the send was cancelled")
            self._started = True
        try:
            poller = select.poll()
            poller.register(self._sock, select.POLLOUT)
            sent = 0
            while sent < count:
                try:
                    done = os.sendfile(self._sock.fileno(), file, offset + sent, count - sent)
                except BlockingIOError:
                    if not poller.poll(SEND_TIMEOUT * 1000):
                        raise TimeoutError(
                            f"the client took nothing for {SEND_TIMEOUT} s"
                        ) from None
                    continue
                if not done:
                    break
                sent += done
            return sent
        finally:
            with self._lock:
                self._closed = True
                self._sock.close()

    def cancel(self) -> None:
        """Stop the send: before it started, drop the duplicate; while it runs, shut the
        connection down so the thread's sendfile fails at once."""
        with self._lock:
            if self._closed:
                return
            if not self._started:
                self._closed = True
                self._sock.close()
                return
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)


class Senders:
    """A pool of sender threads; the app closes it at shutdown."""

    def __init__(self, threads: int = 32) -> None:
        self._threads = threads
        self._pool = ThreadPoolExecutor(max(1, threads), thread_name_prefix="sendfile")
        self._busy = 0

    async def send(
        self, transport: asyncio.BaseTransport, file: BinaryIO, offset: int, count: int
    ) -> int:
        """sendfile `count` bytes of `file` from `offset`; returns the bytes sent (fewer
        only if the file ended). Cancelling it cuts the connection."""
        loop = asyncio.get_running_loop()
        sock = transport.get_extra_info("socket")
        direct = (
            sock is not None
            and transport.get_extra_info("sslcontext") is None
            and isinstance(transport, asyncio.WriteTransport)
            and transport.get_write_buffer_size() == 0
            and self._busy < self._threads
        )
        if not direct:
            return await loop.sendfile(transport, file, offset, count)  # type: ignore[arg-type]
        sender = _Sender(sock)
        self._busy += 1
        try:
            return await loop.run_in_executor(self._pool, sender.send, file.fileno(), offset, count)
        except asyncio.CancelledError:
            sender.cancel()
            raise
        finally:
            self._busy -= 1

    def close(self) -> None:
        """Wait for the sender threads to end (blocking). Call it once every send has
        returned or been cancelled: a cancelled send's thread stops at once."""
        self._pool.shutdown(wait=True, cancel_futures=True)

"""Sending file bytes to a client socket with sendfile, off the event loop.

os.sendfile releases the GIL, so running it in sender threads spreads the kernel's
copying over the cores while the loop goes on serving. A response opens one
`Channel`; its slices go out on the loop (asyncio's loop.sendfile) instead when the
connection is TLS, has bytes buffered, or every sender thread is busy. Must not know
HTTP or the cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import socket
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO

SEND_TIMEOUT = 60  # seconds a client may take nothing before its response is cut

_Send = Callable[[int, int, int], int]


class _Duplicate:
    """A duplicate of the client's socket for sender threads, closed exactly once.

    The duplicate keeps the descriptor ours even if the transport closes its own, so
    bytes can never reach another connection. `close` while a thread is sending shuts
    the connection down (the thread's sendfile fails at once) and leaves the closing
    to that thread.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock.dup()
        self._lock = threading.Lock()
        self._sending = self._closing = self._closed = False

    def send(self, file: int, offset: int, count: int) -> int:
        """Blocking: the bytes sent (fewer only if the file ended). Raises TimeoutError
        when the client takes nothing for SEND_TIMEOUT seconds, OSError when it is gone
        or the channel was closed."""
        with self._lock:
            if self._closing:
                raise ConnectionResetError("the response was cut")
            self._sending = True
        try:
            return self._send(file, offset, count)
        finally:
            with self._lock:
                self._sending = False
                if self._closing:
                    self._close()

    def _send(self, file: int, offset: int, count: int) -> int:
        poller = select.poll()
        poller.register(self._sock, select.POLLOUT)
        sent = 0
        while sent < count:
            try:
                done = os.sendfile(self._sock.fileno(), file, offset + sent, count - sent)
            except BlockingIOError:
                if not poller.poll(SEND_TIMEOUT * 1000):
                    raise TimeoutError(f"the client took nothing for {SEND_TIMEOUT} s") from None
                continue
            if not done:
                break
            sent += done
        return sent

    def close(self) -> None:
        """Close now, or, while a thread sends, cut the connection and let it close."""
        with self._lock:
            self._closing = True
            if not self._sending:
                self._close()
            else:
                with contextlib.suppress(OSError):
                    self._sock.shutdown(socket.SHUT_RDWR)

    def _close(self) -> None:
        if not self._closed:
            self._closed = True
            self._sock.close()


class Channel:
    """One response's way to a client: slices of files sent with sendfile."""

    def __init__(self, senders: Senders, transport: asyncio.BaseTransport) -> None:
        self._senders = senders
        self._transport = transport
        sock = transport.get_extra_info("socket")
        plain = (
            sock is not None
            and transport.get_extra_info("sslcontext") is None
            and isinstance(transport, asyncio.WriteTransport)
            and transport.get_write_buffer_size() == 0
        )
        self._duplicate = _Duplicate(sock) if plain else None

    async def send(self, file: BinaryIO, offset: int, count: int) -> int:
        """sendfile `count` bytes of `file` from `offset`; returns the bytes sent (fewer
        only if the file ended). Cancelling it cuts the connection."""
        loop = asyncio.get_running_loop()
        if self._duplicate is None or not self._senders.reserve():
            return await loop.sendfile(self._transport, file, offset, count)  # type: ignore[arg-type]
        try:
            return await self._senders.run(self._duplicate.send, file.fileno(), offset, count)
        except asyncio.CancelledError:
            self._duplicate.close()
            raise
        finally:
            self._senders.release()

    def close(self) -> None:
        """Release the duplicate socket (a send still under way cuts the connection)."""
        if self._duplicate is not None:
            self._duplicate.close()


class Senders:
    """A pool of sender threads; the app closes it at shutdown."""

    def __init__(self, threads: int = 32) -> None:
        self._threads = threads
        self._pool = ThreadPoolExecutor(max(1, threads), thread_name_prefix="sendfile")
        self._busy = 0

    @contextlib.asynccontextmanager
    async def channel(self, transport: asyncio.BaseTransport) -> AsyncIterator[Channel]:
        """A channel for one response on `transport`, closed when the block ends."""
        channel = Channel(self, transport)
        try:
            yield channel
        finally:
            channel.close()

    def reserve(self) -> bool:
        """Take a sender thread if one is free."""
        if self._busy >= self._threads:
            return False
        self._busy += 1
        return True

    def release(self) -> None:
        """Give back a sender thread taken with `reserve`."""
        self._busy -= 1

    async def run(self, send: _Send, file: int, offset: int, count: int) -> int:
        """Run a blocking send on a sender thread."""
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, send, file, offset, count
        )

    def close(self) -> None:
        """Wait for the sender threads to end (blocking). Call it once every send has
        returned or been cancelled: a cancelled send's thread stops at once."""
        self._pool.shutdown(wait=True, cancel_futures=True)

"""Senders: sendfile from sender threads (or the loop), and cancelling a send."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from mirror.sendfile import Senders

DATA = os.urandom(24 * 1024 * 1024 + 3)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def serving(
    handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


@pytest.mark.parametrize("threads", [4, 0], ids=["sender thread", "on the loop"])
async def test_a_file_arrives_whole(tmp_path: Path, threads: int) -> None:
    blob = tmp_path / "blob"
    blob.write_bytes(DATA)
    senders = Senders(threads)
    sent: list[int] = []

    async def handler(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with blob.open("rb") as file:
            async with senders.channel(writer.transport) as channel:
                sent.append(await channel.send(file, 5, len(DATA) - 5))
                sent.append(await channel.send(file, 0, 5))
        writer.close()

    server, port = await serving(handler)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        received = await reader.read()
        writer.close()
    finally:
        server.close()
        senders.close()
    assert sent == [len(DATA) - 5, 5]
    assert received == DATA[5:] + DATA[:5]


async def test_cancelling_a_stalled_send_cuts_it_and_leaks_nothing(tmp_path: Path) -> None:
    blob = tmp_path / "blob"
    blob.write_bytes(DATA)
    senders = Senders(4)
    sending = asyncio.Event()
    handlers: list[asyncio.Task[None]] = []

    async def send(writer: asyncio.StreamWriter) -> None:
        with blob.open("rb") as file:
            async with senders.channel(writer.transport) as channel:
                sending.set()
                await channel.send(file, 0, len(DATA))

    async def handler(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.append(asyncio.create_task(send(writer)))

    server, port = await serving(handler)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await sending.wait()  # the client reads nothing: the send stalls
        during = open_fds()  # with the blob open and the channel's duplicate socket
        (task,) = handlers
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)
        await asyncio.wait_for(asyncio.to_thread(senders.close), 10)
        assert open_fds() <= during - 2
        # The connection was shut down: the client gets what was sent, then the end.
        received = await asyncio.wait_for(reader.read(), 10)
        assert len(received) < len(DATA)
        writer.close()
    finally:
        server.close()
        senders.close()

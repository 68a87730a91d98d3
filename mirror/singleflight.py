"""One piece of async work per key at a time; concurrent callers share its result.

Used for manifest fills and token fetches. The work runs as its own task, so a
caller that goes away does not cancel it for the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


def _retrieve(task: asyncio.Task[Any]) -> None:
    # Every caller may have gone away: a failure nobody awaits is not an error to log.
    if not task.cancelled():
        task.exception()


class SingleFlight(Generic[K, V]):
    """Run one coroutine per key at a time; concurrent callers share its result."""

    def __init__(self) -> None:
        self._running: dict[K, asyncio.Task[V]] = {}

    async def do(self, key: K, work: Callable[[], Coroutine[Any, Any, V]]) -> tuple[V, bool]:
        """Return (result, shared), or raise the work's error. Safe to cancel: the work
        goes on for the other callers."""
        task = self._running.get(key)
        shared = task is not None
        if task is None:
            task = asyncio.create_task(work())
            self._running[key] = task
            task.add_done_callback(lambda _: self._running.pop(key, None))
            task.add_done_callback(_retrieve)
        return await asyncio.shield(task), shared

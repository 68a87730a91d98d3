"""SingleFlight: one run per key, shared by concurrent callers."""

from __future__ import annotations

import asyncio

import pytest

from mirror.singleflight import SingleFlight


async def test_single_flight_shares_and_survives_a_cancelled_caller() -> None:
    flights: SingleFlight[str, int] = SingleFlight()
    started, release = asyncio.Event(), asyncio.Event()
    calls = 0

    async def work() -> int:
        nonlocal calls
        calls += 1
        started.set()
        await release.wait()
        return 42

    first = asyncio.create_task(flights.do("k", work))
    second = asyncio.create_task(flights.do("k", work))
    await started.wait()
    first.cancel()
    release.set()
    assert await second == (42, True)
    assert calls == 1


async def test_a_failure_reaches_every_caller_and_is_not_kept() -> None:
    flights: SingleFlight[str, int] = SingleFlight()
    release = asyncio.Event()

    async def failing() -> int:
        await release.wait()
        raise ValueError("upstream said no")

    callers = [asyncio.create_task(flights.do("k", failing)) for _ in range(3)]
    release.set()
    for caller in callers:
        with pytest.raises(ValueError, match="said no"):
            await caller

    async def succeeding() -> int:
        return 7

    assert await flights.do("k", succeeding) == (7, False)

"""The allocator trim: once per burst of large requests or many small ones, after the latest;
never for a few small ones."""

from __future__ import annotations

import asyncio

from service.memory import AllocatorTrim


async def test_a_burst_of_large_requests_trims_once_after_the_latest() -> None:
    trimmed = asyncio.Event()
    calls: list[float] = []
    loop = asyncio.get_running_loop()

    def trim() -> None:
        calls.append(loop.time())
        loop.call_soon_threadsafe(trimmed.set)

    allocator = AllocatorTrim(trim, after_bytes=1_000, request_cost=10, delay_s=0.05)
    first = loop.time()
    for _ in range(5):
        allocator.note(5_000)
        await asyncio.sleep(0.02)
    last = loop.time() - 0.02
    await asyncio.wait_for(trimmed.wait(), timeout=5)
    assert len(calls) == 1 and allocator.trims == 1
    assert calls[0] >= last + 0.05 - 0.01 > first + 0.05  # moved by the later requests
    allocator.close()


async def test_a_few_small_requests_never_trim_and_many_trim_once() -> None:
    trimmed = asyncio.Event()
    loop = asyncio.get_running_loop()
    allocator = AllocatorTrim(
        lambda: loop.call_soon_threadsafe(trimmed.set),
        after_bytes=1_000,
        request_cost=10,
        delay_s=0.01,
    )
    for _ in range(98):
        allocator.note()
    allocator.note_bytes(19)  # 98 x 10 + 19: one byte short
    await asyncio.sleep(0.05)
    assert allocator.trims == 0 and not trimmed.is_set()
    allocator.note()
    await asyncio.wait_for(trimmed.wait(), timeout=5)
    assert allocator.trims == 1
    trimmed.clear()
    for _ in range(99):  # the count starts again after a trim
        allocator.note()
    await asyncio.sleep(0.05)
    assert allocator.trims == 1 and not trimmed.is_set()
    allocator.close()

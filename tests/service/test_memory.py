"""The allocator trim after large requests: once per burst, after the latest, never for small."""

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

    allocator = AllocatorTrim(trim, large_bytes=1_000, delay_s=0.05)
    first = loop.time()
    for _ in range(5):
        allocator.note(5_000)
        await asyncio.sleep(0.02)
    last = loop.time() - 0.02
    await asyncio.wait_for(trimmed.wait(), timeout=5)
    assert len(calls) == 1 and allocator.trims == 1
    assert calls[0] >= last + 0.05 - 0.01 > first + 0.05  # moved by the later requests
    allocator.close()


async def test_small_requests_never_trim() -> None:
    calls: list[int] = []
    allocator = AllocatorTrim(lambda: calls.append(1), large_bytes=1_000, delay_s=0.01)
    for _ in range(100):
        allocator.note(999)
    await asyncio.sleep(0.05)
    assert calls == [] and allocator.trims == 0

"""An open-loop load generator for reliability tests (aiohttp; loopback only, bounded)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson


@dataclass
class LoadResult:
    statuses: Counter[int] = field(default_factory=Counter)
    missing_retry_after: int = 0
    wrong_answers: int = 0
    transport_errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    """Latency of each 200."""
    latencies_by_status: dict[int, list[float]] = field(default_factory=dict)

    @property
    def sent(self) -> int:
        return sum(self.statuses.values()) + self.transport_errors


async def open_loop(
    url: str,
    body: dict[str, Any],
    *,
    rate_per_s: float,
    duration_s: float,
    check: Any = None,
    max_outstanding: int = 1024,
    headers: dict[str, str] | None = None,
) -> LoadResult:
    """Send `rate_per_s` requests per second for `duration_s`, whatever the server does."""
    result = LoadResult()
    payload = orjson.dumps(body)
    connector = aiohttp.TCPConnector(limit=max_outstanding)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one() -> None:
            started = time.perf_counter()
            try:
                async with session.post(
                    url,
                    data=payload,
                    headers={"Content-Type": "application/json", **(headers or {})},
                ) as response:
                    content = await response.read()
                    result.statuses[response.status] += 1
                    elapsed = (time.perf_counter() - started) * 1000
                    result.latencies_by_status.setdefault(response.status, []).append(elapsed)
                    if response.status == 200:
                        result.latencies_ms.append(elapsed)
                        if check is not None and not check(orjson.loads(content)):
                            result.wrong_answers += 1
                    elif response.status == 503 and "Retry-After" not in response.headers:
                        result.missing_retry_after += 1
            except (TimeoutError, aiohttp.ClientError):
                result.transport_errors += 1

        tasks: set[asyncio.Task[None]] = set()
        interval = 1.0 / rate_per_s
        start = time.perf_counter()
        sent = 0
        while (now := time.perf_counter()) - start < duration_s:
            due = int((now - start) / interval) + 1
            while sent < due and len(tasks) < max_outstanding:
                task = asyncio.create_task(one())
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                sent += 1
            await asyncio.sleep(min(interval, 0.002))
        if tasks:
            await asyncio.gather(*tasks)
    return result


async def closed_loop_latency_ms(url: str, body: dict[str, Any], count: int) -> float:
    """Median latency of `count` sequential requests."""
    payload = orjson.dumps(body)
    latencies = []
    async with aiohttp.ClientSession() as session:
        for _ in range(count):
            started = time.perf_counter()
            async with session.post(
                url, data=payload, headers={"Content-Type": "application/json"}
            ) as response:
                await response.read()
                assert response.status == 200
            latencies.append((time.perf_counter() - started) * 1000)
    latencies.sort()
    return latencies[len(latencies) // 2]


async def closed_loop_capacity(url: str, body: dict[str, Any], *, users: int = 8) -> float:
    """Requests per second that `users` sequential clients get through together."""
    per_user = 10
    started = time.perf_counter()
    await asyncio.gather(*[closed_loop_latency_ms(url, body, per_user) for _ in range(users)])
    return users * per_user / (time.perf_counter() - started)

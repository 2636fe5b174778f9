"""One Python load worker: its own `grpc.aio` event loop and channel, keeping its share of the
calls in flight back to back; it says READY once connected, starts on the parent's "go" line and
prints one result line (`histogram.WorkerResult.to_line`)."""

from __future__ import annotations

import asyncio
import resource
import sys
import time
from collections import Counter

from loadtests.drive.grpc_load.histogram import Histogram, WorkerResult
from loadtests.drive.grpc_load.request import CHANNEL_OPTIONS, GrpcRequest

READY = "GRPC_READY"


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _work(
    request: GrpcRequest, concurrency: int, seconds: float, timeout_s: float, channels: int
) -> WorkerResult:
    import grpc

    opened = [
        grpc.aio.insecure_channel(request.target, options=list(CHANNEL_OPTIONS))
        for _ in range(max(1, min(channels, concurrency)))
    ]
    # No serializers: the bytes go out as they are and the answer stays unparsed.
    calls = [channel.unary_unary(request.method) for channel in opened]
    metadata = tuple(request.metadata) or None
    try:
        for call in calls:  # connect, and fail early (exit 2) if the call itself is refused
            await call(request.body, timeout=timeout_s, metadata=metadata)
        print(READY, flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.readline)  # the parent's "go"
        latencies: list[float] = []
        codes: Counter[str] = Counter()
        started = time.perf_counter()
        deadline = started + seconds
        cpu_before = _cpu_s()

        async def user(index: int) -> None:
            call = calls[index % len(calls)]
            clock = time.perf_counter
            append = latencies.append
            while clock() < deadline:
                sent = clock()
                try:
                    await call(request.body, timeout=timeout_s, metadata=metadata)
                except grpc.aio.AioRpcError as error:
                    codes[error.code().name] += 1
                append((clock() - sent) * 1e6)

        await asyncio.gather(*(user(i) for i in range(concurrency)))
        elapsed = time.perf_counter() - started
        cpu = _cpu_s() - cpu_before
    finally:
        for channel in opened:
            await channel.close()
    return WorkerResult(
        requests=len(latencies),
        errors=sum(codes.values()),
        seconds=elapsed,
        cpu_s=cpu,
        histogram=Histogram.of(latencies),
        error_codes=dict(codes),
    )


def serve(
    request: GrpcRequest, concurrency: int, seconds: float, timeout_s: float, channels: int
) -> int:
    """Run as a worker process: the exit status (2 when the first call failed, said on stderr)."""
    try:
        result = asyncio.run(_work(request, concurrency, seconds, timeout_s, channels))
    except Exception as error:  # the first call failed: say why, the parent raises it
        print(f"worker failed: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
        return 2
    print(result.to_line(), flush=True)
    return 0

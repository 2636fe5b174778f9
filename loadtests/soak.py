"""Soak: steady load on one model for a while, sampling the gateway's RSS; reports growth.

    python -m loadtests.soak --model-store model_store --model iris --duration 180

The goal is < 5 % RSS growth between the first sample after warm-up and the last one, with
every response a 200. CI runs a short version (tests/reliability/test_soak.py).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp
import orjson

from loadtests.drive.catalog import load_model
from loadtests.systems.procs import free_port, spawn, stop, tree_rss_mb, wait_ready


@dataclass
class SoakReport:
    model: str
    duration_s: float
    concurrency: int
    requests: int
    statuses: dict[int, int]
    rss_start_mb: float
    rss_end_mb: float
    rss_peak_mb: float
    rss_growth_pct: float
    throughput_rps: float


async def _drive(
    url: str, body: bytes, concurrency: int, duration_s: float, pid: int, warmup_s: float
) -> tuple[Counter[int], list[float], int]:
    statuses: Counter[int] = Counter()
    samples: list[float] = []
    deadline = time.monotonic() + duration_s
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def user() -> None:
            while time.monotonic() < deadline:
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    statuses[response.status] += 1

        async def sample() -> None:
            await asyncio.sleep(warmup_s)
            while time.monotonic() < deadline:
                samples.append(tree_rss_mb(pid))
                await asyncio.sleep(1.0)
            samples.append(tree_rss_mb(pid))

        await asyncio.gather(sample(), *[user() for _ in range(concurrency)])
    return statuses, samples, sum(statuses.values())


def soak(
    store: Path,
    model: str,
    duration_s: float,
    concurrency: int,
    log_dir: Path,
    warmup_s: float = 3.0,
) -> SoakReport:
    bench = load_model(store, model)
    port, grpc_port = free_port(), free_port()  # never gRPC's default 8001: soaks run side by side
    process = spawn(
        [
            sys.executable,
            "-m",
            "service",
            "--model-store",
            str(store),
            "--models",
            model,
            "--port",
            str(port),
            "--grpc-port",
            str(grpc_port),
        ],
        log_dir / f"soak-{port}.log",
        env={"GATEWAY_LOG_LEVEL": "warning"},
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready([f"{url}/v2/health/ready"], process, timeout_s=120)
        started = time.monotonic()
        statuses, samples, count = asyncio.run(
            _drive(
                f"{url}/v2/models/{model}/infer",
                bench.v2_json,
                concurrency,
                duration_s,
                process.pid,
                warmup_s,
            )
        )
        elapsed = time.monotonic() - started
    finally:
        stop(process)
    first, last = samples[0], samples[-1]
    return SoakReport(
        model=model,
        duration_s=round(elapsed, 1),
        concurrency=concurrency,
        requests=count,
        statuses=dict(statuses),
        rss_start_mb=round(first, 1),
        rss_end_mb=round(last, 1),
        rss_peak_mb=round(max(samples), 1),
        rss_growth_pct=round((last - first) / first * 100, 2),
        throughput_rps=round(count / elapsed, 1),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.soak", description=__doc__)
    parser.add_argument("--model-store", type=Path, default=Path("model_store"))
    parser.add_argument("--model", default="iris")
    parser.add_argument("--duration", type=float, default=180.0, help="seconds of load")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--out", type=Path, default=Path("loadtests/results"))
    args = parser.parse_args(argv)
    report = soak(args.model_store, args.model, args.duration, args.concurrency, args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "soak.json").write_bytes(orjson.dumps(asdict(report), option=orjson.OPT_INDENT_2))
    print(orjson.dumps(asdict(report), option=orjson.OPT_INDENT_2).decode())
    ok = report.rss_growth_pct < 5 and set(report.statuses) == {200}
    print(f"RSS growth {report.rss_growth_pct:+.2f} % (goal < 5 %): {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""The streaming LSTM per step against the windowed LSTM per call: p50/p99 milliseconds at 1
and 32 concurrent clients.

    python -m loadtests.sequence_stream --store model_store --seconds 10

Starts `python -m service` on a store holding `lstm` and `lstm_stream` (`make train`), then,
for each concurrency C, runs C clients over gRPC (stock `tritonclient.grpc.aio`, one channel):

- `stream`: each client is one sequence of `lstm_stream`, sending weekly readings one after
  another (a sequence's steps are sequential by nature), restarting its sequence every 60
  readings; each step's latency is recorded;
- `windowed`: each client calls `lstm` with a [1, 30, 1] window back to back.

Prints a table and, on the last line, the figures as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from loadtests.systems import procs
from loadtests.systems.gateway import gateway_command

WINDOW = 30
RESTART = 60
"""Readings per sequence before a client starts a new one."""


async def _stream_client(client: Any, module: Any, ident: int, until: float) -> list[float]:
    rng = np.random.default_rng(ident)
    latencies = []
    step = 0
    sequence = ident * 1_000_000
    while time.perf_counter() < until:
        if step % RESTART == 0:
            sequence += 1
        reading = module.InferInput("value", [1, 1], "FP32")
        reading.set_data_from_numpy(np.array([[350 + rng.normal()]], dtype=np.float32))
        started = time.perf_counter()
        await client.infer(
            "lstm_stream",
            [reading],
            sequence_id=sequence,
            sequence_start=step % RESTART == 0,
            sequence_end=step % RESTART == RESTART - 1,
        )
        latencies.append(time.perf_counter() - started)
        step += 1
    if step % RESTART:  # end the open sequence, untimed
        reading = module.InferInput("value", [1, 1], "FP32")
        reading.set_data_from_numpy(np.array([[350.0]], dtype=np.float32))
        await client.infer("lstm_stream", [reading], sequence_id=sequence, sequence_end=True)
    return latencies


async def _windowed_client(client: Any, module: Any, ident: int, until: float) -> list[float]:
    rng = np.random.default_rng(ident)
    latencies = []
    while time.perf_counter() < until:
        series = module.InferInput("series", [1, WINDOW, 1], "FP32")
        window = (350 + rng.normal(size=(1, WINDOW, 1))).astype(np.float32)
        series.set_data_from_numpy(window)
        started = time.perf_counter()
        await client.infer("lstm", [series])
        latencies.append(time.perf_counter() - started)
    return latencies


async def _point(address: str, mode: str, concurrency: int, seconds: float) -> dict[str, float]:
    import tritonclient.grpc.aio as grpcclient

    client = grpcclient.InferenceServerClient(address)
    run = _stream_client if mode == "stream" else _windowed_client
    try:
        # warm-up: one short round, untimed
        await asyncio.gather(
            *(run(client, grpcclient, i, time.perf_counter() + 0.5) for i in range(concurrency))
        )
        until = time.perf_counter() + seconds
        results = await asyncio.gather(
            *(run(client, grpcclient, 100 + i, until) for i in range(concurrency))
        )
    finally:
        await client.close()
    latencies = np.concatenate([np.asarray(r) for r in results]) * 1000
    return {
        "p50_ms": round(float(np.percentile(latencies, 50)), 3),
        "p99_ms": round(float(np.percentile(latencies, 99)), 3),
        "per_s": round(len(latencies) / seconds, 1),
    }


def measure(store: Path, seconds: float, levels: list[int], work: Path) -> dict[str, Any]:
    port, grpc_port = procs.free_port(), procs.free_port()
    command = gateway_command(store, port, grpc_port, ["lstm", "lstm_stream"])
    process = procs.spawn(command, work / "gateway.log")
    try:
        procs.wait_ready([f"http://127.0.0.1:{port}/v2/health/ready"], process, 120)
        figures: dict[str, Any] = {}
        for concurrency in levels:
            for mode in ("stream", "windowed"):
                point = asyncio.run(_point(f"127.0.0.1:{grpc_port}", mode, concurrency, seconds))
                figures[f"{mode} c={concurrency}"] = point
    finally:
        procs.stop(process)
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, default=Path("model_store"))
    parser.add_argument("--seconds", type=float, default=10.0, help="per point")
    parser.add_argument("--concurrency", default="1,32", help="comma-separated levels")
    args = parser.parse_args(argv)
    levels = [int(level) for level in args.concurrency.split(",")]
    with tempfile.TemporaryDirectory(prefix="sequence-bench-") as work:
        figures = measure(args.store.resolve(), args.seconds, levels, Path(work))
    for name, point in figures.items():
        print(
            f"{name:>16}: p50 {point['p50_ms']:8.3f} ms  p99 {point['p99_ms']:8.3f} ms  "
            f"{point['per_s']:9.1f}/s"
        )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

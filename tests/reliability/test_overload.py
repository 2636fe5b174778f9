"""Overload: ~10x capacity for 30 s. The server stays up, answers 200 (correct) or 503 with
Retry-After, never queues past its bound, keeps RSS bounded and is fast again right after."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import numpy as np
import onnxruntime as ort
import pytest

from tests.reliability.load import closed_loop_capacity, closed_loop_latency_ms, open_loop
from tests.servers import gateway, sample_total
from tests.tiny_models import slow_model

pytestmark = pytest.mark.integration

QUEUE_BOUND = 16
SPIKE_SECONDS = 30.0


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def rows_computed(server_url: str, model: str) -> float:
    """Rows the gateway's backend has computed for `model`, from its /metrics."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{server_url}/metrics") as response,
    ):
        metrics = await response.text()
    return sample_total(metrics, "gateway_batch_size_sum", model=model)


async def test_ten_times_capacity_for_thirty_seconds(tmp_path: Path) -> None:
    store = tmp_path / "store"
    directory = slow_model(store)
    x = np.full((1, 1024), 0.5, dtype=np.float32)
    expected = ort.InferenceSession(str(directory / "model.onnx")).run(None, {"features": x})[0]
    body = {
        "inputs": [
            {"name": "features", "datatype": "FP32", "shape": [1, 1024], "data": x.ravel().tolist()}
        ]
    }

    def correct(answer: dict) -> bool:  # type: ignore[type-arg]
        return bool(np.allclose(answer["outputs"][0]["data"], expected.ravel(), atol=1e-4))

    env = {"GATEWAY_MAX_QUEUE_SIZE": str(QUEUE_BOUND)}
    with gateway(store, tmp_path, env=env) as server:
        url = f"{server.url}/v2/models/slow/infer"
        idle_before = await closed_loop_latency_ms(url, body, 20)
        capacity = await closed_loop_capacity(url, body)
        baseline_rss = rss_mb(server.process.pid)

        peak = {"queue": 0.0, "rss": baseline_rss}
        stop = asyncio.Event()

        async def watch() -> None:
            async with aiohttp.ClientSession() as session:
                while not stop.is_set():
                    async with session.get(f"{server.url}/metrics") as response:
                        for line in (await response.text()).splitlines():
                            if line.startswith('gateway_queue_depth{model="slow"'):
                                peak["queue"] = max(peak["queue"], float(line.split()[-1]))
                    peak["rss"] = max(peak["rss"], rss_mb(server.process.pid))
                    await asyncio.sleep(0.1)

        watcher = asyncio.create_task(watch())
        offered = 10 * capacity
        result = await open_loop(
            url, body, rate_per_s=offered, duration_s=SPIKE_SECONDS, check=correct
        )
        stop.set()
        await watcher
        recovered_at = time.perf_counter()
        idle_after = await closed_loop_latency_ms(url, body, 20)
        recovery_s = time.perf_counter() - recovered_at

        print(
            f"\ncapacity ~{capacity:.0f} req/s, offered {offered:.0f} req/s for "
            f"{SPIKE_SECONDS:.0f} s: sent {result.sent}, statuses {dict(result.statuses)}, "
            f"peak queue {peak['queue']:.0f}/{QUEUE_BOUND}, RSS {baseline_rss:.0f} -> peak "
            f"{peak['rss']:.0f} MB, idle p50 {idle_before:.1f} ms before / {idle_after:.1f} ms "
            f"after"
        )
        assert server.process.poll() is None
        assert result.transport_errors == 0
        assert set(result.statuses) <= {200, 503}
        assert result.statuses[503] > 0  # it really was overloaded
        assert result.statuses[200] > 0
        assert result.missing_retry_after == 0
        assert result.wrong_answers == 0
        assert peak["queue"] <= QUEUE_BOUND
        assert peak["rss"] < baseline_rss + 300
        assert idle_after < max(3 * idle_before, idle_before + 20)
        assert recovery_s < 10


async def test_short_deadlines_under_load_are_504_on_time_and_never_computed(
    tmp_path: Path,
) -> None:
    store = tmp_path / "store"
    slow_model(store)
    body = {
        "inputs": [
            {"name": "features", "datatype": "FP32", "shape": [1, 1024], "data": [0.5] * 1024}
        ]
    }
    hurried = {**body, "parameters": {"timeout": 30_000}}  # 30 ms, in µs like tritonclient
    with gateway(store, tmp_path, env={"GATEWAY_MAX_QUEUE_SIZE": "512"}) as server:
        url = f"{server.url}/v2/models/slow/infer"
        # Offer three times what the server computes, 64 outstanding at most: the queue then holds
        # ~64 rows, which wait far longer than 30 ms whatever the machine's speed.
        capacity = await closed_loop_capacity(url, body)
        computed_before = await rows_computed(server.url, "slow")
        background = asyncio.create_task(
            open_loop(url, body, rate_per_s=3 * capacity, duration_s=6, max_outstanding=64)
        )
        await asyncio.sleep(1.5)  # let the queue build up
        hurried_result = await open_loop(url, hurried, rate_per_s=20, duration_s=3)
        normal = await background
        computed = await rows_computed(server.url, "slow") - computed_before
    answered_ok = normal.statuses[200] + hurried_result.statuses[200]
    answered_504 = hurried_result.statuses[504]
    print(
        f"\ncapacity ~{capacity:.0f} req/s; hurried: {dict(hurried_result.statuses)}; "
        f"background: {dict(normal.statuses)}; computed rows {computed:.0f}, "
        f"answered 200 {answered_ok}"
    )
    assert set(hurried_result.statuses) <= {200, 504}
    assert set(normal.statuses) == {200}
    # Queued behind ~64 rows, most hurried requests run out of time.
    assert answered_504 > hurried_result.sent // 2
    # 504s come on time: well before the time the queue would have taken.
    timeouts = hurried_result.latencies_by_status[504]
    print(
        f"504 latency: median {sorted(timeouts)[len(timeouts) // 2]:.0f} ms, "
        f"max {max(timeouts):.0f} ms (deadline 30 ms)"
    )
    assert max(timeouts) < 1000
    # A request whose deadline passed while queued is dropped unseen (only one whose deadline
    # passed during its own compute is computed and its result discarded), so nearly every row
    # computed was answered 200: at most a few of the 504s were ever computed.
    computed_but_late = computed - answered_ok
    assert 0 <= computed_but_late < answered_504 / 2

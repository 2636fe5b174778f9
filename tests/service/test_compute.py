"""The batch runner and its inline policy, on a real ONNX Runtime model; Event gates, no sleeps.

The busy model's cost is set by its input's value at a fixed shape, so the same shape can be
fast, then slow: exactly the case in which running inline could block the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from service.backends.base import BatchTiming
from service.backends.onnxruntime import OnnxRuntimeBackend
from service.batcher import DynamicBatcher
from service.compute import BatchRunner, InlinePolicy, shape_key
from service.feeds import Feed, rows_of
from service.manifest import Manifest
from service.metrics import GatewayMetrics
from tests.tiny_models import busy_model

THRESHOLD_S = 0.020
"""Far above one Loop step (~0.1 ms), far below 20,000 of them (~100 ms on 2 cores)."""
FAST, SLOW = 1, 20_000


class Recorder:
    """A batcher and timing observer that keeps what it sees and gates on batch start/end."""

    def __init__(self) -> None:
        self.timings: list[BatchTiming] = []
        self.started = asyncio.Event()
        self.finished = asyncio.Event()

    def batch_timed(self, timing: BatchTiming) -> None:
        self.timings.append(timing)

    def batch_started(self, rows: int, queue_seconds: Sequence[float]) -> None:
        self.started.set()

    def batch_finished(self, rows: int, compute_seconds: float, failed: bool) -> None:
        self.finished.set()

    def queue_changed(self, rows: int) -> None:
        pass


@dataclass
class Busy:
    batcher: DynamicBatcher[Feed, Feed]
    policy: InlinePolicy
    recorder: Recorder


@pytest.fixture
async def busy(tmp_path: Path) -> AsyncIterator[Busy]:
    directory = busy_model(tmp_path / "store")
    backend = OnnxRuntimeBackend(Manifest.read(directory), directory / "model.onnx")
    await backend.load()
    recorder = Recorder()
    policy = InlinePolicy(THRESHOLD_S, clean_runs=3)
    runner = BatchRunner(backend, inline=policy, observer=recorder)
    batcher = DynamicBatcher(
        runner, max_batch_size=4, max_queue_size=8, rows_of=rows_of, observer=recorder
    )
    yield Busy(batcher, policy, recorder)
    await batcher.close()
    await backend.close()


def steps(value: int, rows: int = 1) -> Feed:
    return {"features": np.full((rows, 1), value, dtype=np.float32)}


async def run(busy: Busy, feed: Feed) -> BatchTiming:
    await busy.batcher.submit(feed)
    return busy.recorder.timings[-1]


def assert_inlined_only_after_clean_runs(timings: Sequence[BatchTiming], clean_runs: int) -> None:
    """Every inline batch follows `clean_runs` batches (of the one shape used) each measured
    below the threshold: the loop is only lent to work measured fast."""
    for index, timing in enumerate(timings):
        if timing.inline:
            before = timings[max(0, index - clean_runs) : index]
            assert len(before) == clean_runs
            assert all(t.backend_s < THRESHOLD_S for t in before), before


def test_policy_learns_per_shape_and_forgets_on_one_slow_run() -> None:
    policy = InlinePolicy(0.001, clean_runs=2)
    small, large = ((1, 4),), ((8, 4),)
    assert not policy.allows(small)
    policy.record(small, 0.0001)
    assert not policy.allows(small)
    policy.record(small, 0.0001)
    assert policy.allows(small)
    assert not policy.allows(large)
    policy.record(small, 0.001)  # at the threshold is not below it
    assert not policy.allows(small)
    policy.record(small, 0.0001)
    assert not policy.allows(small)
    policy.record(small, 0.0001)
    assert policy.allows(small)


def test_policy_off_and_bounded() -> None:
    off = InlinePolicy(0.0, clean_runs=1)
    off.record(((1,),), 0.0)
    assert not off.allows(((1,),))
    bounded = InlinePolicy(1.0, clean_runs=1, max_shapes=1)
    bounded.record(((1,),), 0.0)
    bounded.record(((2,),), 0.0)
    assert bounded.allows(((1,),))
    assert not bounded.allows(((2,),))
    with pytest.raises(ValueError, match="threshold_s"):
        InlinePolicy(-1.0)
    with pytest.raises(ValueError, match="clean_runs"):
        InlinePolicy(1.0, clean_runs=0)


def test_shape_key_is_every_input_shape() -> None:
    feed = {"a": np.zeros((2, 3)), "b": np.zeros((2, 7), dtype=np.int64)}
    assert shape_key(feed) == ((2, 3), (2, 7))


async def test_fast_shape_goes_inline_and_a_slow_batch_sends_it_back(busy: Busy) -> None:
    clean_runs = busy.policy.clean_runs
    first = await run(busy, steps(FAST))
    assert not first.inline and first.handoff_s > 0
    for _ in range(40):  # fast batches of one shape until the policy lends the loop
        if (await run(busy, steps(FAST))).inline:
            break
    assert busy.recorder.timings[-1].inline, [t.backend_s for t in busy.recorder.timings]
    assert busy.recorder.timings[-1].handoff_s == 0

    # Same shape, 20,000 times the work: the policy could not know, so this one ran inline;
    # its time is recorded, and the very next batch of the shape goes back to the thread.
    grown = await run(busy, steps(SLOW))
    assert grown.inline and grown.backend_s >= THRESHOLD_S
    busy.recorder.started.clear()
    busy.recorder.finished.clear()
    task = asyncio.create_task(busy.batcher.submit(steps(SLOW)))
    await busy.recorder.started.wait()
    # The test runs again while that batch computes: the loop was not lent to it.
    assert not busy.recorder.finished.is_set()
    await task
    back = busy.recorder.timings[-1]
    assert not back.inline and back.handoff_s > 0 and back.backend_s >= THRESHOLD_S
    assert not busy.policy.allows(shape_key(steps(SLOW)))
    assert_inlined_only_after_clean_runs(busy.recorder.timings, clean_runs)


async def test_a_new_shape_never_runs_inline(busy: Busy) -> None:
    for _ in range(40):
        if (await run(busy, steps(FAST))).inline:
            break
    assert busy.recorder.timings[-1].inline
    busy.recorder.started.clear()
    busy.recorder.finished.clear()
    task = asyncio.create_task(busy.batcher.submit(steps(SLOW, rows=2)))
    await busy.recorder.started.wait()
    assert not busy.recorder.finished.is_set()
    await task
    assert not busy.recorder.timings[-1].inline


async def test_parts_are_exported_per_batch(tmp_path: Path) -> None:
    directory = busy_model(tmp_path / "store")
    backend = OnnxRuntimeBackend(Manifest.read(directory), directory / "model.onnx")
    await backend.load()
    metrics = GatewayMetrics()
    observer = metrics.observer("busy", "1")
    runner = BatchRunner(backend, observer=observer)
    batcher = DynamicBatcher(
        runner, max_batch_size=4, max_queue_size=8, rows_of=rows_of, observer=observer
    )
    try:
        outputs = await asyncio.gather(*(batcher.submit(steps(FAST)) for _ in range(3)))
    finally:
        await batcher.close()
        await backend.close()
    assert [o["prediction"].shape for o in outputs] == [(1, 1)] * 3
    labels = {"model": "busy", "version": "1"}
    batches = metrics.registry.get_sample_value("gateway_compute_duration_seconds_count", labels)
    assert batches is not None and batches >= 1
    parts = 0.0
    for part in ("input", "backend", "output", "handoff"):
        name = f"gateway_batch_{part}_seconds"
        assert metrics.registry.get_sample_value(f"{name}_count", labels) == batches
        value = metrics.registry.get_sample_value(f"{name}_sum", labels)
        assert value is not None and value >= 0
        parts += value
    compute = metrics.registry.get_sample_value("gateway_compute_duration_seconds_sum", labels)
    assert compute is not None and parts <= compute + 1e-3  # the parts lie inside compute

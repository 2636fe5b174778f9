"""The dynamic batcher through its public API; asyncio.Event gates, no sleeps."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest

from service.batcher import DynamicBatcher
from service.errors import BackendError, DeadlineExceeded, InvalidInput, QueueFull, ShuttingDown


class GatedModel:
    """A batch function that records batches and blocks until its gate opens."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = asyncio.Event()
        self.started = asyncio.Event()
        self.running = 0
        self.max_running = 0

    async def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        self.started.set()
        try:
            await self.gate.wait()
        finally:
            self.running -= 1
        return [item * 10 for item in items]


async def settle() -> None:
    """Let every ready task run (no wall-clock waiting)."""
    for _ in range(10):
        await asyncio.sleep(0)


async def test_idle_request_runs_at_once_alone() -> None:
    model = GatedModel()
    model.gate.set()
    batcher = DynamicBatcher(model, max_batch_size=8, max_queue_size=16)
    assert await batcher.submit(3) == 30
    assert model.batches == [[3]]
    await batcher.close()


async def test_requests_arriving_while_busy_form_one_batch() -> None:
    model = GatedModel()
    batcher = DynamicBatcher(model, max_batch_size=8, max_queue_size=16)
    first = asyncio.create_task(batcher.submit(1))
    await model.started.wait()
    rest = [asyncio.create_task(batcher.submit(i)) for i in range(2, 6)]
    await settle()
    assert batcher.queued_rows == 4
    model.gate.set()
    assert await first == 10
    assert [await task for task in rest] == [20, 30, 40, 50]
    assert model.batches == [[1], [2, 3, 4, 5]]
    await batcher.close()


async def test_batches_never_exceed_max_batch_size() -> None:
    model = GatedModel()
    batcher = DynamicBatcher(model, max_batch_size=3, max_queue_size=16)
    blocker = asyncio.create_task(batcher.submit(0))
    await model.started.wait()
    waiting = [asyncio.create_task(batcher.submit(i)) for i in range(1, 8)]
    await settle()
    model.gate.set()
    await asyncio.gather(blocker, *waiting)
    assert [len(batch) for batch in model.batches] == [1, 3, 3, 1]
    await batcher.close()


async def test_rows_count_toward_the_batch_size() -> None:
    model = GatedModel()
    batcher: DynamicBatcher[list[int], list[int]] = DynamicBatcher(
        lambda items: model([sum(item) for item in items]),  # type: ignore[arg-type,return-value]
        max_batch_size=4,
        max_queue_size=8,
        rows_of=len,
    )
    blocker = asyncio.create_task(batcher.submit([0]))
    await model.started.wait()
    a = asyncio.create_task(batcher.submit([1, 1, 1]))
    b = asyncio.create_task(batcher.submit([2, 2]))
    await settle()
    assert batcher.queued_rows == 5
    model.gate.set()
    await asyncio.gather(blocker, a, b)
    assert model.batches == [[0], [3], [4]]
    with pytest.raises(InvalidInput):
        await batcher.submit([1] * 5)
    await batcher.close()


async def test_full_queue_rejects_at_once() -> None:
    model = GatedModel()
    batcher = DynamicBatcher(model, max_batch_size=2, max_queue_size=2)
    running = asyncio.create_task(batcher.submit(0))
    await model.started.wait()
    queued = [asyncio.create_task(batcher.submit(i)) for i in (1, 2)]
    await settle()
    with pytest.raises(QueueFull) as caught:
        await batcher.submit(3)
    assert caught.value.status_code == 503
    assert caught.value.headers["Retry-After"]
    model.gate.set()
    await asyncio.gather(running, *queued)
    await batcher.close()


async def test_deadline_while_queued_is_504_and_never_computed() -> None:
    model = GatedModel()
    now = [100.0]
    batcher = DynamicBatcher(model, max_batch_size=4, max_queue_size=8, clock=lambda: now[0])
    running = asyncio.create_task(batcher.submit(1))
    await model.started.wait()
    doomed = asyncio.create_task(batcher.submit(2, deadline=100.5))
    kept = asyncio.create_task(batcher.submit(3))
    await settle()
    now[0] = 101.0  # the deadline passes while the model is busy
    model.gate.set()
    with pytest.raises(DeadlineExceeded):
        await doomed
    assert await kept == 30
    assert await running == 10
    assert [2] not in model.batches
    assert all(2 not in batch for batch in model.batches)
    await batcher.close()


async def test_deadline_answers_on_time_even_while_computing() -> None:
    model = GatedModel()
    batcher = DynamicBatcher(model, max_batch_size=4, max_queue_size=8)
    with pytest.raises(DeadlineExceeded):
        await batcher.submit(1, deadline=time.monotonic() + 0.01)
    assert model.running == 1  # answered while the batch was still computing
    model.gate.set()
    await batcher.close()


async def test_cancelled_caller_leaves_the_queue() -> None:
    model = GatedModel()
    batcher = DynamicBatcher(model, max_batch_size=4, max_queue_size=8)
    running = asyncio.create_task(batcher.submit(1))
    await model.started.wait()
    gone = asyncio.create_task(batcher.submit(2))
    stays = asyncio.create_task(batcher.submit(3))
    await settle()
    gone.cancel()
    await settle()
    assert batcher.queued_rows == 1
    model.gate.set()
    await asyncio.gather(running, stays)
    assert model.batches == [[1], [3]]
    await batcher.close()


async def test_error_fails_each_request_of_its_batch_only() -> None:
    calls: list[list[int]] = []

    async def flaky(items: list[int]) -> list[int]:
        calls.append(items)
        if 13 in items:
            raise BackendError("unlucky batch")
        return items

    batcher = DynamicBatcher(flaky, max_batch_size=4, max_queue_size=8)
    with pytest.raises(BackendError, match="unlucky"):
        await batcher.submit(13)
    assert await batcher.submit(7) == 7
    await batcher.close()


async def test_wrong_number_of_results_is_an_error() -> None:
    async def broken(items: list[int]) -> Sequence[int]:
        return items[:-1]

    batcher = DynamicBatcher(broken, max_batch_size=4, max_queue_size=8)
    with pytest.raises(BackendError, match="0 results for 1 requests"):
        await batcher.submit(1)
    await batcher.close()


async def test_instances_run_batches_concurrently() -> None:
    model = GatedModel()
    batcher = DynamicBatcher(model, max_batch_size=1, max_queue_size=8, instances=2)
    tasks = [asyncio.create_task(batcher.submit(i)) for i in range(4)]
    await settle()
    assert model.max_running == 2
    model.gate.set()
    assert sorted(await asyncio.gather(*tasks)) == [0, 10, 20, 30]
    await batcher.close()


async def test_queue_delay_holds_a_batch_open_until_it_is_full() -> None:
    model = GatedModel()
    model.gate.set()
    batcher = DynamicBatcher(model, max_batch_size=3, max_queue_size=8, max_queue_delay_s=30.0)
    first = asyncio.create_task(batcher.submit(0))
    await settle()
    assert model.batches == []  # held open: fewer than max_batch_size rows queued
    rest = [asyncio.create_task(batcher.submit(i)) for i in (1, 2)]
    await asyncio.wait_for(asyncio.gather(first, *rest), timeout=5)
    assert model.batches == [[0, 1, 2]]  # full: dispatched without waiting out the delay
    await batcher.close()


async def test_drain_answers_queued_work_then_refuses() -> None:
    model = GatedModel()
    batcher = DynamicBatcher(model, max_batch_size=2, max_queue_size=8)
    tasks = [asyncio.create_task(batcher.submit(i)) for i in range(5)]
    await model.started.wait()
    closing = asyncio.create_task(batcher.close())
    await settle()
    with pytest.raises(ShuttingDown):
        await batcher.submit(99)
    model.gate.set()
    await closing
    assert [await task for task in tasks] == [0, 10, 20, 30, 40]


def test_arguments_are_checked() -> None:
    async def identity(items: list[int]) -> list[int]:
        return items

    with pytest.raises(ValueError, match="max_batch_size"):
        DynamicBatcher(identity, max_batch_size=0, max_queue_size=1)
    with pytest.raises(ValueError, match="max_queue_size"):
        DynamicBatcher(identity, max_batch_size=4, max_queue_size=2)
    with pytest.raises(ValueError, match="instances"):
        DynamicBatcher(identity, max_batch_size=1, max_queue_size=1, instances=0)


class TaskRecorder:
    """A batch function that never suspends and records the task each batch ran in."""

    def __init__(self) -> None:
        self.tasks: list[asyncio.Task[object] | None] = []
        self.batches: list[list[int]] = []

    async def __call__(self, items: list[int]) -> list[int]:
        self.tasks.append(asyncio.current_task())
        self.batches.append(list(items))
        return [item * 10 for item in items]


async def test_an_idle_batch_that_will_not_suspend_runs_in_its_callers_task() -> None:
    model = TaskRecorder()
    batcher = DynamicBatcher(model, max_batch_size=8, max_queue_size=16, at_once=lambda _: True)
    caller = asyncio.create_task(batcher.submit(4))
    assert await caller == 40
    assert model.tasks == [caller]
    await batcher.close()


async def test_without_at_once_a_dispatcher_runs_the_batch() -> None:
    model = TaskRecorder()
    batcher = DynamicBatcher(model, max_batch_size=8, max_queue_size=16, at_once=lambda _: False)
    caller = asyncio.create_task(batcher.submit(4))
    assert await caller == 40
    assert model.tasks != [caller]
    assert model.tasks[0] is not None and model.tasks[0].get_name() == "batcher-dispatcher-0"
    await batcher.close()


async def test_a_batch_run_in_its_callers_task_holds_the_instance() -> None:
    """Requests arriving while it runs queue and form one batch after it, never beside it
    (a batch function that suspends although `at_once` said it would not, to see the order)."""
    model = GatedModel()
    batcher = DynamicBatcher(model, max_batch_size=8, max_queue_size=16, at_once=lambda i: i == 1)
    first = asyncio.create_task(batcher.submit(1))
    await model.started.wait()
    rest = [asyncio.create_task(batcher.submit(i)) for i in range(2, 5)]
    await settle()
    assert model.max_running == 1 and batcher.queued_rows == 3
    model.gate.set()
    assert [await first, *[await task for task in rest]] == [10, 20, 30, 40]
    assert model.batches == [[1], [2, 3, 4]] and model.max_running == 1
    await batcher.close()


async def test_a_cancelled_caller_of_a_batch_run_at_once_frees_the_instance() -> None:
    model = GatedModel()
    batcher = DynamicBatcher(model, max_batch_size=8, max_queue_size=16, at_once=lambda i: i == 1)
    gone = asyncio.create_task(batcher.submit(1))
    await model.started.wait()
    waiting = asyncio.create_task(batcher.submit(2))
    await settle()
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    model.gate.set()
    assert await waiting == 20
    assert model.batches == [[1], [2]]
    await batcher.close()


async def test_drain_waits_for_a_batch_run_at_once() -> None:
    model = GatedModel()
    batcher = DynamicBatcher(model, max_batch_size=8, max_queue_size=16, at_once=lambda _: True)
    running = asyncio.create_task(batcher.submit(1))
    await model.started.wait()
    closing = asyncio.create_task(batcher.close())
    await settle()
    assert not closing.done()
    model.gate.set()
    await closing
    assert await running == 10

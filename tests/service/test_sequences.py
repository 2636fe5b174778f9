"""The sequence batcher through its public API: parameters, order within a sequence, batches
across sequences, the live bound, idle freeing (an injected clock), leaving the queue, drain.
Batches are held open with asyncio.Event gates, never sleeps."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np
import pytest

from service.errors import InvalidInput, ShuttingDown, Unavailable
from service.feeds import Feed
from service.sequences import (
    SequenceBatcher,
    SequenceId,
    SequenceParameters,
    SequenceStep,
    sequence_parameters,
)


class Totals:
    """StepFeeds of a running total: state `total`, answer `total` after the step."""

    def initial_state(self) -> Feed:
        return {"total": np.zeros((1, 1))}

    def feed(
        self, inputs: Feed, state: Feed, *, start: bool, end: bool, sequence: SequenceId
    ) -> Feed:
        return {**inputs, **state, "start": np.array([[start]])}

    def carry(self, outputs: Feed) -> tuple[Feed, Feed]:
        return {"total": outputs["total"]}, {"total": outputs["total"]}


class Gated:
    """A batch function that records each batch and waits for `gate` when it is closed."""

    def __init__(self) -> None:
        self.batches: list[list[Feed]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.entered = asyncio.Event()

    async def __call__(self, feeds: list[Feed]) -> Sequence[Feed]:
        self.batches.append(feeds)
        self.entered.set()
        await self.gate.wait()
        return [{"total": feed["total"] + feed["x"]} for feed in feeds]


def batcher(run: Gated, **overrides: object) -> SequenceBatcher:
    options: dict[str, object] = {
        "name": "m",
        "strategy": "oldest",
        "max_batch_size": 8,
        "instances": 1,
        "max_sequences": 4,
        "idle_s": 60.0,
        "max_queue_size": 64,
    }
    options.update(overrides)
    return SequenceBatcher(run, Totals(), **options)  # type: ignore[arg-type]


def step(sequence: SequenceId, x: float, *, start: bool = False, end: bool = False) -> SequenceStep:
    return SequenceStep(SequenceParameters(sequence, start, end), {"x": np.array([[x]])})


def total(answer: Feed) -> float:
    return float(answer["total"][0, 0])


@pytest.mark.parametrize(
    ("parameters", "expected"),
    [
        ({}, None),
        ({"sequence_id": 0}, None),
        ({"sequence_id": 7, "sequence_start": True}, SequenceParameters(7, True, False)),
        ({"sequence_id": "s", "sequence_end": True}, SequenceParameters("s", False, True)),
    ],
)
def test_parameters(parameters: dict[str, object], expected: SequenceParameters | None) -> None:
    assert sequence_parameters(parameters) == expected


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"sequence_start": True}, "need a sequence_id"),
        ({"sequence_id": 1.5}, "unsigned integer or a string"),
        ({"sequence_id": -1}, "unsigned 64-bit"),
        ({"sequence_id": 2**64}, "unsigned 64-bit"),
        ({"sequence_id": 3, "sequence_end": "yes"}, "'sequence_end' must be a boolean"),
    ],
)
def test_bad_parameters(parameters: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        sequence_parameters(parameters)


async def test_steps_of_a_sequence_run_in_order_and_sequences_batch_together() -> None:
    run = Gated()
    sequences = batcher(run)
    run.gate.clear()
    first = asyncio.create_task(sequences.submit(step(1, 1, start=True)))
    await run.entered.wait()  # sequence 1's first step is computing
    later = [
        asyncio.create_task(sequences.submit(step(1, 10))),
        asyncio.create_task(sequences.submit(step(2, 5, start=True))),
        asyncio.create_task(sequences.submit(step(3, 7, start=True))),
        asyncio.create_task(sequences.submit(step(1, 100, end=True))),
    ]
    await asyncio.sleep(0)  # let the submits queue (no timing: one loop turn)
    run.gate.set()
    answers = [total(answer) for answer in await asyncio.gather(first, *later)]
    assert answers == [1, 11, 5, 7, 111]
    # batch 1: seq 1's start alone; batch 2: seq 1's second step with 2 and 3; then seq 1's end
    assert [len(batch) for batch in run.batches] == [1, 3, 1]
    assert sequences.live == 2  # 1 ended; 2 and 3 live
    await sequences.close()


async def test_lifecycle_errors() -> None:
    sequences = batcher(Gated())
    with pytest.raises(InvalidInput, match="sequence 9 of model 'm' is not live"):
        await sequences.submit(step(9, 1))
    await sequences.submit(step(9, 1, start=True))
    with pytest.raises(InvalidInput, match="already live"):
        await sequences.submit(step(9, 1, start=True))
    await sequences.submit(step(9, 1, end=True))
    with pytest.raises(InvalidInput, match="not live"):
        await sequences.submit(step(9, 1))
    again = await sequences.submit(step(9, 4, start=True))
    assert total(again) == 4  # a new start begins from the initial state
    await sequences.close()


async def test_the_live_bound_and_direct_slots() -> None:
    sequences = batcher(Gated(), max_sequences=2)
    await sequences.submit(step(1, 1, start=True))
    await sequences.submit(step(2, 1, start=True))
    with pytest.raises(Unavailable, match="2 live sequences, its limit"):
        await sequences.submit(step(3, 1, start=True))
    await sequences.submit(step(1, 1, end=True))
    await sequences.submit(step(3, 1, start=True))
    await sequences.close()
    direct = batcher(Gated(), strategy="direct", max_batch_size=2, instances=2, max_sequences=99)
    assert direct.max_sequences == 4  # its slots


async def test_idle_sequences_are_freed() -> None:
    now = [0.0]
    freed: list[int] = []

    class Observer:
        def sequences_changed(self, live: int) -> None:
            pass

        def sequence_freed_idle(self) -> None:
            freed.append(1)

    sequences = batcher(Gated(), idle_s=5.0, clock=lambda: now[0], sequence_observer=Observer())
    await sequences.submit(step(1, 1, start=True))
    await sequences.submit(step(2, 1, start=True))
    now[0] = 4.0
    await sequences.submit(step(2, 1))  # 2 stays active
    now[0] = 6.0
    assert sequences.free_idle() == 1
    assert freed == [1] and sequences.live == 1
    with pytest.raises(InvalidInput, match="not live"):
        await sequences.submit(step(1, 1))
    assert total(await sequences.submit(step(2, 1))) == 3
    await sequences.close()


async def test_a_caller_that_leaves_drops_its_queued_step() -> None:
    run = Gated()
    sequences = batcher(run)
    await sequences.submit(step(1, 1, start=True))
    run.gate.clear()
    run.entered.clear()
    busy = asyncio.create_task(sequences.submit(step(2, 0, start=True)))
    await run.entered.wait()
    left = asyncio.create_task(sequences.submit(step(2, 50)))
    await asyncio.sleep(0)
    left.cancel()
    run.gate.set()
    await busy
    with pytest.raises(asyncio.CancelledError):
        await left
    assert total(await sequences.submit(step(2, 1))) == 1  # the 50 was never added
    await sequences.close()


async def test_drain_answers_what_is_queued_then_refuses() -> None:
    run = Gated()
    sequences = batcher(run)
    run.gate.clear()
    steps = [asyncio.create_task(sequences.submit(step(1, 1, start=True)))]
    await run.entered.wait()
    steps.append(asyncio.create_task(sequences.submit(step(1, 2))))
    await asyncio.sleep(0)
    draining = asyncio.create_task(sequences.close())
    await asyncio.sleep(0)
    assert not draining.done()
    run.gate.set()
    await draining
    assert [total(answer) for answer in await asyncio.gather(*steps)] == [1, 3]
    with pytest.raises(ShuttingDown):
        await sequences.submit(step(5, 1, start=True))

"""`service.grpc.streams`: a stream's requests answered concurrently, never more than `limit`
held, the request iterator left unread at the bound. Event-gated, no sleeps."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from service.grpc.streams import ConcurrentStream, serve_concurrently


class Requests:
    """Requests 0..count-1; `pulled` is how many the stream has read."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[int]:
        for index in range(self.count):
            self.pulled += 1
            yield index


class Gated:
    """An answer function whose call for request i waits for `release(i)`."""

    def __init__(self, count: int) -> None:
        self.started = [asyncio.Event() for _ in range(count)]
        self.gates = [asyncio.Event() for _ in range(count)]
        self.cancelled: list[int] = []

    async def __call__(self, index: int) -> str:
        self.started[index].set()
        try:
            await self.gates[index].wait()
        except asyncio.CancelledError:
            self.cancelled.append(index)
            raise
        return f"answer {index}"

    def release(self, *indices: int) -> None:
        for index in indices:
            self.gates[index].set()


async def settle() -> None:
    """Let every ready task run until all wait on something (no time passes)."""
    for _ in range(20):
        await asyncio.sleep(0)


async def test_reading_stops_at_the_limit_until_an_answer_is_taken() -> None:
    requests, answer = Requests(5), Gated(5)
    stream = ConcurrentStream(requests.__aiter__(), answer, limit=2)
    answers = stream.answers()
    first = asyncio.ensure_future(anext(answers))
    await answer.started[0].wait()
    await answer.started[1].wait()
    await settle()
    assert requests.pulled == 2
    assert stream.held == 2

    answer.release(1)
    assert await first == "answer 1"
    await settle()
    # Answered but the consumer has not asked for the next: its place is still held.
    assert requests.pulled == 2

    second = asyncio.ensure_future(anext(answers))
    await answer.started[2].wait()
    await settle()
    assert requests.pulled == 3
    assert stream.held == 2

    answer.release(0, 2, 3, 4)
    taken = [await second] + [item async for item in answers]
    assert sorted(taken) == [f"answer {index}" for index in (0, 2, 3, 4)]
    assert requests.pulled == 5
    assert stream.held == 0


async def test_answers_come_in_completion_order() -> None:
    answer = Gated(3)
    answers = serve_concurrently(Requests(3).__aiter__(), answer, limit=8)
    taking = asyncio.ensure_future(anext(answers))
    for started in answer.started:
        await started.wait()
    answer.release(2)
    assert await taking == "answer 2"
    answer.release(0, 1)
    assert [item async for item in answers] == ["answer 0", "answer 1"]


async def test_an_answer_that_raises_ends_the_stream_and_cancels_the_rest() -> None:
    answer = Gated(3)

    async def failing(index: int) -> str:
        if index == 1:
            await answer.started[0].wait()
            raise RuntimeError("broken")
        return await answer(index)

    answers = serve_concurrently(Requests(3).__aiter__(), failing, limit=8)
    with pytest.raises(RuntimeError, match="broken"):
        await anext(answers)
    assert sorted(answer.cancelled) == [0, 2]


async def test_leaving_early_cancels_running_answers() -> None:
    answer = Gated(4)
    answers = serve_concurrently(Requests(4).__aiter__(), answer, limit=3)
    taking = asyncio.ensure_future(anext(answers))
    for started in answer.started[:3]:
        await started.wait()
    answer.release(0)
    assert await taking == "answer 0"
    await answers.aclose()  # type: ignore[attr-defined]
    assert sorted(answer.cancelled) == [1, 2]
    assert not answer.started[3].is_set()


async def test_an_empty_stream_ends() -> None:
    assert [item async for item in serve_concurrently(Requests(0).__aiter__(), Gated(0), 1)] == []


def test_the_limit_must_allow_a_request() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ConcurrentStream(Requests(1).__aiter__(), Gated(1), limit=0)

"""Serve a stream of requests concurrently, with backpressure: at most `limit` requests of one
stream are held at a time, from the moment one is read until its answer has been taken.

Why: ModelStreamInfer serves a stream's requests concurrently (so they batch together), and
used to read the request iterator as fast as the client sent, one task per request, with
answers queued without bound: a client that sends and never reads grew the server linearly
(20,000 queued 4 KB requests: see docs/reliability.md). Here the next request is read only
when a place is free, so a full stream stops reading; gRPC's flow control then holds the
client's further sends on the client's side. The answer queue holds at most `limit` answers,
because each one keeps its place until the consumer takes it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Generic, TypeVar

RequestT = TypeVar("RequestT")
AnswerT = TypeVar("AnswerT")


class _Raised:
    """An `answer` call that raised: the stream ends with the error."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


class _End:
    """Every request was read and answered."""


class ConcurrentStream(Generic[RequestT, AnswerT]):
    """`answers()` yields `answer(request)` for every request, in completion order.

    At most `limit` requests are held at once (read, being answered, or answered and queued
    for the consumer); the request iterator is not read while the limit is reached. An
    exception from `answer` ends the stream with it (answer callers that want per-request
    errors turn them into answers). Leaving `answers()` early cancels the reading and every
    answer still running.
    """

    def __init__(
        self,
        requests: AsyncIterator[RequestT],
        answer: Callable[[RequestT], Awaitable[AnswerT]],
        limit: int,
    ) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        self.limit = limit
        self.held = 0
        """Requests read whose answers the consumer has not taken yet."""
        self._requests = requests
        self._answer = answer
        self._places = asyncio.Semaphore(limit)
        self._answers: asyncio.Queue[AnswerT | _Raised | _End] = asyncio.Queue()
        self._running: set[asyncio.Task[None]] = set()

    async def answers(self) -> AsyncIterator[AnswerT]:
        reader = asyncio.create_task(self._read())
        try:
            while not isinstance(item := await self._answers.get(), _End):
                if isinstance(item, _Raised):
                    raise item.error
                yield item
                # The consumer asked for the next answer: this one has left.
                self.held -= 1
                self._places.release()
            await reader
        finally:
            for task in (reader, *self._running):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(reader, *self._running, return_exceptions=True)

    async def _read(self) -> None:
        try:
            while True:
                await self._places.acquire()
                try:
                    request = await anext(self._requests)
                except StopAsyncIteration:
                    break
                self.held += 1
                task = asyncio.create_task(self._run(request))
                self._running.add(task)
                task.add_done_callback(self._running.discard)
            while self._running:
                await asyncio.gather(*self._running, return_exceptions=True)
        except Exception as error:  # reading the requests failed
            await self._answers.put(_Raised(error))
        else:
            await self._answers.put(_End())

    async def _run(self, request: RequestT) -> None:
        try:
            answer = await self._answer(request)
        except Exception as error:
            await self._answers.put(_Raised(error))
        else:
            await self._answers.put(answer)


def serve_concurrently(
    requests: AsyncIterator[RequestT],
    answer: Callable[[RequestT], Awaitable[AnswerT]],
    limit: int,
) -> AsyncIterator[AnswerT]:
    """The answers of `ConcurrentStream(requests, answer, limit)`."""
    return ConcurrentStream(requests, answer, limit).answers()

"""A dynamic batcher: a bounded queue per model version, drained by `instances` dispatcher tasks.

Policy (see the README): when a dispatcher is free it takes everything queued, up to
`max_batch_size` rows, and runs it at once, so an idle server adds no wait. `max_queue_delay_s`
optionally holds a batch open for more rows, but only while fewer than `max_batch_size` are
queued. A full queue rejects at once; a request whose deadline passes while queued is answered
`DeadlineExceeded` and never computed; a cancelled caller (client gone) leaves the queue.

A request that finds the batcher idle, and whose batch the batch function says will finish
without suspending (`at_once`: a small model computed on the event loop), is run as a batch of
its own in the caller's task: the same batch a dispatcher would have taken, without the two task
switches of handing it over and back.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from service.errors import BackendError, DeadlineExceeded, InvalidInput, QueueFull, ShuttingDown

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")

BatchFunction = Callable[[list[ItemT]], Awaitable[Sequence[ResultT]]]


AT_ONCE_MAX_PER_TURN = 1.5
"""Run a request at once only while fewer than this many arrive per event-loop turn."""
TURN_AVERAGING = 0.1
"""Weight of the latest turn in the moving average of requests per turn."""


@dataclass(slots=True)
class BatchTrace:
    """Per-request facts the batcher fills in, for request logs and traces."""

    queue_s: float = 0.0
    compute_s: float = 0.0
    batch_rows: int = 0
    span: object | None = None
    """The request's trace span, opaque to the batcher (set by the data plane when tracing)."""
    batch_span: object | None = None
    """The span of the batch that served the request (set by the `BatchTracer`)."""


class BatchTracer(Protocol):
    """Traces batches; the data plane's tracing implements it (nothing here imports a tracer).

    `batch` is entered around the batch function, in the dispatcher that runs it, so a backend
    sees the batch's context (the TorchServe backend forwards it as `traceparent`)."""

    def batch(
        self,
        members: Sequence[BatchTrace],
        *,
        rows: int,
        instance: int,
        enqueued: Sequence[float],
        started: float,
    ) -> contextlib.AbstractContextManager[None]: ...


current_trace: ContextVar[BatchTrace | None] = ContextVar("current_trace", default=None)
"""Set by the transport around a request that wants its batching facts recorded."""


@dataclass(slots=True)
class BatchFacts:
    """What the batch function measured, for the batch's span."""

    backend_s: float = 0.0
    padded_elements: int = 0


current_batch: ContextVar[BatchFacts | None] = ContextVar("current_batch", default=None)
"""Set by a `BatchTracer` around a traced batch; the batch function fills it in."""


class BatchObserver(Protocol):
    """Receives timing facts; metrics implement it."""

    def batch_started(self, rows: int, queue_seconds: Sequence[float]) -> None: ...

    def batch_finished(self, rows: int, compute_seconds: float, failed: bool) -> None: ...

    def queue_changed(self, rows: int) -> None: ...


ItemT_contra = TypeVar("ItemT_contra", contravariant=True)
ResultT_co = TypeVar("ResultT_co", covariant=True)


class Queue(Protocol[ItemT_contra, ResultT_co]):
    """What a served model submits its work to: the dynamic batcher, or a sequence batcher."""

    @property
    def dispatches_immediately(self) -> bool: ...

    async def submit(
        self, item: ItemT_contra, *, deadline: float | None = None, priority: int = 0
    ) -> ResultT_co: ...

    async def close(self) -> None: ...


@dataclass(eq=False, slots=True)
class _Pending(Generic[ItemT, ResultT]):
    item: ItemT
    rows: int
    enqueued: float
    deadline: float | None
    future: asyncio.Future[ResultT]
    taken: bool = field(default=False)
    trace: BatchTrace | None = field(default=None)
    priority: int = 0
    """0: none (arrival order); else 1 is the highest level (Triton's priority levels)."""


class DynamicBatcher(Generic[ItemT, ResultT]):
    """Groups concurrent `submit` calls into batches for `batch_fn`.

    `batch_fn` takes a list of items and must return one result per item, in order.
    `rows_of` tells how many rows an item holds (a request may carry several). `at_once`, when
    given, tells whether `batch_fn([item])` would return without suspending; only then may an
    idle batcher run the item in its caller's task.
    """

    def __init__(
        self,
        batch_fn: BatchFunction[ItemT, ResultT],
        *,
        max_batch_size: int,
        max_queue_size: int,
        max_queue_delay_s: float = 0.0,
        instances: int = 1,
        rows_of: Callable[[ItemT], int] = lambda _item: 1,
        at_once: Callable[[ItemT], bool] | None = None,
        observer: BatchObserver | None = None,
        tracer: BatchTracer | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        if max_queue_size < max_batch_size:
            raise ValueError("max_queue_size must be >= max_batch_size")
        if max_queue_delay_s < 0:
            raise ValueError("max_queue_delay_s must be >= 0")
        if instances < 1:
            raise ValueError("instances must be >= 1")
        self._batch_fn = batch_fn
        self.max_batch_size = max_batch_size
        self.max_queue_size = max_queue_size
        self.max_queue_delay_s = max_queue_delay_s
        self.instances = instances
        self._rows_of = rows_of
        self._at_once = at_once
        self._turn_submits = 0
        self._submits_per_turn = 1.0
        self._observer = observer
        self._tracer = tracer
        self._clock = clock
        self._queue: deque[_Pending[ItemT, ResultT]] = deque()
        self._queued_rows = 0
        self._busy = 0
        self._closed = False
        # Created lazily inside the running loop (see `_ensure_dispatchers`).
        self._wakeup: asyncio.Event | None = None
        self._idle: asyncio.Event | None = None
        self._dispatchers: list[asyncio.Task[None]] = []

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    @property
    def dispatches_immediately(self) -> bool:
        """Nothing queued and an instance free: a request submitted now runs at once."""
        return not self._queue and self._busy < self.instances and self.max_queue_delay_s == 0

    async def submit(
        self, item: ItemT, *, deadline: float | None = None, priority: int = 0
    ) -> ResultT:
        """Queue `item` and wait for its result.

        `deadline` is an absolute time on this batcher's clock. Raises `QueueFull`,
        `DeadlineExceeded`, `ShuttingDown`, `InvalidInput` (item larger than a batch),
        or whatever the batch function raised.
        """
        if self._closed:
            raise ShuttingDown("model is shutting down")
        rows = self._rows_of(item)
        if rows > self.max_batch_size:
            raise InvalidInput(
                f"request holds {rows} rows; this model takes at most {self.max_batch_size} per batch"
            )
        if self._queued_rows + rows > self.max_queue_size:
            raise QueueFull(f"queue full ({self.max_queue_size} rows waiting); retry later")
        now = self._clock()
        if deadline is not None and deadline <= now:
            raise DeadlineExceeded("deadline passed before the request was queued")
        self._ensure_dispatchers()
        assert self._wakeup is not None
        future: asyncio.Future[ResultT] = asyncio.get_running_loop().create_future()
        pending = _Pending(
            item, rows, now, deadline, future, trace=current_trace.get(), priority=priority
        )
        if self._runs_at_once(item):
            # Nothing can interrupt a batch that does not suspend, so there is no deadline to
            # watch: it passed neither before (checked above) nor, unseen, during the batch.
            pending.taken = True
            try:
                return await self._run_now(pending)
            except asyncio.CancelledError:
                self._forget(pending)
                raise
        self._enqueue(pending)
        self._queued_rows += rows
        self._queue_changed()
        self._wakeup.set()
        try:
            if deadline is None:
                return await future
            async with asyncio.timeout_at(self._loop_time(deadline)):
                return await future
        except TimeoutError:
            self._forget(pending)
            raise DeadlineExceeded("deadline exceeded before the result was ready") from None
        except asyncio.CancelledError:
            self._forget(pending)
            raise

    def _loop_time(self, deadline: float) -> float:
        return asyncio.get_running_loop().time() + (deadline - self._clock())

    def _forget(self, pending: _Pending[ItemT, ResultT]) -> None:
        """The caller left: drop its item if still queued; a running batch just discards it."""
        if not pending.taken:
            pending.taken = True
            self._queued_rows -= pending.rows
            self._queue_changed()
        if not pending.future.done():
            pending.future.cancel()
        elif not pending.future.cancelled():
            pending.future.exception()  # settled for a caller that has gone: mark it seen

    def _runs_at_once(self, item: ItemT) -> bool:
        """Whether `item` is run at once in its caller's task: the batcher is idle, the batch
        will not suspend, and requests have been arriving one per turn of the event loop.

        Requests that arrive together (the connections one poll of the loop found readable)
        start in the same turn and queue, so a dispatcher takes them as one batch in the next
        turn; running the first of them at once would split that batch. So the batcher counts
        the requests submitted per turn (a moving average) and runs a request at once only
        while that is about one, as for gRPC, whose calls reach the loop one at a time."""
        if self._at_once is None:
            return False
        self._turn_submits += 1
        if self._turn_submits == 1:
            asyncio.get_running_loop().call_soon(self._turn_ended)
            return (
                self._submits_per_turn < AT_ONCE_MAX_PER_TURN
                and self.dispatches_immediately
                and self._at_once(item)
            )
        return False

    def _turn_ended(self) -> None:
        self._submits_per_turn += (self._turn_submits - self._submits_per_turn) * TURN_AVERAGING
        self._turn_submits = 0

    async def _run_now(self, pending: _Pending[ItemT, ResultT]) -> ResultT:
        """Run `pending` alone, here, as the batch an idle dispatcher would have taken."""
        slot = self._busy
        self._busy += 1
        assert self._idle is not None
        self._idle.clear()
        try:
            await self._run([pending], slot)
        finally:
            self._busy -= 1
            self._batch_done()
        return pending.future.result()

    def _batch_done(self) -> None:
        """A batch run outside the dispatchers ended: wake one for what queued meanwhile."""
        assert self._wakeup is not None and self._idle is not None
        if self._queue:
            self._wakeup.set()
        elif self._busy == 0:
            self._idle.set()

    def _queue_changed(self) -> None:
        if self._observer is not None:
            self._observer.queue_changed(self._queued_rows)

    def _ensure_dispatchers(self) -> None:
        if self._dispatchers:
            return
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._dispatchers = [
            asyncio.create_task(self._work(index), name=f"batcher-dispatcher-{index}")
            for index in range(self.instances)
        ]

    def _enqueue(self, pending: _Pending[ItemT, ResultT]) -> None:
        """Arrival order within a priority level; a higher level (a smaller number) goes ahead
        of the lower ones already queued."""
        queue = self._queue
        if not pending.priority or not queue or queue[-1].priority <= pending.priority:
            queue.append(pending)
            return
        for index, queued in enumerate(queue):
            if not queued.taken and queued.priority > pending.priority:
                queue.insert(index, pending)
                return
        queue.append(pending)

    def _take_batch(self) -> list[_Pending[ItemT, ResultT]]:
        """Pop queued items up to max_batch_size rows; expired ones are answered 504 here."""
        batch: list[_Pending[ItemT, ResultT]] = []
        rows = 0
        now = self._clock()
        while self._queue:
            head = self._queue[0]
            if head.taken:
                self._queue.popleft()
                continue
            if rows + head.rows > self.max_batch_size:
                break
            self._queue.popleft()
            head.taken = True
            self._queued_rows -= head.rows
            if head.deadline is not None and head.deadline <= now:
                if not head.future.done():
                    head.future.set_exception(
                        DeadlineExceeded("deadline exceeded while queued; not computed")
                    )
                continue
            batch.append(head)
            rows += head.rows
        self._queue_changed()
        return batch

    async def _wait_for_fuller_batch(self) -> None:
        assert self._wakeup is not None
        if self.max_queue_delay_s <= 0 or not self._queue:
            return
        oldest = next((p.enqueued for p in self._queue if not p.taken), None)
        if oldest is None:
            return
        close_at = oldest + self.max_queue_delay_s
        while self._queued_rows < self.max_batch_size and not self._closed:
            remaining = close_at - self._clock()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._wakeup.wait()
            except TimeoutError:
                return

    def resize(self, instances: int) -> None:
        """Run up to `instances` batches at once from now on (e.g. a handler pool was scaled);
        an instance above the new count stops once its current batch is answered."""
        if instances < 1:
            raise ValueError("instances must be >= 1")
        self.instances = instances
        if not self._dispatchers:
            return
        self._dispatchers = [task for task in self._dispatchers if not task.done()]
        running = {int(task.get_name().rsplit("-", 1)[1]) for task in self._dispatchers}
        for index in range(instances):
            if index not in running:
                self._dispatchers.append(
                    asyncio.create_task(self._work(index), name=f"batcher-dispatcher-{index}")
                )
        assert self._wakeup is not None
        self._wakeup.set()

    async def _work(self, instance: int) -> None:
        assert self._wakeup is not None and self._idle is not None
        while True:
            if instance >= self.instances:
                return  # resized down
            if not self._queue or self._busy >= self.instances:
                self._wakeup.clear()
                if not self._queue and self._busy == 0:
                    self._idle.set()
                await self._wakeup.wait()
                continue
            await self._wait_for_fuller_batch()
            batch = self._take_batch()
            if self._queue:
                self._wakeup.set()  # let another free instance take the rest
            if not batch:
                continue
            self._busy += 1
            self._idle.clear()
            try:
                await self._run(batch, instance)
            finally:
                self._busy -= 1

    def _traced(
        self, batch: list[_Pending[ItemT, ResultT]], rows: int, instance: int, started: float
    ) -> contextlib.AbstractContextManager[None]:
        if self._tracer is None:
            return contextlib.nullcontext()
        traced = [p for p in batch if p.trace is not None and p.trace.span is not None]
        if not traced:
            return contextlib.nullcontext()
        return self._tracer.batch(
            [p.trace for p in traced if p.trace is not None],
            rows=rows,
            instance=instance,
            enqueued=[p.enqueued for p in traced],
            started=started,
        )

    async def _run(self, batch: list[_Pending[ItemT, ResultT]], instance: int = 0) -> None:
        rows = sum(p.rows for p in batch)
        started = self._clock()
        if self._observer is not None:
            self._observer.batch_started(rows, [started - p.enqueued for p in batch])
        failed = False
        try:
            with self._traced(batch, rows, instance, started):
                results = await self._batch_fn([p.item for p in batch])
            if len(results) != len(batch):
                raise BackendError(
                    f"batch function returned {len(results)} results for {len(batch)} requests"
                )
        except asyncio.CancelledError:
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(ShuttingDown("batch cancelled at shutdown"))
            raise
        except Exception as error:  # every request of the batch gets the error; dispatchers go on
            failed = True
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(error)
        else:
            for pending, result in zip(batch, results, strict=True):
                if not pending.future.done():
                    pending.future.set_result(result)
        finally:
            finished = self._clock()
            if self._observer is not None:
                self._observer.batch_finished(rows, finished - started, failed)
            for pending in batch:
                if pending.trace is not None:
                    pending.trace.queue_s = started - pending.enqueued
                    pending.trace.compute_s = finished - started
                    pending.trace.batch_rows = rows

    async def drain(self) -> None:
        """Stop accepting; wait until everything queued or running has been answered."""
        self._closed = True
        if not self._dispatchers:
            return
        assert self._idle is not None and self._wakeup is not None
        self._wakeup.set()
        while self._queue or self._busy:
            self._idle.clear()
            if not self._queue and self._busy == 0:
                break
            await self._idle.wait()

    async def close(self) -> None:
        """Drain, then stop the dispatchers."""
        await self.drain()
        for dispatcher in self._dispatchers:
            dispatcher.cancel()
        for dispatcher in self._dispatchers:
            with contextlib.suppress(asyncio.CancelledError):
                await dispatcher
        self._dispatchers = []

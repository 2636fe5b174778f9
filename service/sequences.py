"""Sequence batching: requests that belong to one stateful sequence (Triton's sequence
batcher), whatever the protocol.

A client names its sequence with the `sequence_id` request parameter (a uint64 or a string)
and marks its first and last request with `sequence_start` and `sequence_end`.
`SequenceBatcher` runs the steps of each sequence one at a time, in arrival order, on the
model instance the sequence was given when it started, and keeps its state between steps;
steps of different sequences batch together. What a step's feed holds beside the client's
inputs (control tensors, the state) is the model's business: a `StepFeeds` builds it.

Policy:
- `oldest`: a free instance takes the ready steps of its sequences, oldest first, up to
  `max_batch_size`; `direct`: each sequence also holds a batch slot of its instance (so the
  live sequences are at most instances x max_batch_size), and a batch's rows are in slot order;
- a start beyond `max_sequences` live sequences is refused at once (503), not queued: a
  stateful client cannot be kept waiting for another client's sequence to end;
- a sequence without a step queued or running for `idle_s` is freed (its state dropped); a
  later step of it is refused as unknown;
- a step whose deadline passes while queued, or whose client leaves, is dropped uncomputed
  and the sequence's state stays as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from service.batcher import BatchObserver
from service.errors import DeadlineExceeded, InvalidInput, QueueFull, ShuttingDown, Unavailable
from service.feeds import Feed

Strategy = Literal["direct", "oldest"]
SequenceId = int | str
MAX_SEQUENCE_ID = 2**64 - 1
MAX_STRING_ID_CHARS = 256
"""Longest string `sequence_id` accepted (it is kept in memory while the sequence lives)."""


@dataclass(frozen=True, slots=True)
class SequenceParameters:
    """A request's place in a sequence, from its `sequence_*` parameters."""

    id: SequenceId
    start: bool = False
    end: bool = False


def sequence_parameters(parameters: Mapping[str, Any]) -> SequenceParameters | None:
    """The `sequence_id`, `sequence_start` and `sequence_end` request parameters (V2 REST and
    gRPC alike); None when the request names no sequence (no id, 0 or "", as Triton reads)."""
    raw = parameters.get("sequence_id")
    start = _flag(parameters, "sequence_start")
    end = _flag(parameters, "sequence_end")
    if raw is None or raw == 0 or raw == "":
        if start or end:
            raise InvalidInput("parameters 'sequence_start' and 'sequence_end' need a sequence_id")
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise InvalidInput("parameter 'sequence_id' must be an unsigned integer or a string")
    if isinstance(raw, int) and not 0 < raw <= MAX_SEQUENCE_ID:
        raise InvalidInput("parameter 'sequence_id' must be an unsigned 64-bit integer")
    if isinstance(raw, str) and len(raw) > MAX_STRING_ID_CHARS:
        raise InvalidInput(
            f"parameter 'sequence_id' is longer than {MAX_STRING_ID_CHARS} characters"
        )
    return SequenceParameters(raw, start, end)


def _flag(parameters: Mapping[str, Any], name: str) -> bool:
    value = parameters.get(name, False)
    if not isinstance(value, bool):
        raise InvalidInput(f"parameter {name!r} must be a boolean")
    return value


@dataclass(frozen=True, slots=True)
class SequenceStep:
    """One request of a sequence: its parameters and the client's inputs as the model takes
    them (one row when the model batches)."""

    sequence: SequenceParameters
    feed: Feed


class StepFeeds(Protocol):
    """How a model's steps are fed: the state a sequence starts with, the whole feed of a
    step, and a step's outputs split into the client's answer and the state carried on."""

    def initial_state(self) -> Feed: ...

    def feed(
        self, inputs: Feed, state: Feed, *, start: bool, end: bool, sequence: SequenceId
    ) -> Feed: ...

    def carry(self, outputs: Feed) -> tuple[Feed, Feed]:
        """(the answer, the next state)."""
        ...


class SequenceObserver(Protocol):
    """Receives sequence counts; metrics implement it."""

    def sequences_changed(self, live: int) -> None: ...

    def sequence_freed_idle(self) -> None: ...


@dataclass(eq=False, slots=True)
class _Step:
    inputs: Feed
    start: bool
    end: bool
    enqueued: float
    deadline: float | None
    future: asyncio.Future[Feed]


@dataclass(eq=False, slots=True)
class _Live:
    id: SequenceId
    instance: int
    slot: int
    state: Feed
    last_active: float
    steps: deque[_Step] = field(default_factory=deque)
    busy: bool = False
    ending: bool = False
    """Its end step has arrived: no step may follow it."""


class SequenceBatcher:
    """Runs sequence steps through `run_batch` (a list of feeds in, one output feed each out)."""

    def __init__(
        self,
        run_batch: Callable[[list[Feed]], Awaitable[Sequence[Feed]]],
        step_feeds: StepFeeds,
        *,
        name: str,
        strategy: Strategy,
        max_batch_size: int,
        instances: int,
        max_sequences: int,
        idle_s: float,
        max_queue_size: int,
        max_queue_delay_s: float = 0.0,
        observer: BatchObserver | None = None,
        sequence_observer: SequenceObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_batch_size < 1 or instances < 1 or max_sequences < 1 or max_queue_size < 1:
            raise ValueError("max_batch_size, instances, max_sequences, max_queue_size >= 1")
        if idle_s <= 0:
            raise ValueError("idle_s must be > 0")
        self._run_batch = run_batch
        self._step_feeds = step_feeds
        self.name = name
        self.strategy = strategy
        self.max_batch_size = max_batch_size
        self.instances = instances
        self.max_sequences = (
            min(max_sequences, instances * max_batch_size)
            if strategy == "direct"
            else max_sequences
        )
        self.idle_s = idle_s
        self.max_queue_size = max_queue_size
        self.max_queue_delay_s = max_queue_delay_s
        self._observer = observer
        self._sequence_observer = sequence_observer
        self._clock = clock
        self._live: dict[SequenceId, _Live] = {}
        self._ready: list[deque[_Live]] = [deque() for _ in range(instances)]
        self._queued = 0
        self._busy = 0
        self._closed = False
        self._wakeups: list[asyncio.Event] = []
        self._idle: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def live(self) -> int:
        return len(self._live)

    @property
    def dispatches_immediately(self) -> bool:
        """Steps always pass through the sequence's queue (the caller may need to leave it)."""
        return False

    # -- submit ----------------------------------------------------------------------------

    async def submit(
        self, item: SequenceStep, *, deadline: float | None = None, priority: int = 0
    ) -> Feed:
        """Queue one step and wait for its answer (a sequence's steps run in arrival order,
        so `priority`, a dynamic batcher's notion, does not apply, as in Triton). Raises `InvalidInput` for a step that does
        not fit the sequence's life (unknown, started twice, after its end), `Unavailable`
        past the live-sequence bound, `QueueFull`, `DeadlineExceeded`, `ShuttingDown`."""
        if self._closed:
            raise ShuttingDown("model is shutting down")
        self._ensure_started()
        now = self._clock()
        self.free_idle(now)
        parameters = item.sequence
        live = self._live.get(parameters.id)
        if parameters.start:
            if live is not None:
                raise InvalidInput(
                    f"sequence {parameters.id!r} of model {self.name!r} is already live: end "
                    "it (sequence_end) before starting it again"
                )
            live = self._begin(parameters.id, now)
        elif live is None:
            raise InvalidInput(
                f"sequence {parameters.id!r} of model {self.name!r} is not live: its first "
                "request must set sequence_start (a sequence idle for longer than "
                f"{self.idle_s:g} s is freed)"
            )
        elif live.ending:
            raise InvalidInput(
                f"sequence {parameters.id!r} of model {self.name!r} has ended "
                "(a request set sequence_end); start it again with sequence_start"
            )
        if self._queued >= self.max_queue_size:
            if parameters.start and not live.steps and not live.busy:
                self._forget(live)
            raise QueueFull(f"queue full ({self.max_queue_size} steps waiting); retry later")
        if deadline is not None and deadline <= now:
            raise DeadlineExceeded("deadline passed before the request was queued")
        future: asyncio.Future[Feed] = asyncio.get_running_loop().create_future()
        step = _Step(item.feed, parameters.start, parameters.end, now, deadline, future)
        live.steps.append(step)
        live.last_active = now
        live.ending = parameters.end
        self._queued += 1
        self._queue_changed()
        if not live.busy and len(live.steps) == 1:
            self._ready[live.instance].append(live)
            self._wakeups[live.instance].set()
        try:
            if deadline is None:
                return await future
            async with asyncio.timeout(max(deadline - self._clock(), 0.0)):
                return await future
        except TimeoutError:
            self._drop(live, step)
            raise DeadlineExceeded("deadline exceeded before the result was ready") from None
        except asyncio.CancelledError:
            self._drop(live, step)
            raise

    def _begin(self, sequence: SequenceId, now: float) -> _Live:
        if len(self._live) >= self.max_sequences:
            raise Unavailable(
                f"model {self.name!r} holds {len(self._live)} live sequences, its limit; "
                "end a sequence (sequence_end) or retry later"
            )
        counts = [0] * self.instances
        slots: list[set[int]] = [set() for _ in range(self.instances)]
        for other in self._live.values():
            counts[other.instance] += 1
            slots[other.instance].add(other.slot)
        instance = min(range(self.instances), key=lambda index: counts[index])
        slot = min(set(range(counts[instance] + 1)) - slots[instance])
        live = _Live(sequence, instance, slot, self._step_feeds.initial_state(), now)
        self._live[sequence] = live
        self._sequences_changed()
        return live

    def _drop(self, live: _Live, step: _Step) -> None:
        """The caller left: a queued step is removed (never computed); a running one's
        answer is discarded when it comes."""
        if step in live.steps:
            live.steps.remove(step)
            self._queued -= 1
            self._queue_changed()
            if step.end:
                live.ending = False
            if not live.steps and live in self._ready[live.instance]:
                self._ready[live.instance].remove(live)
        if not step.future.done():
            step.future.cancel()
        self._maybe_idle()

    def _maybe_idle(self) -> None:
        if self._idle is not None and self._queued == 0 and self._busy == 0:
            self._idle.set()

    def _forget(self, live: _Live) -> None:
        if self._live.get(live.id) is live:
            del self._live[live.id]
            self._sequences_changed()

    def free_idle(self, now: float | None = None) -> int:
        """Free the sequences idle for longer than `idle_s`; returns how many."""
        now = self._clock() if now is None else now
        idle = [
            live
            for live in self._live.values()
            if not live.steps and not live.busy and now - live.last_active > self.idle_s
        ]
        for live in idle:
            self._forget(live)
            if self._sequence_observer is not None:
                self._sequence_observer.sequence_freed_idle()
        return len(idle)

    # -- dispatch ----------------------------------------------------------------------------

    def _ensure_started(self) -> None:
        if self._tasks:
            return
        self._wakeups = [asyncio.Event() for _ in range(self.instances)]
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks = [
            asyncio.create_task(self._work(index), name=f"sequence-dispatcher-{index}")
            for index in range(self.instances)
        ]
        self._tasks.append(asyncio.create_task(self._reap(), name="sequence-reaper"))

    async def _reap(self) -> None:
        """Free idle sequences even when no request comes to notice them."""
        while True:
            await asyncio.sleep(self.idle_s / 2)
            self.free_idle()

    async def _work(self, instance: int) -> None:
        assert self._idle is not None
        wakeup = self._wakeups[instance]
        ready = self._ready[instance]
        while True:
            if not ready:
                wakeup.clear()
                if self._busy == 0 and self._queued == 0:
                    self._idle.set()
                await wakeup.wait()
                continue
            await self._wait_for_fuller_batch(ready, wakeup)
            batch = self._take(ready)
            if not batch:
                continue
            self._busy += 1
            self._idle.clear()
            try:
                await self._run(batch)
            finally:
                self._busy -= 1

    async def _wait_for_fuller_batch(self, ready: deque[_Live], wakeup: asyncio.Event) -> None:
        if self.max_queue_delay_s <= 0:
            return
        close_at = ready[0].steps[0].enqueued + self.max_queue_delay_s
        while len(ready) < self.max_batch_size and not self._closed:
            remaining = close_at - self._clock()
            if remaining <= 0:
                return
            wakeup.clear()
            try:
                async with asyncio.timeout(remaining):
                    await wakeup.wait()
            except TimeoutError:
                return
            if not ready:
                return

    def _take(self, ready: deque[_Live]) -> list[tuple[_Live, _Step]]:
        """Up to `max_batch_size` sequences' head steps whose states have one shape (a state
        of variable size is never padded); the rest stay ready, in order."""
        taken: list[tuple[_Live, _Step]] = []
        left: deque[_Live] = deque()
        shapes: tuple[tuple[int, ...], ...] | None = None
        now = self._clock()
        while ready:
            live = ready.popleft()
            if len(taken) == self.max_batch_size:
                left.append(live)
                continue
            key = tuple(array.shape for array in live.state.values())
            if shapes is not None and key != shapes:
                left.append(live)
                continue
            step = live.steps.popleft()
            self._queued -= 1
            if step.deadline is not None and step.deadline <= now:
                step.future.set_exception(
                    DeadlineExceeded("deadline exceeded while queued; not computed")
                )
                if step.end:
                    live.ending = False
                if live.steps:
                    left.append(live)
                continue
            shapes = key
            live.busy = True
            taken.append((live, step))
        ready.extend(left)
        self._queue_changed()
        if self.strategy == "direct":
            taken.sort(key=lambda pair: pair[0].slot)
        return taken

    async def _run(self, batch: list[tuple[_Live, _Step]]) -> None:
        started = self._clock()
        if self._observer is not None:
            self._observer.batch_started(len(batch), [started - step.enqueued for _, step in batch])
        failed = False
        try:
            feeds = [
                self._step_feeds.feed(
                    step.inputs, live.state, start=step.start, end=step.end, sequence=live.id
                )
                for live, step in batch
            ]
            results = await self._run_batch(feeds)
            if len(results) != len(batch):
                raise ValueError(f"{len(results)} results for {len(batch)} steps")
            carried = [self._step_feeds.carry(outputs) for outputs in results]
        except asyncio.CancelledError:
            for _, step in batch:
                if not step.future.done():
                    step.future.set_exception(ShuttingDown("step cancelled at shutdown"))
            raise
        except Exception as error:  # each step of the batch gets the error; states are kept
            failed = True
            for live, step in batch:
                if not step.future.done():
                    step.future.set_exception(error)
                self._finished(live, step)
        else:
            for (live, step), (answer, state) in zip(batch, carried, strict=True):
                live.state = state
                if not step.future.done():
                    step.future.set_result(answer)
                self._finished(live, step)
        finally:
            if self._observer is not None:
                self._observer.batch_finished(len(batch), self._clock() - started, failed)

    def _finished(self, live: _Live, step: _Step) -> None:
        live.busy = False
        live.last_active = self._clock()
        if step.end:
            self._forget(live)
            for left in live.steps:  # none can be queued after an end; kept for safety
                left.future.set_exception(InvalidInput("the sequence ended before this step"))
            return
        if live.steps:
            self._ready[live.instance].append(live)
            self._wakeups[live.instance].set()

    def _queue_changed(self) -> None:
        if self._observer is not None:
            self._observer.queue_changed(self._queued)

    def _sequences_changed(self) -> None:
        if self._sequence_observer is not None:
            self._sequence_observer.sequences_changed(len(self._live))

    # -- shutdown ----------------------------------------------------------------------------

    async def drain(self) -> None:
        """Stop accepting; wait until every queued or running step has been answered."""
        self._closed = True
        if not self._tasks:
            return
        assert self._idle is not None
        for wakeup in self._wakeups:
            wakeup.set()
        while self._queued or self._busy:
            self._idle.clear()
            await self._idle.wait()

    async def close(self) -> None:
        """Drain, then stop the dispatchers and drop every sequence."""
        await self.drain()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        self._live.clear()
        self._sequences_changed()

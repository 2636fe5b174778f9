"""One batch's way through the backend, timed the way Triton splits it, and the inline policy.

`BatchRunner` is the batch function the batcher calls: merge (input), the runtime call
(backend), the split back per request (output), and the hop between the event loop and the
compute thread (hand-off), each timed with `perf_counter` into a `BatchTiming`.

Tiny models spend far longer in the hop than in compute (iris: ~10 µs of ONNX Runtime against
~100 µs of hop on 2 shared cores), so `InlinePolicy` lets a batch run on the event loop when
its shape's recent backend times were all below a threshold. The event loop is therefore
blocked only by batches of a shape measured fast `clean_runs` times in a row; a batch of a
new shape, or right after one that ran at or over the threshold, goes to the thread.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Protocol

from service.backends.base import Backend, BatchTiming
from service.batcher import current_batch
from service.feeds import Feed, merge, split

ShapeKey = tuple[tuple[int, ...], ...]


class TimingObserver(Protocol):
    """Receives each computed batch's timing; metrics implement it."""

    def batch_timed(self, timing: BatchTiming) -> None: ...


def shape_key(feed: Feed) -> ShapeKey:
    """What a batch's cost depends on for shape-driven models: every input's shape."""
    return tuple(array.shape for array in feed.values())


class InlinePolicy:
    """Which batch shapes may run on the event loop, learned from measured backend times.

    A shape runs inline once its last `clean_runs` backend times were each below
    `threshold_s`; one time at or over it sends the shape back to the thread until it has been
    fast `clean_runs` times again. A threshold of 0 never inlines. At most `max_shapes` shapes
    are remembered (text models pad to many lengths); others always take the thread.
    """

    def __init__(self, threshold_s: float, *, clean_runs: int = 4, max_shapes: int = 1024) -> None:
        if threshold_s < 0:
            raise ValueError("threshold_s must be >= 0")
        if clean_runs < 1:
            raise ValueError("clean_runs must be >= 1")
        self.threshold_s = threshold_s
        self.clean_runs = clean_runs
        self.max_shapes = max_shapes
        self._clean: dict[ShapeKey, int] = {}

    def allows(self, key: ShapeKey) -> bool:
        return self.threshold_s > 0 and self._clean.get(key, 0) >= self.clean_runs

    def record(self, key: ShapeKey, backend_s: float) -> None:
        if self.threshold_s <= 0:
            return
        clean = self._clean.get(key)
        if clean is None and len(self._clean) >= self.max_shapes:
            return
        if backend_s < self.threshold_s:
            self._clean[key] = min((clean or 0) + 1, self.clean_runs)
        else:
            self._clean[key] = 0


class BatchRunner:
    """The batch function for one model version: merge, run (inline or on the thread), split."""

    def __init__(
        self,
        backend: Backend,
        *,
        inline: InlinePolicy | None = None,
        observer: TimingObserver | None = None,
        batched: bool = True,
    ) -> None:
        self.backend = backend
        self.batched = batched
        """False: the model has no batch dimension (Triton's `max_batch_size: 0`); each batch
        is one request, run as it came."""
        self.inline = inline or InlinePolicy(0.0)
        self._observer = observer

    def runs_at_once(self, feed: Feed) -> bool:
        """A batch of this one feed would run inline on the event loop, so `self([feed])`
        returns without suspending (the batcher then runs it in the caller's task)."""
        return self.backend.runs_inline and self.inline.allows(shape_key(feed))

    async def __call__(self, feeds: list[Feed]) -> Sequence[Feed]:
        started = time.perf_counter()
        batch, rows = merge(feeds) if self.batched else (feeds[0], [1])
        key = shape_key(batch)
        timing = BatchTiming(rows=sum(rows), requests=len(feeds))
        inline = self.inline.allows(key)
        timing.input_s = time.perf_counter() - started
        try:
            outputs = await self.backend.infer_timed(batch, timing, inline=inline)
        finally:
            # A failed call still teaches the policy how long it blocked.
            self.inline.record(key, timing.backend_s)
        splitting = time.perf_counter()
        results = split(outputs, rows) if self.batched else [outputs]
        timing.output_s += time.perf_counter() - splitting
        if self._observer is not None:
            self._observer.batch_timed(timing)
        facts = current_batch.get()
        if facts is not None:
            facts.backend_s = timing.backend_s
            facts.padded_elements = sum(a.size for a in batch.values()) - sum(
                a.size for feed in feeds for a in feed.values()
            )
        return results

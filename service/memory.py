"""Gives the memory a large request freed back to the system.

Two things kept it: after three refused 60 MB gRPC messages a gateway of 122 MB stayed at
~540 MB. First, reference cycles: a refused request is held by its error's traceback (frame ->
traceback -> frame), which only the cyclic collector frees, and `service.server.settle_gc`
made its collections rare (an idle server may not run one for minutes). Second, CPython hands
freed blocks back to the C allocator, and glibc's malloc keeps them; its `malloc_trim` returns
the free pages of every arena (the top of the heap by `sbrk`, the rest by
`madvise(MADV_DONTNEED)`).

Both cost a walk (milliseconds: the collector's over the objects not frozen at start-up, the
trim's over the heap), so they run only once `TRIM_AFTER_BYTES` of requests have been served
since the last run, `TRIM_DELAY_S` after the latest of them (a burst runs them once, when it
ends): the collection on the event loop, the trim in a thread while the loop keeps serving.
A request weighs its size plus `REQUEST_COST_BYTES` (a gRPC message's size counts when it is
parsed, its call's cost when the call ends), so one large request counts, and so does
a flood of small ones (a burst of 3,000 small gRPC calls left +69 MB resident, 1,000 streams
that never sent anything +17 MB).

On a C library without `malloc_trim` (musl, macOS) only the collection runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import gc
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

TRIM_AFTER_BYTES = 4 * 1024 * 1024
"""Requests weighing this much in all since the last trim schedule the next."""
REQUEST_COST_BYTES = 16 * 1024
"""What serving a request allocates besides its body (call, task, frames, headers, answer):
floods of small gRPC calls left ~20 KB per call resident. 256 calls of nothing schedule a
trim."""
TRIM_DELAY_S = 1.0
"""How long after the latest request the trim runs (by then the burst has usually been
answered and its memory freed)."""


def _malloc_trim() -> Callable[[], object] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


class AllocatorTrim:
    """`note(size)` for each request that ended (its body's size); trims once enough have."""

    def __init__(
        self,
        trim: Callable[[], object] | None = None,
        *,
        after_bytes: int = TRIM_AFTER_BYTES,
        request_cost: int = REQUEST_COST_BYTES,
        delay_s: float = TRIM_DELAY_S,
    ) -> None:
        self._trim = trim
        self._resolved = trim is not None
        self.after_bytes = after_bytes
        self.request_cost = request_cost
        self.delay_s = delay_s
        self.trims = 0
        self._weight = 0
        """What requests weighed since the last trim."""
        self._due = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def note(self, size: int = 0) -> None:
        """A request (or gRPC call) of `size` bytes ended, answered or refused (call on the
        event loop)."""
        self._add(size + self.request_cost)

    def note_bytes(self, size: int) -> None:
        """`size` bytes of a request whose end `note` counts (a gRPC message, when parsed)."""
        self._add(size)

    def _add(self, weight: int) -> None:
        self._weight += weight
        if self._weight < self.after_bytes:
            return
        if not self._resolved:
            self._trim, self._resolved = _malloc_trim(), True
        self._due = time.monotonic() + self.delay_s
        if self._timer is None:
            with contextlib.suppress(RuntimeError):  # no running loop: nothing to schedule on
                self._timer = asyncio.get_running_loop().call_later(self.delay_s, self._fire)

    def _fire(self) -> None:
        loop = asyncio.get_running_loop()
        wait = self._due - time.monotonic()
        if wait > 0:  # a later request moved the trim
            self._timer = loop.call_later(wait, self._fire)
            return
        self._timer = None
        self._weight = 0
        gc.collect()
        trim = self._trim
        if trim is not None:
            self.trims += 1
            loop.run_in_executor(None, trim)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

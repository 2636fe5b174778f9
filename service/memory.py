"""Gives the memory a large request freed back to the system.

Two things kept it: after three refused 60 MB gRPC messages a gateway of 122 MB stayed at
~540 MB. First, reference cycles: a refused request is held by its error's traceback (frame ->
traceback -> frame), which only the cyclic collector frees, and `service.server.settle_gc`
made its collections rare (an idle server may not run one for minutes). Second, CPython hands
freed blocks back to the C allocator, and glibc's malloc keeps them; its `malloc_trim` returns
the free pages of every arena (the top of the heap by `sbrk`, the rest by
`madvise(MADV_DONTNEED)`).

Both cost a walk (milliseconds: the collector's over the objects not frozen at start-up, the
trim's over the heap), so they run only once requests of at least `LARGE_REQUEST_BYTES` have
been seen, `TRIM_DELAY_S` after the latest of them arrived (a burst runs them once): the
collection on the event loop, the trim in a thread while the loop keeps serving.

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

LARGE_REQUEST_BYTES = 4 * 1024 * 1024
"""A request body or message of at least this size schedules a trim."""
TRIM_DELAY_S = 1.0
"""How long after the latest large request the trim runs (by then it has usually been
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
    """`note(size)` for each request's size; trims once large ones have passed."""

    def __init__(
        self,
        trim: Callable[[], object] | None = None,
        *,
        large_bytes: int = LARGE_REQUEST_BYTES,
        delay_s: float = TRIM_DELAY_S,
    ) -> None:
        self._trim = trim
        self._resolved = trim is not None
        self.large_bytes = large_bytes
        self.delay_s = delay_s
        self.trims = 0
        self._due = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def note(self, size: int) -> None:
        """A request of `size` bytes arrived (call on the event loop)."""
        if size < self.large_bytes:
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
        if wait > 0:  # a later large request moved the trim
            self._timer = loop.call_later(wait, self._fire)
            return
        self._timer = None
        gc.collect()
        trim = self._trim
        if trim is not None:
            self.trims += 1
            loop.run_in_executor(None, trim)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

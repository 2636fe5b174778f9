"""The backend interface the data plane and batcher rely on."""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from service.feeds import Feed
from service.manifest import Signature


@dataclass(slots=True)
class BatchTiming:
    """Where one batch's time went (seconds); backends fill in their parts."""

    input_s: float = 0.0
    """Merge, pad, and conversion to the runtime's input type."""
    backend_s: float = 0.0
    """The runtime call alone (e.g. ONNX Runtime's `session.run`)."""
    output_s: float = 0.0
    """Conversion of the runtime's outputs and the split back per request."""
    handoff_s: float = 0.0
    """Event loop -> compute thread until it starts, plus thread done -> loop resumed."""
    inline: bool = False
    """The batch ran on the event loop thread (no hand-off)."""
    rows: int = 0
    requests: int = 1
    """The client requests merged into the batch."""

    @property
    def total_s(self) -> float:
        return self.input_s + self.backend_s + self.output_s + self.handoff_s


class Backend(ABC):
    """Computes one merged batch. Local backends run in threads; remote ones are async."""

    name: str

    def __init__(self, signature: Signature) -> None:
        self.signature = signature

    @property
    def description(self) -> str:
        """One line for the logs and model metadata (e.g. which execution provider is in use)."""
        return self.name

    @abstractmethod
    async def load(self) -> None:
        """Load the model; raise on a corrupt or unusable artifact."""

    @abstractmethod
    async def infer(self, feed: Feed) -> Feed:
        """Compute outputs (name -> array, batch first) for a merged batch."""

    runs_inline: bool = False
    """`infer_timed(..., inline=True)` computes on the event loop and returns without
    suspending (local backends); a remote backend always awaits its answer."""

    async def infer_timed(self, feed: Feed, timing: BatchTiming, *, inline: bool = False) -> Feed:
        """`infer`, filling in `timing`. A remote backend's whole call is its backend time;
        `inline` (run on the event loop) only applies to backends that `runs_inline`."""
        started = time.perf_counter()
        try:
            return await self.infer(feed)
        finally:
            timing.backend_s = time.perf_counter() - started

    async def healthy(self) -> bool:
        """False when a remote backend cannot currently serve."""
        return True

    async def close(self) -> None:
        """Release resources."""


class LocalBackend(Backend):
    """An in-process runtime: `run` blocks, so it runs on a thread per instance."""

    runs_inline = True

    def __init__(self, signature: Signature, instances: int) -> None:
        super().__init__(signature)
        self._executor = ThreadPoolExecutor(
            max_workers=instances, thread_name_prefix=f"{signature.name}-v{signature.version}"
        )

    @abstractmethod
    def load_sync(self) -> None: ...

    @abstractmethod
    def run(self, feed: Feed) -> Feed: ...

    async def load(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self.load_sync)

    def run_timed(self, feed: Feed, timing: BatchTiming) -> Feed:
        """`run`, timed as backend time. Backends that convert to and from the runtime's own
        types (torch tensors) override it to book those conversions as input and output."""
        started = time.perf_counter()
        try:
            return self.run(feed)
        finally:
            timing.backend_s = time.perf_counter() - started

    async def infer(self, feed: Feed) -> Feed:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.run, feed)

    async def infer_timed(self, feed: Feed, timing: BatchTiming, *, inline: bool = False) -> Feed:
        if inline:
            timing.inline = True
            return self.run_timed(feed, timing)
        submitted = time.perf_counter()
        outputs, finished = await asyncio.get_running_loop().run_in_executor(
            self._executor, self._run_on_thread, feed, timing, submitted
        )
        timing.handoff_s += time.perf_counter() - finished
        return outputs

    def _run_on_thread(
        self, feed: Feed, timing: BatchTiming, submitted: float
    ) -> tuple[Feed, float]:
        timing.handoff_s = time.perf_counter() - submitted
        return self.run_timed(feed, timing), time.perf_counter()

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

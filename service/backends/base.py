"""The backend interface the data plane and batcher rely on."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor

from service.feeds import Feed
from service.manifest import Manifest


class Backend(ABC):
    """Computes one merged batch. Local backends run in threads; remote ones are async."""

    name: str

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest

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

    async def healthy(self) -> bool:
        """False when a remote backend cannot currently serve."""
        return True

    async def close(self) -> None:
        """Release resources."""


class LocalBackend(Backend):
    """An in-process runtime: `run` blocks, so it runs on a thread per instance."""

    def __init__(self, manifest: Manifest, instances: int) -> None:
        super().__init__(manifest)
        self._executor = ThreadPoolExecutor(
            max_workers=instances, thread_name_prefix=f"{manifest.name}-v{manifest.version}"
        )

    @abstractmethod
    def load_sync(self) -> None: ...

    @abstractmethod
    def run(self, feed: Feed) -> Feed: ...

    async def load(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self.load_sync)

    async def infer(self, feed: Feed) -> Feed:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.run, feed)

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

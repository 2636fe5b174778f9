"""The data plane: model lookup, readiness, deadlines, timing and metrics — no HTTP here."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

import numpy as np

from service.errors import InvalidInput, ShuttingDown
from service.feeds import Feed
from service.metrics import GatewayMetrics
from service.repository import ModelRepository, ModelVersion
from service.settings import Settings


class DataPlane:
    def __init__(
        self, settings: Settings, repository: ModelRepository, metrics: GatewayMetrics
    ) -> None:
        self.settings = settings
        self.repository = repository
        self.metrics = metrics
        self.draining = False
        self.started = False
        self._active = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def ready(self) -> bool:
        return self.started and not self.draining

    @property
    def active_requests(self) -> int:
        return self._active

    def model(self, name: str, version: str | None = None) -> ModelVersion:
        if self.draining:
            raise ShuttingDown("server is shutting down")
        return self.repository.ready(name, version)

    def deadline(self, timeout_ms: float | None) -> float | None:
        """Absolute deadline (monotonic clock) from the request's and the server's timeouts."""
        limits = [t for t in (timeout_ms, self.settings.default_timeout_ms) if t is not None]
        if not limits:
            return None
        return time.monotonic() + min(limits) / 1000.0

    def begin(self) -> None:
        self._active += 1
        self._idle.clear()

    def end(self) -> None:
        self._active -= 1
        if self._active == 0:
            self._idle.set()

    async def infer(
        self, model: ModelVersion, feed: Feed, *, deadline: float | None = None
    ) -> Mapping[str, np.ndarray]:
        """Queue `feed` on the model's batcher and return its outputs."""
        assert model.batcher is not None
        inflight = model.inflight_gauge
        inflight.inc()
        try:
            return await model.batcher.submit(feed, deadline=deadline)
        finally:
            inflight.dec()

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no inference request is being handled; False on timeout."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True


def timeout_from_header(value: str | None) -> float | None:
    """`X-Request-Timeout-Ms` header -> milliseconds."""
    if value is None:
        return None
    try:
        timeout = float(value)
    except ValueError:
        raise InvalidInput("X-Request-Timeout-Ms must be a number of milliseconds") from None
    if not timeout > 0:
        raise InvalidInput("X-Request-Timeout-Ms must be positive")
    return timeout

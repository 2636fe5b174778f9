"""Runs the gateway under uvicorn with a graceful drain on SIGTERM/SIGINT.

On the first signal readiness turns 503 at once and new inference requests get 503, while
queued and in-flight ones finish (up to `drain_seconds`); then uvicorn stops. A second
signal stops at once.
"""

from __future__ import annotations

import asyncio
import logging
from types import FrameType

import uvicorn
from fastapi import FastAPI

from service.app import create_app, drain
from service.dataplane import DataPlane
from service.settings import Settings

log = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, plane: DataPlane, drain_seconds: float) -> None:
        super().__init__(config)
        self.plane = plane
        self.drain_seconds = drain_seconds
        self._drain_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[object] | None = None) -> None:  # type: ignore[override]
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)  # type: ignore[arg-type]

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._drain_task is not None or self._loop is None:
            super().handle_exit(sig, frame)
            return
        # Runs in the main thread between bytecodes: flip readiness now, drain on the loop.
        self.plane.draining = True
        log.info("signal %d: draining for up to %.1f s", sig, self.drain_seconds)
        self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        if self._drain_task is None:
            self._drain_task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        drained = await drain(self.plane, self.drain_seconds)
        log.info("drain %s; stopping", "complete" if drained else "timed out")
        self.should_exit = True


def run(settings: Settings) -> None:
    app: FastAPI = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        # Client addresses are never used (no access log), so skip rewriting them per request.
        proxy_headers=False,
        log_config=None,
        timeout_graceful_shutdown=max(1, int(settings.drain_seconds)),
        timeout_keep_alive=30,
    )
    DrainingServer(config, app.state.dataplane, settings.drain_seconds).run()

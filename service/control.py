"""Who applies repository API calls: this process alone, or every worker of a supervisor.

The routes and the gRPC servicer call `DataPlane.control`, never the repository's load/unload
directly. With one process that is `LocalControl`. Under `GATEWAY_WORKERS=N` (`service.supervisor`)
it is `SharedControl`: the call goes to the supervisor over this worker's control socket, the
supervisor sends it to every worker in turn-taking order (one call at a time, so all workers
see the same sequence), and the caller is answered once every live worker has applied it, with
the outcome of its own worker. A worker started later (a crashed one's replacement) is told
which models were unloaded and does not load them.

Wire format: one JSON object per line. Worker to supervisor: `request` (id, op, model),
`applied` (id), `ready`, `beat` (the worker's event loop runs: sent every
`worker_heartbeat_s`). Supervisor to worker: `apply` (id, op, model, request: the id of this
worker's own request or null), `done` (request), `degraded` (reason, or null once every worker
is up again: while set, this worker's readiness is 503 with it).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import signal
import socket
from collections.abc import Collection
from typing import TYPE_CHECKING, Any, Literal, Protocol

from service.errors import ShuttingDown

if TYPE_CHECKING:
    from service.repository import ModelRepository, ModelVersion

log = logging.getLogger(__name__)

Op = Literal["load", "unload"]


class RepositoryControl(Protocol):
    degraded: str | None
    """Why the gateway as a whole cannot be ready although this process could (another
    worker hung and is being replaced); None when nothing is wrong."""

    async def start(self) -> None:
        """Load the models the gateway starts with."""

    async def load(self, name: str) -> list[ModelVersion]:
        """`ModelRepository.load`, applied wherever this gateway serves."""

    async def unload(self, name: str) -> None:
        """`ModelRepository.unload`, applied wherever this gateway serves."""

    async def close(self) -> None:
        """Stop taking calls (the repository itself is closed by its owner)."""


class LocalControl:
    """One process: calls go straight to its repository."""

    def __init__(self, repository: ModelRepository) -> None:
        self.repository = repository
        self.degraded: str | None = None

    async def start(self) -> None:
        await self.repository.load_all()

    async def load(self, name: str) -> list[ModelVersion]:
        return await self.repository.load(name)

    async def unload(self, name: str) -> None:
        await self.repository.unload(name)

    async def close(self) -> None:
        return None


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


Outcome = tuple["list[ModelVersion] | None", "BaseException | None"]


class SharedControl:
    """A worker's side of the supervisor's control socket (see the module docstring).

    Calls are applied only after the startup load, so a call that arrives during it is applied
    on top of what loaded. When the socket closes (the supervisor is gone) the worker drains
    itself with SIGTERM, so no worker outlives its supervisor.
    """

    def __init__(
        self,
        repository: ModelRepository,
        connection: socket.socket,
        unloaded: Collection[str],
        heartbeat_s: float = 1.0,
    ) -> None:
        self.repository = repository
        self.unloaded = frozenset(unloaded)
        self.heartbeat_s = heartbeat_s
        self.degraded: str | None = None
        self._beating: asyncio.Task[None] | None = None
        self._connection = connection
        self._writer: asyncio.StreamWriter | None = None
        self._connected = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._next_id = 0
        self._pending: dict[int, asyncio.Future[Outcome]] = {}
        self._outcomes: dict[int, Outcome] = {}

    async def start(self) -> None:
        reader, self._writer = await asyncio.open_connection(sock=self._connection)
        self._connected.set()
        self._beating = asyncio.create_task(self._beat(), name="heartbeat")
        try:
            await self.repository.load_all(skip=self.unloaded)
        finally:
            self._reader = asyncio.create_task(self._read(reader), name="control")
        self._send({"type": "ready"})

    async def load(self, name: str) -> list[ModelVersion]:
        models = await self._request("load", name)
        assert models is not None
        return models

    async def unload(self, name: str) -> None:
        await self._request("unload", name)

    async def close(self) -> None:
        for task in (self._reader, self._beating):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self._writer is not None:
            self._writer.close()

    async def _request(self, op: Op, name: str) -> list[ModelVersion] | None:
        await self._connected.wait()
        self._next_id += 1
        request = self._next_id
        answer: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._pending[request] = answer
        self._send({"type": "request", "id": request, "op": op, "model": name})
        try:
            models, error = await answer
        finally:
            self._pending.pop(request, None)
        if error is not None:
            raise error
        return models

    async def _beat(self) -> None:
        """Tell the supervisor this event loop runs; a worker that stops beating (stopped,
        or its loop blocked) is killed and replaced by the supervisor."""
        while True:
            self._send({"type": "beat"})
            await asyncio.sleep(self.heartbeat_s)

    def _send(self, message: dict[str, Any]) -> None:
        assert self._writer is not None
        if not self._writer.is_closing():
            self._writer.write(encode(message))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while line := await reader.readline():
            message = json.loads(line)
            if message["type"] == "apply":
                outcome = await self._apply(message["op"], message["model"])
                if message["request"] is not None:
                    self._outcomes[message["request"]] = outcome
                self._send({"type": "applied", "id": message["id"]})
            elif message["type"] == "degraded":
                self.degraded = message["reason"]
            elif message["type"] == "done":
                outcome = self._outcomes.pop(message["request"])
                answer = self._pending.get(message["request"])
                if answer is not None and not answer.done():
                    answer.set_result(outcome)
        gone = ShuttingDown("the worker's supervisor is gone")
        for answer in self._pending.values():
            if not answer.done():
                answer.set_exception(gone)
        log.warning("control socket closed (supervisor gone): draining")
        os.kill(os.getpid(), signal.SIGTERM)

    async def _apply(self, op: Op, name: str) -> Outcome:
        try:
            if op == "load":
                # The versions as this load left them, copied now: the caller reads them only
                # once every worker has applied the call, and by then this worker may already
                # be applying the next call (an unload turns the same versions UNLOADING).
                loaded = await self.repository.load(name)
                return [dataclasses.replace(version) for version in loaded], None
            await self.repository.unload(name)
            return None, None
        except Exception as error:
            log.info("repository %s %r: %s", op, name, error)
            return None, error

"""`GATEWAY_WORKERS=N`: N serving processes on the same ports, under one supervisor.

Each worker is the whole single-process gateway (`service.server.run`: HTTP and gRPC in one
event loop, its own copy of every model on CPU) with its own listening sockets in the ports'
SO_REUSEPORT group (`service.ports`). Why SO_REUSEPORT rather than one socket the supervisor
binds and passes down (uvicorn's and gunicorn's way): gRPC's Python server cannot take a
socket, only an address, so it has to be SO_REUSEPORT for gRPC anyway; and with a backlog per
worker, each worker's drain accepts and answers everything queued for it before it closes
(with a shared socket the backlog is closed only by the last holder, which answers nothing).
The cost: connections queued on a worker that is killed are reset, and the kernel spreads
connections by their addresses, so a handful of long-lived connections may share one worker.

The supervisor
- creates a private `PROMETHEUS_MULTIPROC_DIR` before the first worker starts, so every
  worker's metrics are files there and a scrape of any worker sums them (`GatewayMetrics`);
  it marks each exited worker dead there (its live gauges go, its counters stay);
- spawns the workers (`multiprocessing` spawn: nothing inherited from a forked runtime) and
  replaces one that exits, at once after a worker that had become ready, else with a backoff
  doubling up to a ceiling (`service.restarts`, shared with the handler pools);
- applies repository API calls on every worker, one call at a time (`service.control`);
- kills (SIGKILL) a ready worker that sent no heartbeat for `worker_hang_timeout_s` (stopped,
  or its event loop blocked: it would keep its share of the port and answer nothing), logs it
  and replaces it like a crashed one;
- keeps readiness whole: while any worker is not ready (starting, at start-up too, or
  replacing one), the others answer readiness 503 with the reason, since the kernel hands the
  one not ready its share of new connections;
- on SIGTERM or SIGINT sends SIGTERM to every worker (each drains as a single gateway does),
  waits for all of them and exits 0 when each exited cleanly, else 1. A second signal is
  forwarded too, and stops the workers at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from functools import partial
from multiprocessing.process import BaseProcess
from typing import Any

from service.control import encode
from service.logs import configure
from service.metrics import MULTIPROCESS_DIR_ENV
from service.ports import bound_port, reserve
from service.restarts import RESTARTS
from service.settings import Settings

log = logging.getLogger(__name__)

CLEAN_EXITS = (0, -signal.SIGTERM)
"""A worker signalled before it installed its handlers (still importing) ends by SIGTERM."""


def serve_worker(settings: Settings, connection: socket.socket, unloaded: list[str]) -> None:
    """A worker process's main."""
    # Its own process group: a terminal's Ctrl-C reaches only the supervisor, which forwards a
    # single SIGTERM (two signals would stop the worker without its drain).
    os.setpgid(0, 0)
    configure(settings.log_level)
    from service.control import SharedControl
    from service.server import run

    control = partial(
        SharedControl,
        connection=connection,
        unloaded=unloaded,
        heartbeat_s=settings.worker_heartbeat_s,
    )
    run(settings, control=control)


@dataclass(eq=False)
class Worker:
    slot: int
    process: BaseProcess
    writer: asyncio.StreamWriter
    acks: dict[int, asyncio.Future[None]] = field(default_factory=dict)
    """Repository calls sent to this worker and not yet applied, by call id."""
    ready: bool = False
    last_beat: float = field(default_factory=time.monotonic)
    """When its latest heartbeat arrived (`time.monotonic`)."""
    killed: bool = False
    """Killed for missing heartbeats (its exit is then expected)."""

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    def send(self, message: dict[str, Any]) -> None:
        if not self.writer.is_closing():
            self.writer.write(encode(message))


class Supervisor:
    def __init__(self, settings: Settings, metrics_dir: str) -> None:
        self.settings = settings
        self.metrics_dir = metrics_dir
        self.workers: dict[int, Worker] = {}
        """Live workers by slot (0 .. workers-1)."""
        self.unloaded: set[str] = set()
        """Models unloaded through the repository API: a new worker does not load them."""
        self.hung: set[int] = set()
        """Slots whose worker was killed for missing heartbeats and is not ready again."""
        self.stopping = False
        self.clean = True
        self._failures = [0] * settings.workers
        self._lock = asyncio.Lock()
        """Held while a worker starts or a repository call is applied: one at a time."""
        self._calls = 0
        self._spawning = 0
        self._stopped = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._context = multiprocessing.get_context("spawn")

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._signal, sig)
        async with self._lock:
            for slot in range(self.settings.workers):
                await self._spawn(slot)
        self._background(self._watch_heartbeats())
        await self._stopped.wait()
        return 0 if self.clean else 1

    # -- workers -------------------------------------------------------------------------------

    async def _spawn(self, slot: int) -> None:
        """Start the worker of `slot` (with the lock held, so it sees every call so far)."""
        self._spawning += 1
        try:
            ours, theirs = socket.socketpair()
            process = self._context.Process(
                target=serve_worker,
                args=(self.settings, theirs, sorted(self.unloaded)),
                name=f"gateway-worker-{slot}",
            )
            process.start()
            theirs.close()
            reader, writer = await asyncio.open_connection(sock=ours)
            worker = Worker(slot, process, writer)
            self.workers[slot] = worker
            asyncio.get_running_loop().add_reader(process.sentinel, self._exited, worker)
            self._background(self._read(worker, reader))
            log.info("worker %d started", slot, extra={"pid": worker.pid})
            self._tell_degraded()
            if self.stopping:
                os.kill(worker.pid, signal.SIGTERM)
        finally:
            self._spawning -= 1

    def _exited(self, worker: Worker) -> None:
        asyncio.get_running_loop().remove_reader(worker.process.sentinel)
        worker.process.join()
        code = worker.process.exitcode
        if self.workers.get(worker.slot) is worker:
            del self.workers[worker.slot]
        worker.writer.close()
        for ack in worker.acks.values():
            if not ack.done():
                ack.set_result(None)
        from prometheus_client.multiprocess import mark_process_dead

        mark_process_dead(worker.pid, self.metrics_dir)  # type: ignore[no-untyped-call]
        if self.stopping:
            self.clean = self.clean and code in CLEAN_EXITS
            log.info("worker %d exited (%s)", worker.slot, code, extra={"pid": worker.pid})
            self._check_stopped()
            return
        if not worker.ready:
            self._failures[worker.slot] += 1
        failures = self._failures[worker.slot]
        delay = RESTARTS.delay(failures)
        log.error(
            "worker %d exited (%s); replacing it in %.1f s",
            worker.slot,
            code,
            delay,
            extra={"pid": worker.pid},
        )
        self._background(self._replace(worker.slot, delay))

    async def _replace(self, slot: int, delay: float) -> None:
        await asyncio.sleep(delay)
        async with self._lock:
            if not self.stopping:
                await self._spawn(slot)

    async def _watch_heartbeats(self) -> None:
        settings = self.settings
        while not self.stopping:
            await asyncio.sleep(settings.worker_heartbeat_s)
            now = time.monotonic()
            for worker in list(self.workers.values()):
                silent = now - worker.last_beat
                hung = worker.ready and not worker.killed and not self.stopping
                if hung and silent > settings.worker_hang_timeout_s:
                    self._kill_hung(worker, silent)

    def _kill_hung(self, worker: Worker, silent_s: float) -> None:
        log.error(
            "worker %d sent no heartbeat for %.1f s (GATEWAY_WORKER_HANG_TIMEOUT_S %g): "
            "killing it (SIGKILL) and starting a new one",
            worker.slot,
            silent_s,
            self.settings.worker_hang_timeout_s,
            extra={"pid": worker.pid},
        )
        worker.killed = True  # judged once; `_exited` replaces it (at once: it had been ready)
        self.hung.add(worker.slot)
        self._tell_degraded()
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.pid, signal.SIGKILL)

    def _tell_degraded(self) -> None:
        """Tell every worker whether the gateway is whole. While a slot's worker is not ready
        (starting, replacing one that exited, or one that hung) the others answer readiness
        503 with why: with SO_REUSEPORT the kernel hands it its share of new connections,
        where a model it has not loaded yet is answered 503."""
        loading = sorted(
            slot for slot, w in self.workers.items() if not w.ready and slot not in self.hung
        )
        reasons = []
        if self.hung:
            reasons.append(
                f"worker(s) {sorted(self.hung)} stopped answering and are being replaced"
            )
        if loading:
            reasons.append(f"worker(s) {loading} still loading models")
        reason = "; ".join(reasons) or None
        for worker in self.workers.values():
            worker.send({"type": "degraded", "reason": reason})

    def _signal(self, sig: int) -> None:
        again = self.stopping
        self.stopping = True
        log.info(
            "signal %d: %s %d workers",
            sig,
            "stopping" if again else "draining",
            len(self.workers),
        )
        for worker in self.workers.values():
            os.kill(worker.pid, signal.SIGTERM)
        self._check_stopped()

    def _check_stopped(self) -> None:
        if self.stopping and not self.workers and not self._spawning:
            self._stopped.set()

    # -- repository calls ----------------------------------------------------------------------

    async def _read(self, worker: Worker, reader: asyncio.StreamReader) -> None:
        while line := await reader.readline():
            message = json.loads(line)
            kind = message["type"]
            if kind == "request" and message["op"] in ("load", "unload"):
                call = self._apply_everywhere(
                    worker, message["id"], message["op"], message["model"]
                )
                self._background(call)
            elif kind == "applied":
                ack = worker.acks.pop(message["id"], None)
                if ack is not None and not ack.done():
                    ack.set_result(None)
            elif kind == "beat":
                worker.last_beat = time.monotonic()
            elif kind == "ready":
                worker.ready = True
                worker.last_beat = time.monotonic()
                self._failures[worker.slot] = 0
                log.info("worker %d ready", worker.slot, extra={"pid": worker.pid})
                self.hung.discard(worker.slot)
                self._tell_degraded()  # whole again, or a new worker learns what is not

    async def _apply_everywhere(self, origin: Worker, request: int, op: str, model: str) -> None:
        """Apply one call on every live worker, then answer the worker that received it."""
        async with self._lock:
            self._calls += 1
            call = self._calls
            if op == "unload":
                self.unloaded.add(model)
            else:
                self.unloaded.discard(model)
            acks = []
            for worker in self.workers.values():
                ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                worker.acks[call] = ack
                acks.append(ack)
                mine = request if worker is origin else None
                worker.send(
                    {"type": "apply", "id": call, "op": op, "model": model, "request": mine}
                )
            await asyncio.gather(*acks)
        if self.workers.get(origin.slot) is origin:
            origin.send({"type": "done", "request": request})

    def _background(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def supervise(settings: Settings) -> int:
    """Run `settings.workers` workers until a signal; the exit status."""
    metrics_dir = tempfile.mkdtemp(prefix="gateway-metrics-")
    # Before any worker starts: prometheus-client reads it once, on import.
    os.environ[MULTIPROCESS_DIR_ENV] = metrics_dir
    held: list[socket.socket] = []
    try:
        try:
            held.append(reserve(settings.host, settings.port))
            ports = {"port": bound_port(held[0])}
            if settings.grpc_enabled:
                held.append(reserve(settings.host, settings.grpc_port))
                ports["grpc_port"] = bound_port(held[1])
        except OSError as error:
            log.error("cannot bind the gateway's ports on %s: %s", settings.host, error)
            return 1
        log.info(
            "supervising %d workers",
            settings.workers,
            extra={"host": settings.host, **ports, "metrics_dir": metrics_dir},
        )
        return asyncio.run(Supervisor(settings.model_copy(update=ports), metrics_dir).run())
    finally:
        for sock in held:
            sock.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)

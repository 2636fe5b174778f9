"""Worker processes running TorchServe's own Python side, and the pool that supervises them.

A `HandlerProcess` is one `ts/model_service_worker.py` process, started exactly as TorchServe's
front end starts it (a Unix socket, the extracted archive first on `PYTHONPATH`), then told to
load the archive's handler. It computes one batch at a time. The `HandlerPool` keeps
`workers` of them per model version, hands each batch to a free one, and replaces a worker that
dies or overruns `responseTimeout`: that batch gets 503 or 504, and the model is not ready
while no worker is up.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import re
import tempfile
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.codecs.torchserve import error_body
from service.errors import BackendError, DeadlineExceeded, ModelNotReady
from service.native.frames import (
    HandlerRequest,
    HandlerResponse,
    WorkerReply,
    encode_load,
    encode_predict,
    read_reply,
)
from service.native.processes import WorkerProcess
from service.native.worker_main import STACK_SIGNAL
from service.restarts import RESTARTS

log = logging.getLogger(__name__)

MB = 1024 * 1024
LOG_TAIL_LINES = 40
LOG_TAIL_BYTES = 16_384
STACK_WAIT_S = 1.0
"""How long a worker that overran its start has to write its stack before it is killed."""
STACK_POLL_S = 0.02
_FRAME = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+) in (?P<function>\S+)', re.M)


class WorkerDied(BackendError):
    """The worker process exited while computing a batch; it is being replaced."""

    status_code = 503
    grpc_status = "UNAVAILABLE"


class WorkerTimedOut(DeadlineExceeded):
    """The handler overran `responseTimeout`; its worker is being replaced."""


def _ts_file(*parts: str) -> Path:
    """A file of the installed `ts` package, found without importing it (nor torch)."""
    spec = importlib.util.find_spec("ts")
    if spec is None or spec.origin is None:
        raise BackendError(
            "the torchserve-native backend needs TorchServe (pip install torchserve)"
        )
    return Path(spec.origin).parent.joinpath(*parts)


@dataclass(frozen=True, slots=True)
class HandlerSpec:
    """What every worker of one model version is started with."""

    model_name: str
    model_dir: Path
    handler: str
    batch_size: int
    response_timeout_s: float
    start_timeout_s: float = 60.0
    """Start and load the handler within this long (startupTimeout, else the setting)."""
    envelope: str = ""
    threads: int | None = 1
    """OMP_NUM_THREADS for the worker (None: inherit)."""
    max_rss_bytes: int | None = None
    """Recycle a worker whose resident memory is above this after a batch (None: never)."""


class HandlerProcess:
    """One worker process and the socket to it."""

    def __init__(self, spec: HandlerSpec, index: int, gpu_id: int | None) -> None:
        self.spec = spec
        self.index = index
        self.gpu_id = gpu_id
        self.process: WorkerProcess | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._log_file: Path | None = None
        self._scratch: tempfile.TemporaryDirectory[str] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def rss_bytes(self) -> int | None:
        """Resident memory now, from `/proc` (None when it cannot be read)."""
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return None
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return None

    def log_tail(self) -> str:
        """The last lines the worker logged (kept in its scratch directory)."""
        if self._log_file is None or not self._log_file.is_file():
            return ""
        with self._log_file.open("rb") as log_file:
            log_file.seek(max(0, log_file.seek(0, 2) - LOG_TAIL_BYTES))
            text = log_file.read().decode("utf-8", "replace")
        return "\n".join(text.splitlines()[-LOG_TAIL_LINES:])

    async def start(self) -> None:
        """Start the process, connect, load the handler; raises `BackendError` on failure."""
        spec = self.spec
        self._scratch = tempfile.TemporaryDirectory(prefix=f"ts-{spec.model_name}-")
        scratch = Path(self._scratch.name)
        socket_path = scratch / f"sock.{9000 + self.index}"
        self._log_file = scratch / "worker.log"
        self.process = await WorkerProcess.start(
            name=f"{spec.model_name}-worker-{self.index}",
            socket_name=socket_path,
            metrics_config=_ts_file("configs", "metrics.yaml"),
            model_dir=spec.model_dir,
            scratch=scratch,
            log_file=self._log_file,
            threads=spec.threads,
        )
        loading = False
        try:
            async with asyncio.timeout(spec.start_timeout_s):
                self._reader, self._writer = await self._connect(socket_path)
                self._writer.write(
                    encode_load(
                        model_name=spec.model_name,
                        model_path=str(spec.model_dir),
                        batch_size=spec.batch_size,
                        handler=spec.handler,
                        gpu_id=self.gpu_id,
                        envelope=spec.envelope,
                    )
                )
                await self._writer.drain()
                loading = True
                reply = await read_reply(self._reader)
        except TimeoutError:
            stack = await self._stack() if loading else ""
            await self.stop(clean=False)
            raise BackendError(self._start_overrun(loading, stack)) from None
        except (OSError, asyncio.IncompleteReadError) as error:
            await self.stop(clean=False)
            message = f"worker for {spec.model_name} did not start ({type(error).__name__})"
            raise BackendError(f"{message}:\n{self.last_words()}") from None
        if reply.code != 200:
            await self.stop(clean=False)
            message = f"handler of {spec.model_name} failed to load: {reply.code} {reply.message}"
            raise BackendError(f"{message}\n{self.last_words()}")
        log.info(
            "%s worker %d ready (pid %s%s)",
            spec.model_name,
            self.index,
            self.pid,
            "" if self.gpu_id is None else f", gpu {self.gpu_id}",
        )

    async def _stack(self) -> str:
        """The worker's Python stack now (it writes it to its log on `STACK_SIGNAL`)."""
        pid = self.pid
        if pid is None or not self.alive:
            return ""
        marker = "most recent call first"
        before = self.log_tail().count(marker)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, STACK_SIGNAL)
        # Another process writes it: nothing to await but the file.
        for _ in range(int(STACK_WAIT_S / STACK_POLL_S)):
            if self.log_tail().count(marker) > before:
                break
            await asyncio.sleep(STACK_POLL_S)
        tail = self.log_tail()
        if tail.count(marker) <= before:
            return ""
        return tail[tail.rfind("\n", 0, tail.rfind(marker)) + 1 :]

    def _start_overrun(self, loading: bool, stack: str) -> str:
        """Why a worker did not start in time: where its handler hung, from its stack."""
        spec = self.spec
        limit = (
            f"{spec.start_timeout_s:g} s (startupTimeout, else GATEWAY_TORCHSERVE_START_TIMEOUT_S)"
        )
        if not loading:
            words = self.last_words()
            return f"worker for {spec.model_name} did not come up within {limit}:\n{words}"
        model_dir = str(spec.model_dir.resolve())
        frames = [
            match
            for match in _FRAME.finditer(stack)
            if os.path.realpath(match["file"]).startswith(model_dir + os.sep)
        ]
        self.last_words()
        if not frames:
            where = "while loading its handler (no frame of the archive's code on the stack)"
        else:
            innermost = frames[0]
            outermost = frames[-1]
            where = (
                f"in `{outermost['function']}` "
                f"({Path(innermost['file']).name} line {innermost['line']}, "
                f"in `{innermost['function']}`)"
            )
            # The stack up to the archive's outermost frame: what the handler was doing.
            stack = stack[: outermost.end()]
        return (
            f"handler of {spec.model_name} did not finish loading within {limit}: it hung "
            f"{where}; worker killed. Its stack:\n{stack.strip()}"
        )

    async def _connect(
        self, socket_path: Path
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Connect once the worker listens (it creates the socket file when it binds)."""
        assert self.process is not None
        delay = 0.01
        while True:
            if self.process.returncode is not None:
                raise OSError(f"worker exited with {self.process.returncode}")
            with contextlib.suppress(ConnectionRefusedError, FileNotFoundError):
                return await asyncio.open_unix_connection(str(socket_path))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.2)

    async def predict(self, batch: Sequence[HandlerRequest]) -> WorkerReply:
        """Send one batch and wait for its reply (at most `responseTimeout`)."""
        if self._writer is None or self._reader is None or not self.alive:
            raise WorkerDied(f"worker {self.index} of {self.spec.model_name} is not running")
        try:
            async with asyncio.timeout(self.spec.response_timeout_s):
                self._writer.write(encode_predict(batch))
                await self._writer.drain()
                return await read_reply(self._reader)
        except TimeoutError:
            await self.stop(clean=False)
            raise WorkerTimedOut(
                f"{self.spec.model_name}: no answer within responseTimeout "
                f"({self.spec.response_timeout_s:g} s); worker restarted"
            ) from None
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            await self.stop(clean=False)
            raise WorkerDied(
                f"worker {self.index} of {self.spec.model_name} died while computing; restarting"
            ) from None

    def last_words(self) -> str:
        tail = self.log_tail()
        self.cleanup()
        return tail

    async def stop(self, grace_s: float = 5.0, *, clean: bool = True) -> None:
        """Close the socket (the worker exits when its front end goes); kill if it lingers."""
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()
            self._writer = self._reader = None
        process = self.process
        if process is not None and process.returncode is None:
            try:
                async with asyncio.timeout(grace_s):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
        if clean:
            self.cleanup()

    def cleanup(self) -> None:
        """Remove the scratch directory (its socket and log) once nobody needs the log."""
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None


class HandlerPool:
    """`workers` HandlerProcesses for one model version; each batch goes to a free one.

    A watcher per worker notices its exit (a crash, or a stop after a timeout) and starts a
    replacement while the pool is below its target. A worker whose resident memory is past
    `spec.max_rss_bytes` after a batch is recycled: its batch is answered, it takes no other,
    it is stopped and replaced while the next batches wait in the batcher's queue (the pool
    stays ready meanwhile); `recycled(model, reason)` counts it.
    """

    def __init__(
        self,
        spec: HandlerSpec,
        workers: int,
        gpu_ids: Sequence[int] = (),
        recycled: Callable[[str, str], None] = lambda model, reason: None,
    ) -> None:
        self.spec = spec
        self._recycled = recycled
        self._recycling = 0
        self.target = workers
        self._gpu_ids = list(gpu_ids)
        self._next_index = 0
        self._workers: list[HandlerProcess] = []
        self._idle: asyncio.Queue[HandlerProcess] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def live_workers(self) -> list[HandlerProcess]:
        return [worker for worker in self._workers if worker.alive]

    @property
    def ready(self) -> bool:
        return (bool(self.live_workers) or self._recycling > 0) and not self._closed

    def pids(self) -> list[int]:
        return [pid for worker in self.live_workers if (pid := worker.pid) is not None]

    async def start(self) -> None:
        """Start `workers` workers; the first failure stops the others and raises."""
        try:
            await self._grow(self.target)
        except BaseException:
            await self.close()
            raise

    async def scale(self, workers: int) -> None:
        """Grow or shrink to `workers`; a busy worker leaves once its batch is answered."""
        self.target = workers
        if len(self._workers) < workers:
            await self._grow(workers - len(self._workers))
        while len(self._workers) > workers:
            worker = await self._idle.get()
            if worker in self._workers:
                self._workers.remove(worker)
                await worker.stop()

    async def run(self, batch: Sequence[HandlerRequest]) -> WorkerReply:
        """Compute one batch on the next free worker (waiting for one if all are busy)."""
        while True:
            if self.target == 0:
                raise ModelNotReady(f"{self.spec.model_name} has no workers (scaled to 0)")
            worker = await self._idle.get()
            if worker.alive and worker in self._workers:
                break
        try:
            reply = await worker.predict(batch)
        except BaseException:
            if worker.alive:  # cancelled mid-batch: its answer would desynchronise the socket
                await worker.stop()
            raise
        limit = self.spec.max_rss_bytes
        rss = worker.rss_bytes() if limit is not None else None
        if limit is not None and rss is not None and rss > limit:
            self._recycling += 1
            self._workers.remove(worker)
            self._spawn(self._recycle(worker, rss, limit), f"{self.spec.model_name}-recycle")
        else:
            self._idle.put_nowait(worker)
        return reply

    async def close(self) -> None:
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(worker.stop() for worker in self._workers))
        self._workers.clear()

    # -- supervision -----------------------------------------------------------------------

    def _new_worker(self) -> HandlerProcess:
        index = self._next_index
        self._next_index += 1
        gpu = self._gpu_ids[index % len(self._gpu_ids)] if self._gpu_ids else None
        return HandlerProcess(self.spec, index, gpu)

    async def _grow(self, count: int) -> None:
        fresh = [self._new_worker() for _ in range(count)]
        results = await asyncio.gather(*(w.start() for w in fresh), return_exceptions=True)
        for worker, result in zip(fresh, results, strict=True):
            if not isinstance(result, BaseException):
                self._workers.append(worker)
                self._idle.put_nowait(worker)
                self._spawn(self._watch(worker), f"{self.spec.model_name}-watch-{worker.index}")
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]

    def _spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _recycle(self, worker: HandlerProcess, rss: int, limit: int) -> None:
        """Stop a worker past its memory limit (first: that frees it), then replace it."""
        try:
            log.warning(
                "%s worker %d (pid %s) uses %d MB after its batch, over the limit of %d MB "
                "(GATEWAY_TORCHSERVE_WORKER_MAX_RSS_MB): recycling it",
                self.spec.model_name,
                worker.index,
                worker.pid,
                rss // MB,
                limit // MB,
            )
            self._recycled(self.spec.model_name, "memory")
            await worker.stop()
            await self._refill()
        finally:
            self._recycling -= 1

    async def _refill(self) -> None:
        """Start workers until the pool is at its target, backing off while starts fail."""
        failures = 0
        while not self._closed and len(self._workers) < self.target:
            try:
                await self._grow(1)
            except Exception:
                log.exception("%s: starting a replacement worker failed", self.spec.model_name)
                failures += 1
                await asyncio.sleep(RESTARTS.delay(failures))

    async def _watch(self, worker: HandlerProcess) -> None:
        assert worker.process is not None
        code = await worker.process.wait()
        if self._closed or worker not in self._workers:
            return  # stopped on purpose (scaled down, unloaded)
        self._workers.remove(worker)
        await worker.stop(clean=False)
        log.warning(
            "%s worker %d (pid %s) exited with %s; starting a new one. Its last lines:\n%s",
            self.spec.model_name,
            worker.index,
            worker.pid,
            code,
            worker.last_words(),
        )
        await self._refill()


def batch_failure(reply: WorkerReply) -> HandlerResponse | None:
    """The whole batch failed (the handler raised): TorchServe answers every request with
    `{"code", "type", "message"}` and the worker's code."""
    if reply.code == 200:
        return None
    return HandlerResponse(
        reply.code, "", "application/json", error_body(reply.code, reply.message), {}
    )

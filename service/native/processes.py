"""Worker processes forked from one fork server that imported torch and TorchServe once.

`multiprocessing`'s fork server is started by the first worker's start (in a thread: it takes
the seconds `import torch` takes; the other workers wait for it) and preloads
`worker_main.PRELOAD`; every worker is a fork of it, so
starting one costs its handler's load, and its pages of torch are shared. Workers are daemonic:
they never outlive the gateway (and they exit on their own when its socket closes).
"""

from __future__ import annotations

import asyncio
import functools
import multiprocessing
import multiprocessing.context
import threading
from pathlib import Path

from service.native.worker_main import PRELOAD, run_worker

_lock = threading.Lock()


@functools.cache
def _context() -> multiprocessing.context.ForkServerContext:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(PRELOAD))
    return context


class WorkerProcess:
    """One forked worker: its pid, exit code, an awaitable exit, and kill."""

    def __init__(self, process: multiprocessing.process.BaseProcess) -> None:
        self._process = process
        self._exited: asyncio.Future[None] | None = None

    @classmethod
    async def start(
        cls,
        *,
        name: str,
        socket_name: Path,
        metrics_config: Path,
        model_dir: Path,
        scratch: Path,
        log_file: Path,
        threads: int | None,
    ) -> WorkerProcess:
        process = _context().Process(
            target=run_worker,
            args=(
                str(socket_name),
                str(metrics_config),
                str(model_dir),
                str(scratch),
                str(log_file),
                threads,
            ),
            name=name,
            daemon=True,
        )

        def start() -> None:
            with _lock:
                process.start()

        await asyncio.to_thread(start)
        return cls(process)

    @property
    def pid(self) -> int | None:
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        return self._process.exitcode

    async def wait(self) -> int:
        """Wait for the exit without blocking the loop. Every waiter shares one watch of the
        process's sentinel (the loop allows one reader per file descriptor)."""
        await asyncio.shield(self._exit_watch())
        self._process.join()
        code = self._process.exitcode
        return code if code is not None else -1

    def _exit_watch(self) -> asyncio.Future[None]:
        if self._exited is None:
            loop = asyncio.get_running_loop()
            exited: asyncio.Future[None] = loop.create_future()
            self._exited = exited
            sentinel = self._process.sentinel
            if self._process.exitcode is not None:
                exited.set_result(None)
            else:

                def gone() -> None:
                    loop.remove_reader(sentinel)
                    if not exited.done():
                        exited.set_result(None)

                loop.add_reader(sentinel, gone)
        return self._exited

    def kill(self) -> None:
        if self._process.exitcode is None:
            self._process.kill()

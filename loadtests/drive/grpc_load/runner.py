"""Keep `concurrency` gRPC calls in flight for a while, with grpc_gen or Python worker processes,
started together once every one of them has connected."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from loadtests.drive.grpc_load.cpp import cpp_binary, pick_engine
from loadtests.drive.grpc_load.histogram import GrpcResult, WorkerResult, merge, parse_worker, split
from loadtests.drive.grpc_load.request import GrpcLoadError, GrpcRequest
from loadtests.drive.grpc_load.worker import READY

REPO = Path(__file__).resolve().parents[3]
WORKER_MODULE = "loadtests.grpc_load"
"""Run with `--worker` in each Python worker process."""


def default_processes(concurrency: int) -> int:
    return max(1, min(concurrency, os.cpu_count() or 1))


def run(
    request: GrpcRequest,
    concurrency: int,
    seconds: float,
    *,
    processes: int | None = None,
    channels_per_process: int = 1,
    timeout_s: float = 10.0,
    startup_timeout_s: float = 30.0,
    engine: str = "auto",
) -> GrpcResult:
    """Keep `concurrency` calls in flight for `seconds`.

    engine "cpp": one grpc_gen process with `processes` threads (each its own channel and
    completion queue); "python": `processes` grpc.aio worker processes; "auto": cpp when it
    can be built here, else python. `processes` defaults to one per core (at most
    `concurrency`).
    """
    chosen = pick_engine("python" if engine == "auto" and request.metadata else engine)
    if chosen == "cpp" and request.metadata:
        raise GrpcLoadError("grpc_gen sends no metadata: use engine 'python' for that")
    parts = processes or default_processes(concurrency)
    with tempfile.NamedTemporaryFile(prefix="grpc-body-", suffix=".bin") as body:
        body.write(request.body)
        body.flush()
        if chosen == "cpp":
            commands = [
                [
                    str(cpp_binary()),
                    request.target,
                    request.method,
                    body.name,
                    str(concurrency),
                    str(seconds),
                    str(timeout_s),
                    str(max(1, min(parts, concurrency))),
                ]
            ]
        else:
            commands = [
                [
                    sys.executable,
                    "-m",
                    WORKER_MODULE,
                    "--worker",
                    "--target",
                    request.target,
                    "--method",
                    request.method,
                    "--body",
                    body.name,
                    "--concurrency",
                    str(share),
                    "--duration",
                    str(seconds),
                    "--timeout",
                    str(timeout_s),
                    "--channels",
                    str(channels_per_process),
                    *(f"--metadata={k}={v}" for k, v in request.metadata),
                ]
                for share in split(concurrency, parts)
            ]
        outputs = _drive(commands, request.target, seconds + timeout_s + 30, startup_timeout_s)
    return replace(merge(outputs), generator=chosen)


def _drive(
    commands: Sequence[Sequence[str]], target: str, run_timeout_s: float, startup_timeout_s: float
) -> list[WorkerResult]:
    """Start every worker, wait until each has connected, start them together, collect."""
    workers: list[subprocess.Popen[str]] = []
    try:
        for command in commands:
            workers.append(
                subprocess.Popen(
                    list(command),
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    cwd=REPO,
                )
            )
        deadline = time.monotonic() + startup_timeout_s
        for worker in workers:  # every worker connected before any starts the clock
            line = _readline(worker, deadline)
            if line.strip() != READY:
                if worker.poll() is None:
                    worker.kill()
                worker.wait(timeout=5)
                assert worker.stderr is not None
                raise GrpcLoadError(
                    f"gRPC load worker did not start ({target}): "
                    f"{(line + worker.stderr.read()).strip()[-800:]}"
                )
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        outputs = []
        for worker in workers:
            out, err = worker.communicate(timeout=run_timeout_s)
            if worker.returncode != 0:
                raise GrpcLoadError(f"gRPC load worker exited {worker.returncode}: {err[-800:]}")
            outputs.append(parse_worker(out))
        return outputs
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
            for stream in (worker.stdin, worker.stdout, worker.stderr):
                if stream is not None and not stream.closed:
                    stream.close()


def _readline(worker: subprocess.Popen[str], deadline: float) -> str:
    """One stdout line from a worker, or '' once the deadline passes or it exits."""
    import selectors

    assert worker.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(worker.stdout, selectors.EVENT_READ)
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not selector.select(remaining):
            return ""
    return worker.stdout.readline()

"""Server processes for benchmarks: start in their own group, wait for readiness, measure, stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def spawn(
    command: Sequence[str], log: Path, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start a server in a new process group, its output appended to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    environment = {**os.environ, **(env or {})}
    with log.open("ab") as sink:
        return subprocess.Popen(
            list(command),
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=environment,
            cwd=cwd,
            start_new_session=True,
        )


def http_status(url: str, timeout_s: float = 2.0, headers: Mapping[str, str] | None = None) -> int:
    request = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as error:
        return error.code
    except (urllib.error.URLError, OSError):
        return 0


def wait_ready(
    urls: Iterable[str],
    process: subprocess.Popen[bytes] | None,
    timeout_s: float,
    headers: Mapping[str, str] | None = None,
) -> float:
    """Poll until every URL answers 200; return the seconds since the call."""
    started = time.monotonic()
    pending = list(urls)
    while pending:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with code {process.returncode} before it was ready")
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"not ready after {timeout_s:.0f} s: {pending[0]}")
        if http_status(pending[0], headers=headers) == 200:
            pending.pop(0)
        else:
            time.sleep(0.05)
    return time.monotonic() - started


def stop(process: subprocess.Popen[bytes], timeout_s: float = 20.0) -> None:
    """SIGTERM the process group, then SIGKILL it if it lingers."""
    if process.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants, in MiB."""
    import psutil

    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total / (1024 * 1024)


def tree_cpu_s(pids: Iterable[int]) -> float:
    """CPU seconds (user + system) used so far by the processes `pids` and all their
    descendants: TorchServe's JVM and its Python workers, our native handler workers, the
    supervisor's gateway workers. Each live process counts its own time and that of the
    children it has already reaped (`children_user`/`children_system`), so a worker that
    exited and was waited for between two readings is still counted, once."""
    import psutil

    seen: dict[int, psutil.Process] = {}
    for pid in pids:
        try:
            root = psutil.Process(pid)
            for process in (root, *root.children(recursive=True)):
                seen.setdefault(process.pid, process)
        except psutil.NoSuchProcess:
            continue
    total = 0.0
    for process in seen.values():
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total

"""Starts a real TorchServe for tests, benchmarks and `BACKEND=torchserve make run`.

`start_torchserve` runs `torchserve --foreground` in its own process group, from a working
directory of its own (TorchServe writes `logs/` and `key_file.json` there) with a private
`TMPDIR`/`TEMP` (its pid file, worker sockets and extracted archives), so parallel servers never
collide; on free ports unless told otherwise, with token authorization ON, the model API off and
Prometheus metrics. It waits until every model has a READY worker and, on exit, stops the whole
process group: `torchserve --stop` returns before the JVM exits, so it waits for the processes
to be gone and the ports to be free.

TorchServe lets the `model-config.yaml` inside an archive win over `config.properties`, so the
batch settings asked for here are applied to copies of the archives in the working directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import astuple, dataclass, field, replace
from pathlib import Path
from typing import Any

from deploy.torchserve.archive import CONFIG_FILE, SOURCE_ROOT

DEFAULT_CONFIG = SOURCE_ROOT / "deploy" / "torchserve" / "config.properties"
DEFAULT_LOG_CONFIG = SOURCE_ROOT / "deploy" / "torchserve" / "log4j2.xml"
LOOPBACK = "127.0.0.1"


class TorchServeError(RuntimeError):
    """TorchServe did not start or stop as expected; the message holds its log's tail."""


@dataclass(frozen=True)
class Ports:
    """TorchServe's listening ports; 0 for a gRPC port picks a free one at launch."""

    inference: int
    management: int
    metrics: int
    grpc_inference: int = 0
    grpc_management: int = 0


@dataclass
class TorchServe:
    """A running TorchServe and how to reach it."""

    process: subprocess.Popen[bytes]
    work_dir: Path
    ports: Ports
    models: list[str]
    log_file: Path
    scratch: Path
    stopped: bool = field(default=False)

    @property
    def inference_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports.inference}"

    @property
    def management_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports.management}"

    @property
    def metrics_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports.metrics}"

    @property
    def key_file(self) -> Path:
        """TorchServe's `key_file.json` (rewritten with new keys on every start)."""
        return self.work_dir / "key_file.json"

    @property
    def token(self) -> str:
        """The current inference key."""
        return read_key(self.key_file, "inference")

    @property
    def management_token(self) -> str:
        return read_key(self.key_file, "management")

    def log_tail(self, characters: int = 4000) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-characters:]
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL the whole process group at once (a crash, as far as clients can tell)."""
        _signal_group(self.process, signal.SIGKILL)
        self.process.wait()
        _wait_group_gone(self.process.pid, timeout_s=10)
        _wait_ports_free(self.ports, timeout_s=10)
        self._finish()

    def stop(self, grace_s: float = 15.0) -> None:
        """SIGTERM the process group; SIGKILL what is left after `grace_s`; wait for the ports."""
        if self.stopped:
            return
        _signal_group(self.process, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=grace_s)
        if not _wait_group_gone(self.process.pid, timeout_s=grace_s):
            _signal_group(self.process, signal.SIGKILL)
            _wait_group_gone(self.process.pid, timeout_s=10)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        _wait_ports_free(self.ports, timeout_s=10)
        self._finish()

    def _finish(self) -> None:
        self.stopped = True
        shutil.rmtree(self.scratch, ignore_errors=True)


@contextlib.contextmanager
def start_torchserve(
    archive_dir: Path,
    work_dir: Path,
    models: list[str],
    *,
    batch_size: int | None = 1,
    max_batch_delay_ms: int = 5,
    workers: int = 1,
    ports: Ports | None = None,
    config: Path | None = DEFAULT_CONFIG,
    log_config: Path | None = DEFAULT_LOG_CONFIG,
    env: Mapping[str, str] | None = None,
    startup_timeout_s: float = 180.0,
) -> Iterator[TorchServe]:
    """Run TorchServe serving `<archive_dir>/<model>.mar` for each model; stop it on exit.

    `batch_size`/`max_batch_delay_ms`/`workers` replace the archives' model-config.yaml values
    (`batch_size=None` keeps the archives' batch settings and only sets the workers).
    """
    server = launch(
        archive_dir,
        work_dir,
        models,
        batch_size=batch_size,
        max_batch_delay_ms=max_batch_delay_ms,
        workers=workers,
        ports=ports,
        config=config,
        log_config=log_config,
        env=env,
        startup_timeout_s=startup_timeout_s,
    )
    try:
        yield server
    finally:
        server.stop()


def launch(
    archive_dir: Path,
    work_dir: Path,
    models: list[str],
    *,
    batch_size: int | None = 1,
    max_batch_delay_ms: int = 5,
    workers: int = 1,
    ports: Ports | None = None,
    config: Path | None = DEFAULT_CONFIG,
    log_config: Path | None = DEFAULT_LOG_CONFIG,
    env: Mapping[str, str] | None = None,
    startup_timeout_s: float = 180.0,
) -> TorchServe:
    """Start TorchServe and wait until it serves; the caller must `stop()` it."""
    if not models:
        raise TorchServeError("no models to serve")
    if (batch_size is not None and batch_size < 1) or workers < 1 or max_batch_delay_ms < 0:
        raise TorchServeError("batch_size and workers must be >= 1, max_batch_delay_ms >= 0")
    work_dir = work_dir.resolve()
    store = work_dir / "model-store"
    shutil.rmtree(store, ignore_errors=True)
    store.mkdir(parents=True)
    batching = {"minWorkers": workers, "maxWorkers": workers}
    if batch_size is not None:
        batching |= {"batchSize": batch_size, "maxBatchDelay": max_batch_delay_ms}
    for name in models:
        source = archive_dir / f"{name}.mar"
        if not source.is_file():
            raise TorchServeError(f"archive not found: {source}")
        copy_with_batching(source, store / source.name, batching)
    ports = ports or Ports(free_port(), free_port(), free_port())
    ports = replace(
        ports,
        grpc_inference=ports.grpc_inference or free_port(),
        grpc_management=ports.grpc_management or free_port(),
    )
    scratch = _scratch_dir()
    properties = {
        **(read_properties(config) if config is not None else {}),
        "inference_address": f"http://{LOOPBACK}:{ports.inference}",
        "management_address": f"http://{LOOPBACK}:{ports.management}",
        "metrics_address": f"http://{LOOPBACK}:{ports.metrics}",
        "grpc_inference_address": LOOPBACK,
        "grpc_inference_port": str(ports.grpc_inference),
        "grpc_management_address": LOOPBACK,
        "grpc_management_port": str(ports.grpc_management),
        "metrics_mode": "prometheus",
        "enable_model_api": "false",
        "disable_token_authorization": "false",
        "initial_worker_port": str(free_port_range(workers * len(models) + 1)),
        "model_store": str(store),
        "load_models": ",".join(f"{name}.mar" for name in models),
        "default_workers_per_model": str(workers),
    }
    properties.pop("models", None)
    config_file = work_dir / "config.properties"
    write_properties(config_file, properties)
    key_file = work_dir / "key_file.json"
    key_file.unlink(missing_ok=True)
    environment = {
        **{key: value for key, value in os.environ.items() if key != "TS_CONFIG_FILE"},
        "OMP_NUM_THREADS": "1",
        **(env or {}),
        "TMPDIR": str(scratch),
        "TEMP": str(scratch),
        "LOG_LOCATION": str(work_dir / "logs"),
        "METRICS_LOCATION": str(work_dir / "logs"),
    }
    command = [
        sys.executable,
        "-m",
        "ts.model_server",
        "--start",
        "--foreground",
        "--ncs",
        "--ts-config",
        str(config_file),
        "--model-store",
        str(store),
    ]
    if log_config is not None and log_config.is_file():
        command += ["--log-config", str(log_config)]
    log_file = work_dir / "torchserve.out"
    with log_file.open("wb") as sink:
        process = subprocess.Popen(
            command,
            cwd=work_dir,
            env=environment,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = TorchServe(process, work_dir, ports, list(models), log_file, scratch)
    try:
        wait_until_serving(server, timeout_s=startup_timeout_s)
    except BaseException:
        server.stop(grace_s=5)
        raise
    return server


def wait_until_serving(server: TorchServe, timeout_s: float) -> None:
    """Until `/ping` answers and every model has a READY worker."""
    deadline = time.monotonic() + timeout_s
    pending = list(server.models)
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise TorchServeError(
                f"TorchServe exited with {server.process.returncode}:\n{server.log_tail()}"
            )
        if server.key_file.is_file():
            try:
                pending = [name for name in pending if not _model_ready(server, name)]
                if not pending and _get(server.inference_url + "/ping", server.token)[0] == 200:
                    return
            except (OSError, ValueError, KeyError):
                pass
        time.sleep(0.2)
    raise TorchServeError(
        f"models {pending} not READY after {timeout_s:.0f} s:\n{server.log_tail()}"
    )


def _model_ready(server: TorchServe, name: str) -> bool:
    status, body = _get(f"{server.management_url}/models/{name}", server.management_token)
    if status != 200:
        return False
    described = json.loads(body)
    workers = described[0].get("workers", []) if described else []
    return any(worker.get("status") == "READY" for worker in workers)


def _get(url: str, token: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def read_key(key_file: Path, kind: str = "inference") -> str:
    """A key from TorchServe's key_file.json (`inference`, `management` or `API`)."""
    keys: dict[str, Any] = json.loads(key_file.read_text())
    return str(keys[kind]["key"])


def copy_with_batching(source: Path, target: Path, settings: Mapping[str, int]) -> None:
    """Copy an archive, replacing the batch/worker keys of its model-config.yaml."""
    with zipfile.ZipFile(source) as archive_in, zipfile.ZipFile(target, "w") as archive_out:
        for member in archive_in.infolist():
            data = archive_in.read(member)
            if member.filename == CONFIG_FILE:
                data = with_settings(data.decode("utf-8"), settings).encode("utf-8")
            archive_out.writestr(member, data)


def with_settings(model_config: str, settings: Mapping[str, int]) -> str:
    """Replace (or add) top-level scalar keys of a model-config.yaml text."""
    kept = [
        line
        for line in model_config.splitlines()
        if not any(line.startswith(f"{key}:") for key in settings)
    ]
    return "\n".join([*(f"{key}: {value}" for key, value in settings.items()), *kept]) + "\n"


def read_properties(path: Path) -> dict[str, str]:
    """`key=value` lines of a Java properties file (comments and blanks skipped)."""
    properties: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "!")) or "=" not in line:
            continue
        key, value = line.split("=", 1)
        properties[key.strip()] = value.strip()
    return properties


def write_properties(path: Path, properties: Mapping[str, str]) -> None:
    path.write_text("".join(f"{key}={value}\n" for key, value in properties.items()))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def free_port_range(count: int, attempts: int = 200) -> int:
    """The first of `count` consecutive free ports (for TorchServe's worker ports)."""
    for _ in range(attempts):
        first = random.randrange(20_000, 60_000 - count)
        if all(_port_free(port) for port in range(first, first + count)):
            return first
    raise TorchServeError(f"no {count} consecutive free ports found")


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


def _scratch_dir() -> Path:
    """TMPDIR/TEMP for TorchServe: its pid file, worker sockets and extracted archives.

    Outside the working directory (extracted archives hold Python files that linters would find
    in a working directory inside a repository) and short (unix socket paths are limited).
    """
    return Path(tempfile.mkdtemp(prefix="torchserve-tmp-"))


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)


def _wait_group_gone(pgid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _group_alive(pgid):
            return True
        time.sleep(0.1)
    return False


def _group_alive(pgid: int) -> bool:
    """Whether any process (zombies aside) is left in the process group."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        state, group = fields[0], int(fields[2])
        if group == pgid and state != "Z":
            return True
    return False


def _wait_ports_free(ports: Ports, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    for port in astuple(ports):
        while not _nothing_listening(port) and time.monotonic() < deadline:
            time.sleep(0.1)


def _nothing_listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((LOOPBACK, port)) != 0


def wait_for_signal(process: subprocess.Popen[bytes]) -> None:
    """Block until SIGINT/SIGTERM arrives or `process` exits."""
    import threading

    received = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda _signum, _frame: received.set())
    while not received.wait(0.5):
        if process.poll() is not None:
            raise TorchServeError(f"TorchServe exited with {process.returncode}")


def _models_arg(value: str) -> list[str]:
    return [name.strip() for name in value.split(",") if name.strip()]


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m deploy.torchserve.launcher`: serve archives until interrupted (prints the URLs)."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m deploy.torchserve.launcher",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--archives", type=Path, default=Path("model_store"))
    parser.add_argument("--work-dir", type=Path, default=Path(".torchserve"))
    parser.add_argument("--models", type=_models_arg, required=True)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--max-batch-delay-ms", type=int, default=5)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    with start_torchserve(
        args.archives,
        args.work_dir,
        args.models,
        batch_size=args.batch_size,
        max_batch_delay_ms=args.max_batch_delay_ms,
        workers=args.workers,
    ) as server:
        print(
            f"inference {server.inference_url}  management {server.management_url}  "
            f"metrics {server.metrics_url}  key file {server.key_file}",
            flush=True,
        )
        wait_for_signal(server.process)


if __name__ == "__main__":
    main()

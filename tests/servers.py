"""Real gateway processes on free loopback ports, for integration tests and benchmarks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class GatewayProcess:
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    grpc_port: int = 0

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def wait_until_ready(
    url: str,
    process: subprocess.Popen[bytes] | None,
    timeout_s: float,
    path: str = "/v2/health/ready",
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            if httpx.get(url + path, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} not ready after {timeout_s} s")


@contextmanager
def gateway(
    store: Path,
    log_dir: Path,
    args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    timeout_s: float = 60,
) -> Iterator[GatewayProcess]:
    """Start `python -m service` on free HTTP and gRPC ports; stop it (SIGTERM, then SIGKILL)
    afterwards."""
    port, grpc_port = free_port(), free_port()
    log = log_dir / f"gateway-{port}.log"
    command = [
        sys.executable,
        "-m",
        "service",
        "--model-store",
        str(store),
        "--port",
        str(port),
        *args,
    ]
    environment = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "GATEWAY_GRPC_PORT": str(grpc_port),
        **(env or {}),
    }
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=environment)
    server = GatewayProcess(process, port, log, grpc_port)
    try:
        wait_until_ready(server.url, process, timeout_s)
        yield server
    except BaseException:
        print(server.output())
        raise
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def sample_total(exposition: str, sample: str, **labels: str) -> float:
    """Sum of the Prometheus samples named `sample` whose labels include `labels`."""
    from prometheus_client.parser import text_string_to_metric_families

    return sum(
        found.value
        for family in text_string_to_metric_families(exposition)
        for found in family.samples
        if found.name == sample and all(found.labels.get(k) == v for k, v in labels.items())
    )

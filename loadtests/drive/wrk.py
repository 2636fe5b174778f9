"""Drive one benchmark point with wrk and `wrk_post.lua`: a fixed body, a fixed concurrency."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve().parents[1] / "wrk_post.lua"
MARK = "WRK_RESULT "


class WrkError(RuntimeError):
    """wrk is missing, failed, or printed no result line."""


@dataclass(frozen=True)
class Request:
    """One fixed HTTP request: the same bytes every time."""

    url: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    errors: int
    latency_ms: dict[str, float]
    """mean, p50, p90, p95, p99, p99.9, max."""

    @property
    def throughput(self) -> float:
        return (self.requests - self.errors) / self.seconds if self.seconds > 0 else 0.0


def wrk_path() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise WrkError("wrk not found: install Debian's `wrk` (make system-deps)")
    return found


def parse(output: str) -> WrkResult:
    for line in output.splitlines():
        if line.startswith(MARK):
            data: dict[str, Any] = json.loads(line[len(MARK) :])
            latency = {
                key: value / 1000.0
                for key, value in data["latency_us"].items()
                if key not in ("stdev", "min")
            }
            errors = data["errors"]
            return WrkResult(
                requests=int(data["requests"]),
                seconds=data["duration_us"] / 1e6,
                errors=int(
                    errors["status"]
                    + errors["timeout"]
                    + errors["connect"]
                    + errors["read"]
                    + errors["write"]
                ),
                latency_ms=latency,
            )
    raise WrkError(f"wrk printed no {MARK.strip()} line:\n{output[-2000:]}")


def run(
    request: Request,
    connections: int,
    seconds: float,
    *,
    threads: int | None = None,
    timeout_s: float = 10.0,
) -> WrkResult:
    """Run wrk for `seconds` with `connections` keep-alive connections, one request each."""
    threads = threads or max(1, min(connections, os.cpu_count() or 1))
    with tempfile.NamedTemporaryFile(prefix="bench-body-", suffix=".bin") as body:
        body.write(request.body)
        body.flush()
        env = {
            **os.environ,
            "BENCH_BODY": body.name,
            "BENCH_HEADERS": "\n".join(f"{k}: {v}" for k, v in request.headers.items()),
        }
        command = [
            wrk_path(),
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            f"--timeout={max(1, round(timeout_s))}s",
            "-s",
            str(SCRIPT),
            request.url,
        ]
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            env=env,
            check=False,
            timeout=seconds + timeout_s + 30,
        )
    if done.returncode != 0:
        raise WrkError(f"wrk exited with {done.returncode}: {done.stderr.strip()[-500:]}")
    return parse(done.stdout)
